"""The protocol debug console (`run.py console`): type frames, see replies and pushed events.

A line is `OPERATION {json arguments}`, `OPERATION`, a raw `{...}` frame sent as typed, or a
:command (`:help`, `:quit`, `:watch` the back office's live feed as one line per event, `:unwatch`,
`:json`/`:tables` to show lists as JSON or as tables). `--script FILE` runs such lines without a
prompt and stops at the first error.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.json import JSON as JSONView
from rich.table import Table
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from gateway.config import Config, ConfigError
from protocol.client import Client
from protocol.codec import JSON, MSGPACK, Codec
from protocol.frames import Request
from protocol.messages import BY_TYPE, REQUESTS, operation

COMMANDS = (":help", ":quit", ":exit", ":watch", ":unwatch", ":json", ":tables")
QUIT = (":quit", ":exit")
TABLE_COLUMNS = 10  # a list's first columns shown in a table; `:json` shows everything
CELL_CHARS = 40
PROMPT = "dispatch> "
REPLY_TIMEOUT_S = 10.0
TRAILING_EVENTS_S = 0.2  # after a script's last reply, show events still in flight
JSON_KEY = re.compile(r'(^|[{,])\s*("?[\w.-]*)$')  # the JSON key being typed, after `{` or `,`


def summary(request: type[Request] | None) -> str:
    """The first sentence of the request's docstring."""
    paragraph = " ".join((request.__doc__ or "").strip().split("\n\n")[0].split()) if request else ""
    return re.split(r"(?<=\.)(?<!e\.g\.)\s+(?=[A-Z`])", paragraph)[0]


class FrameCompleter(Completer):
    """Completes operation names, then the JSON keys of that operation's request Struct."""

    def __init__(self, requests: Iterable[type[Request]] = REQUESTS) -> None:
        self.requests = {operation(r): r for r in requests}

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor.lstrip()
        head = re.match(r"(\S+)\s+(.*)$", text, re.DOTALL)
        if head is None:  # still typing the operation (or a :command)
            for name in COMMANDS if text.startswith(":") else self.requests:
                if name.startswith(text):
                    yield Completion(name, -len(text), display_meta=summary(self.requests.get(name)))
            return
        request, rest = self.requests.get(head[1]), head[2]
        key = JSON_KEY.search(rest)
        if request is None or key is None or rest[:key.start(2)].count('"') % 2:  # inside a string value
            return
        opener, typed = ("" if key[1] else "{"), key[2]
        if opener and typed:  # a key needs the `{` first
            return
        for field in msgspec.structs.fields(request):
            quoted = f'"{field.encode_name}"'
            if field.name == "id" or quoted in rest or not field.encode_name.startswith(typed.lstrip('"')):
                continue
            yield Completion(f"{opener}{quoted}: ", -len(typed), display=quoted,
                             display_meta="required" if field.required else "optional")


@dataclass(frozen=True)
class Frame:
    """A parsed input line: an operation with its arguments, or a raw frame (`raw` as typed)."""

    operation: str
    arguments: dict[str, Any]
    raw: str | None = None


def parse(line: str) -> Frame | str | None:
    """A Frame, a :command, or None for blank and `#` lines; ValueError says what is wrong."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if line.startswith(":"):
        if line not in COMMANDS:
            raise ValueError(f"unknown command {line}, try :help")
        return line
    name, rest = ("", line) if line.startswith("{") else [*line.split(None, 1), ""][:2]
    try:
        arguments = json.loads(rest) if rest else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ValueError("the arguments must be a JSON object")
    if name:
        return Frame(name, arguments)
    kind = arguments.get("type")
    return Frame(kind if isinstance(kind, str) else "", arguments, line)


class Shell:
    """One connected console: sends frames, prints replies, events and stray replies."""

    def __init__(self, client: Client, out: Console, echo: bool) -> None:
        self.client = client
        self.out = out
        self.echo = echo  # print each frame before sending it (scripts)
        self.tables = True  # lists of objects in replies as tables (`:json` turns it off)
        self.watching = False  # `admin.activity` events as one line each
        self._ids = itertools.count(1)

    async def command(self, name: str) -> bool:
        """Run a :command; False when it fails."""
        if name == ":help":
            self.help()
        elif name in (":json", ":tables"):
            self.tables = name == ":tables"
        elif name in (":watch", ":unwatch"):
            self.watching = name == ":watch"
            return await self.send(Frame("admin." + name[1:], {}))
        return True

    async def send(self, frame: Frame, echo: bool = True) -> bool:
        """Send one frame and print its reply; True unless the reply is an error or missing."""
        codec = self.client.codec
        arguments = frame.arguments if frame.raw else {"type": frame.operation, "id": f"k{next(self._ids)}",
                                                       **frame.arguments}
        if self.echo and echo:
            self.out.print("-> " + json.dumps(arguments, ensure_ascii=False), style="dim", soft_wrap=True)
        try:
            if frame.raw is None:
                reply, rtt = await self.client.call(frame.operation, arguments, REPLY_TIMEOUT_S)
            else:
                data = frame.raw.encode() if codec.text else codec.encode_any(frame.arguments)  # same object
                request_id = frame.arguments.get("id")
                request = BY_TYPE.get(frame.operation)
                if request_id is None and request is not None and request.silent_without_id:
                    await self.client.ws.send(data, text=codec.text)  # a stream update: no reply comes
                    return True
                key = request_id if isinstance(request_id, str) else None  # the server echoes only strings
                reply, rtt = await self.client.call_raw(data, key, REPLY_TIMEOUT_S)
        except TimeoutError:
            self.out.print(f"no reply within {REPLY_TIMEOUT_S:g} s", style="bold red")
            return False
        failed = reply.get("type") == "error"
        header = f"error {reply.get('code')}" if failed else str(reply.get("type"))
        self.show(f"{header}  {rtt * 1000:.1f} ms", reply, "red" if failed else "green")
        return not failed

    async def watch(self) -> None:
        """Print pushed events and replies nobody waited for as they arrive; note a hang-up."""

        async def drain(queue: asyncio.Queue[Any], label: str) -> None:
            while True:
                self.show_pushed(label, await queue.get())

        async def hang_up(ws: ClientConnection) -> None:
            await ws.wait_closed()
            self.out.print(f"connection closed by the server: {ws.close_code} {ws.close_reason}", style="bold red")

        client = self.client
        await asyncio.gather(drain(client.events, "event"), drain(client.unmatched, "unmatched"), hang_up(client.ws))

    def flush(self) -> None:
        """Print what arrived but was not printed yet (the watcher has stopped)."""
        for queue, label in ((self.client.events, "event"), (self.client.unmatched, "unmatched")):
            while not queue.empty():
                self.show_pushed(label, queue.get_nowait())

    def show_pushed(self, label: str, frame: Any) -> None:
        data = msgspec.to_builtins(frame)  # typed events, msgpack timestamps: all JSON-ready
        if self.watching and data.get("type") == "admin.activity":
            self.out.print(activity_line(data), style="cyan", soft_wrap=True, highlight=False)
            return
        self.show(f"{label} {data.get('type')}", data)

    def show(self, header: str, frame: Any, color: str = "magenta") -> None:
        """A header line in `color`, then the frame: its first list of objects as a table (unless
        `:json`), the rest as JSON (all red for errors)."""
        data = msgspec.to_builtins(frame)
        self.out.print(header, style="bold " + color)
        if color == "red":
            self.out.print(json.dumps(data, indent=2, ensure_ascii=False), style=color)
            return
        rows_key = next((k for k, v in data.items() if isinstance(v, list) and v
                         and all(isinstance(row, dict) for row in v)), None) if self.tables else None
        if rows_key is None:
            self.out.print(JSONView.from_data(data))
            return
        self.out.print(table(rows_key, data[rows_key]))
        rest = {k: v for k, v in data.items() if k not in (rows_key, "type", "id")}
        if rest:
            self.out.print(JSONView.from_data(rest))

    def help(self) -> None:
        self.out.print("OPERATION {json arguments} | OPERATION | {raw frame} | :help | :quit | :watch | :unwatch"
                       " | :json | :tables   (Tab completes, Ctrl-D quits)\n")
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 2))
        for name, request in sorted((operation(r), r) for r in REQUESTS):
            fields = [f.encode_name + ("" if f.required else "?") for f in msgspec.structs.fields(request)]
            table.add_row(name, ", ".join(f for f in fields if f != "id?"), summary(request))
        self.out.print(table)

    async def script(self, lines: list[str], name: str) -> int:
        for number, line in enumerate(lines, 1):
            try:
                item = parse(line)
            except ValueError as exc:
                self.out.print(f"{name}:{number}: {exc}", style="bold red")
                return 1
            if item in QUIT:
                break
            if isinstance(item, str) and not await self.command(item):
                self.out.print(f"{name}:{number}: stopped at the first error", style="red")
                return 1
            elif isinstance(item, Frame) and not await self.send(item):
                self.out.print(f"{name}:{number}: stopped at the first error", style="red")
                return 1
        await asyncio.sleep(TRAILING_EVENTS_S)
        return 0

    async def interactive(self, history: History) -> int:
        session: PromptSession[str] = PromptSession(history=history, completer=FrameCompleter(),
                                                    complete_while_typing=False)
        self.out.print("Type :help for the line forms; Tab completes; Ctrl-D quits.", style="dim")
        with patch_stdout(raw=True):  # events print above the prompt; raw keeps rich's colors
            while True:
                try:
                    line = await session.prompt_async(PROMPT)
                    item = parse(line)
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                except ValueError as exc:
                    self.out.print(str(exc), style="red")
                    continue
                if item in QUIT:
                    return 0
                if isinstance(item, str):
                    await self.command(item)
                elif item is not None:
                    await self.send(item)


def cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A list of objects as a table: the columns the rows have, in their order, the first few."""
    columns = list(dict.fromkeys(k for row in rows for k in row))[:TABLE_COLUMNS]
    grid = Table(title=f"{title} ({len(rows)})", title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if row.get(c) is None else cell(row[c]) for c in columns))
    return grid


def activity_line(data: dict[str, Any]) -> str:
    """One `admin.activity` event as one line: time, kind, brand, order, state change, amount."""
    at = str(data.get("at", ""))[11:19]
    change = data.get("state") or ""
    if data.get("previous_state"):
        change = f"{data['previous_state']} -> {change}"
    parts = [at, data.get("kind", ""), data.get("brand") or "-", data.get("order_id") or "", change]
    if data.get("amount_cents") is not None:
        parts.append(f"{data['amount_cents'] / 100:.2f}")
    parts += [data.get(k) or "" for k in ("user_id", "detail")]
    return "  ".join(str(p) for p in parts if p != "")


async def run(url: str, codec: Codec, token: str | None, locale: str | None, lines: list[str] | None,
              script_name: str, history: History) -> int:
    try:
        client = await Client.connect(url, codec=codec)
    except (OSError, WebSocketException, TimeoutError) as exc:
        print(f"console: cannot connect to {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    shell = Shell(client, Console(markup=False, highlight=False), echo=lines is not None)
    async with client:
        watcher = asyncio.create_task(shell.watch())
        try:
            if token is not None:
                auth = {"token": token, **({"locale": locale} if locale else {})}
                if not await shell.send(Frame("auth", auth), echo=False) and lines is not None:
                    return 1
            if lines is None:
                return await shell.interactive(history)
            return await shell.script(lines, script_name)
        except (ConnectionError, ConnectionClosed):
            print(f"console: lost the connection to {url}", file=sys.stderr)
            return 2
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            shell.flush()


def main(config: Config, args: argparse.Namespace) -> int:
    lines = None
    if args.script is not None:
        try:
            lines = args.script.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            print(f"console: cannot read script {args.script}: {reason}", file=sys.stderr)
            return 2
    token = args.token
    if token is None and args.role is not None:
        from gateway.app import token_issuer  # only here: it pulls in the storage layer

        try:
            token, _ = token_issuer(config, create_secret=False).mint(args.sub, args.role, args.locale or "en")
        except OSError as exc:
            print(f"console: cannot read the secret in {config.data_dir}: {exc.strerror}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"console: {exc}", file=sys.stderr)
            return 2
    history: History = InMemoryHistory()
    if lines is None:
        with contextlib.suppress(OSError):  # a read-only data dir costs the history, not the console
            config.data_dir.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(config.data_dir / "console_history"))
    url = args.url or f"ws://{config.host}:{config.port}/ws"
    try:
        return asyncio.run(run(url, MSGPACK if args.msgpack else JSON, token, args.locale, lines,
                               str(args.script), history))
    except KeyboardInterrupt:
        return 130
