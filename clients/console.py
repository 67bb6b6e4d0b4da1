"""The protocol debug console (`run.py console`): type frames, see replies and pushed events.

A line is `OPERATION {json arguments}`, `OPERATION`, a raw `{...}` frame sent as typed, or a
:command (`:help [OP]`, `:quit`, `:watch` the back office's live feed as one line per event,
`:unwatch`, `:json`/`:tables` to show lists as JSON or as tables, `:full`/`:short` for every field
of an order or its one-line summary). `--script FILE` runs such lines without a prompt and stops
at the first error. Interactively the session is kept alive and reconnected (clients/link.py).
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.json import JSON as JSONView
from rich.table import Table
from websockets.exceptions import ConnectionClosed

from clients.completion import COMMANDS, FrameCompleter, Values, summary
from clients.link import CONNECT_ERRORS, Link
from clients.render import activity_line, order_line, table
from gateway.config import Config, ConfigError
from protocol.codec import JSON, MSGPACK, Codec
from protocol.messages import BY_TYPE, REQUESTS, operation

QUIT = (":quit", ":exit")
REPLY_TIMEOUT_S = 10.0
RECONNECT_WAIT_S = 5.0  # a frame typed while reconnecting waits this long for the new session
TRAILING_EVENTS_S = 0.2  # after a script's last reply, show events still in flight
HEARTBEATS_PER_IDLE = 3  # pings per IDLE_TIMEOUT_S of quiet


@dataclass(frozen=True)
class Frame:
    """A parsed input line: an operation with its arguments, or a raw frame (`raw` as typed)."""

    operation: str
    arguments: dict[str, Any]
    raw: str | None = None


def parse(line: str) -> Frame | str | None:
    """A Frame, a :command (`:help OP` with its operation), or None for blank and `#` lines;
    ValueError says what is wrong."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    if line.startswith(":"):
        words = line.split()
        if words[0] not in COMMANDS or (len(words) > 1 and words[0] != ":help") or len(words) > 2:
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


def roles_allowed(name: str) -> str:
    """Who may call an operation, from the gateway's route table."""
    from handlers.registry import ROUTES  # only here: the handlers are not needed to send frames

    route = next((r for r in ROUTES.values() if r.operation == name), None)
    if route is None:
        return "not routed"
    return "anyone, before auth" if route.roles is None else ", ".join(sorted(route.roles))


class Shell:
    """One console: sends frames, prints replies, events and stray replies."""

    def __init__(self, out: Console, echo: bool, full: bool) -> None:
        self.link: Link | None = None
        self.out = out
        self.echo = echo  # print each frame before sending it (scripts)
        self.tables = True  # lists of objects in replies as tables (`:json` turns it off)
        self.full = full  # an order with every field (`:full`), else one line
        self.watching = False  # `admin.activity` events as one line each
        self.values = Values()  # for Tab: the catalog, the orders seen
        self.role: str | None = None
        self.user: str | None = None
        self.interactive_mode = False  # a lost connection is reconnected, not the end
        self._ids = itertools.count(1)

    def prompt(self) -> str:
        return f"dispatch {self.role}> " if self.role else "dispatch> "

    async def signed_in(self, reply: dict[str, Any]) -> None:
        """Each successful `auth`: the role for the prompt, the catalog for Tab."""
        self.role, self.user = reply.get("role"), reply.get("user_id")
        assert self.link is not None
        with contextlib.suppress(ConnectionError, TimeoutError):
            catalog, _ = await self.link.call("catalog.list", {}, REPLY_TIMEOUT_S)
            if catalog.get("type") != "error":
                self.values.catalog(msgspec.to_builtins(catalog))

    async def command(self, line: str) -> bool:
        """Run a :command; False when it fails."""
        name, *operand = line.split()
        if name == ":help":
            self.help(operand[0] if operand else None)
        elif name in (":json", ":tables"):
            self.tables = name == ":tables"
        elif name in (":full", ":short"):
            self.full = name == ":full"
        elif name in (":watch", ":unwatch"):
            self.watching = name == ":watch"
            return await self.send(Frame("admin." + name[1:], {}))
        return True

    async def send(self, frame: Frame, echo: bool = True) -> bool:
        """Send one frame and print its reply; True unless the reply is an error or missing."""
        link = self.link
        assert link is not None
        if not link.up.is_set() and link.lost is not None:  # reconnecting: give it a moment
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.up.wait(), RECONNECT_WAIT_S)
        codec = link.codec
        arguments = frame.arguments if frame.raw else {"type": frame.operation, "id": f"k{next(self._ids)}",
                                                       **frame.arguments}
        if self.echo and echo:
            self.out.print("-> " + json.dumps(arguments, ensure_ascii=False), style="dim", soft_wrap=True)
        try:
            if frame.raw is None:
                reply, rtt = await link.call(frame.operation, arguments, REPLY_TIMEOUT_S)
            else:
                data = frame.raw.encode() if codec.text else codec.encode_any(frame.arguments)  # same object
                request_id = frame.arguments.get("id")
                request = BY_TYPE.get(frame.operation)
                if request_id is None and request is not None and request.silent_without_id:
                    await link.send_raw(data)  # a stream update: no reply comes
                    return True
                key = request_id if isinstance(request_id, str) else None  # the server echoes only strings
                reply, rtt = await link.call_raw(data, key, REPLY_TIMEOUT_S)
        except TimeoutError:
            self.out.print(f"no reply within {REPLY_TIMEOUT_S:g} s", style="bold red")
            return False
        except (ConnectionError, ConnectionClosed) as exc:
            if not self.interactive_mode:
                raise
            self.out.print(f"not sent: {exc or 'connection lost'}; reconnecting, try again in a moment",
                           style="bold red")
            return False
        failed = reply.get("type") == "error"
        header = f"error {reply.get('code')}" if failed else str(reply.get("type"))
        self.show(f"{header}  {rtt * 1000:.1f} ms", reply, "red" if failed else "green")
        return not failed

    def show_pushed(self, label: str, frame: Any) -> None:
        data = msgspec.to_builtins(frame)  # typed events, msgpack timestamps: all JSON-ready
        if self.watching and data.get("type") == "admin.activity":
            self.out.print(activity_line(data), style="cyan", soft_wrap=True, highlight=False)
            return
        self.show(f"{label} {data.get('type')}", data)

    def show(self, header: str, frame: Any, color: str = "magenta") -> None:
        """A header line in `color`, then the frame: an order as one line (unless `:full`), its
        first list of objects as a table (unless `:json`), the rest as JSON (all red for errors)."""
        data = msgspec.to_builtins(frame)
        self.values.seen(data)
        if color == "red":
            self.out.print(header, style="bold " + color)
            self.out.print(json.dumps(data, indent=2, ensure_ascii=False), style=color)
            return
        order = data.get("order")
        if isinstance(order, dict) and not self.full:
            self.out.print(header, style="bold " + color)
            self.out.print(order_line(order, data), soft_wrap=True)
            return
        self.out.print(header, style="bold " + color)
        rows_key = next((k for k, v in data.items() if isinstance(v, list) and v
                         and all(isinstance(row, dict) for row in v)), None) if self.tables else None
        if rows_key is None:
            self.out.print(JSONView.from_data(data))
            return
        self.out.print(table(rows_key, data[rows_key]))
        rest = {k: v for k, v in data.items() if k not in (rows_key, "type", "id")}
        if rest:
            self.out.print(JSONView.from_data(rest))

    def help(self, name: str | None) -> None:
        if name is not None:
            self.help_operation(name)
            return
        self.out.print("OPERATION {json arguments} | OPERATION | {raw frame} | :help [OP] | :quit | :watch | "
                       ":unwatch | :json | :tables | :full | :short   (Tab completes, Ctrl-D quits)\n")
        grid = Table(box=None, show_header=False, padding=(0, 2, 0, 2))
        for op, request in sorted((operation(r), r) for r in REQUESTS):
            fields = [f.encode_name + ("" if f.required else "?") for f in msgspec.structs.fields(request)]
            grid.add_row(op, ", ".join(f for f in fields if f != "id?"), summary(request))
        self.out.print(grid)

    def help_operation(self, name: str) -> None:
        """One operation: what it does, who may call it, its fields."""
        request = BY_TYPE.get(name)
        if request is None:
            self.out.print(f"unknown operation {name}; :help lists them", style="red")
            return
        self.out.print(name, style="bold")
        self.out.print(" ".join((request.__doc__ or summary(request)).split()))
        self.out.print(f"roles: {roles_allowed(name)}")
        grid = Table(box=None, show_header=False, padding=(0, 2, 0, 2))
        for field in msgspec.structs.fields(request):
            if field.name != "id":
                grid.add_row(field.encode_name, "required" if field.required else "optional")
        self.out.print(grid)

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
        self.interactive_mode = True
        session: PromptSession[str] = PromptSession(history=history, complete_while_typing=False,
                                                    completer=FrameCompleter(values=self.values))
        self.out.print("Type :help for the line forms; Tab completes; Ctrl-D quits.", style="dim")
        with patch_stdout(raw=True):  # events print above the prompt; raw keeps rich's colors
            while True:
                try:
                    line = await session.prompt_async(self.prompt)
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


async def run(url: str, codec: Codec, sign_in: Callable[[], dict[str, Any] | None], lines: list[str] | None,
              script_name: str, history: History, heartbeat_s: float, full: bool) -> int:
    out = Console(markup=False, highlight=False)
    shell = Shell(out, echo=lines is not None, full=full)
    link = shell.link = Link(url, codec, heartbeat_s=heartbeat_s, sign_in=sign_in, on_pushed=shell.show_pushed,
                             on_signed_in=shell.signed_in, say=lambda text: out.print(text, style="bold yellow"))
    try:
        auth = await link.open()
    except CONNECT_ERRORS as exc:
        print(f"console: cannot connect to {url}: {exc or type(exc).__name__}", file=sys.stderr)
        await link.close()
        return 2
    except ConnectionError:
        print(f"console: lost the connection to {url}", file=sys.stderr)
        await link.close()
        return 2
    if auth is not None:
        failed = auth.get("type") == "error"
        shell.show(f"error {auth.get('code')}" if failed else "auth", auth, "red" if failed else "green")
        if failed and lines is not None:
            await link.close()
            return 1

    async def hang_up() -> None:  # scripts do not reconnect: say why it ended
        reason = await link.wait_closed()
        out.print(f"connection closed by the server: {reason}", style="bold red")

    tasks = [asyncio.create_task(link.heartbeat()),
             asyncio.create_task(link.keep() if lines is None else hang_up())]
    try:
        if lines is None:
            return await shell.interactive(history)
        return await shell.script(lines, script_name)
    except (ConnectionError, ConnectionClosed):
        print(f"console: lost the connection to {url}", file=sys.stderr)
        return 2
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await link.close()


def main(config: Config, args: argparse.Namespace) -> int:
    lines = None
    if args.script is not None:
        try:
            lines = args.script.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            print(f"console: cannot read script {args.script}: {reason}", file=sys.stderr)
            return 2
    sign_in: Callable[[], dict[str, Any] | None] = lambda: None  # noqa: E731
    locale = {"locale": args.locale} if args.locale else {}
    if args.token is not None:
        given = args.token
        sign_in = lambda: {"token": given, **locale}  # noqa: E731
    elif args.role is not None:
        from gateway.app import token_issuer  # only here: it pulls in the storage layer

        try:
            issuer = token_issuer(config, create_secret=False)
        except OSError as exc:
            print(f"console: cannot read the secret in {config.data_dir}: {exc.strerror}", file=sys.stderr)
            return 2
        except ConfigError as exc:
            print(f"console: {exc}", file=sys.stderr)
            return 2
        # a fresh token at every sign-in: a reconnect after TOKEN_TTL_S still signs in
        sign_in = lambda: {"token": issuer.mint(args.sub, args.role, args.locale or "en")[0], **locale}  # noqa: E731
    history: History = InMemoryHistory()
    if lines is None:
        with contextlib.suppress(OSError):  # a read-only data dir costs the history, not the console
            config.data_dir.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(config.data_dir / "console_history"))
    url = args.url or f"ws://{config.host}:{config.port}/ws"
    try:
        return asyncio.run(run(url, MSGPACK if args.msgpack else JSON, sign_in, lines, str(args.script), history,
                               config.idle_timeout_s / HEARTBEATS_PER_IDLE, args.full))
    except KeyboardInterrupt:
        return 130
