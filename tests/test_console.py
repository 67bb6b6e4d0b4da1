"""The debug console as its users run it: `run.py console` against a real gateway, from a script
and in a pseudo-terminal, plus its Tab completion."""

import asyncio
import json
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path

import msgspec
import pexpect
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from clients.completion import FrameCompleter, Values
from protocol.admin import Notify
from protocol.ai import AiStart
from protocol.catalog import CatalogList
from tests.conftest import ROOT, SECRET, ws_url
from tests.processes import GatewayProcess, run_command
from tests.world import order_at, spot

TIMEOUT_S = 60.0
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-Za-z]|\x1b[=>78]|\r")


def console_argv(url: str, data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "run.py", "console", "--url", url, "--secret", SECRET,
            "--data-dir", str(data_dir), *args]


async def run_console(url: str, data_dir: Path, *args: str) -> tuple[int, str]:
    """Exit status and output (stdout and stderr) of a non-interactive console."""
    return await run_command(*console_argv(url, data_dir, *args)[2:], env={**os.environ, "COLUMNS": "200"},
                             timeout=TIMEOUT_S)


def user() -> str:
    return f"alice-{uuid.uuid4().hex[:8]}"


async def test_script_pings_and_notifies_itself(gateway, tmp_path):
    alice = user()
    script = tmp_path / "smoke.txt"
    script.write_text(f'# a comment, then a blank line\n\nping\nadmin.notify {{"user_id": "{alice}", '
                      f'"text": "hello from the console"}}\nping\n')
    code, out = await run_console(ws_url(gateway), tmp_path, "--role", "admin", "--sub", alice,
                                  "--script", str(script))
    assert code == 0, out
    assert '"role": "admin"' in out  # the auth result comes first
    assert out.count('-> {"type": "ping"') == 2
    assert out.count('"server_time"') == 3  # auth and two pongs
    assert '"sessions": 1' in out  # this very session is alice's
    assert "event notice" in out and f'"sender": "{alice}"' in out
    assert "comment" not in out


@pytest.mark.parametrize(("role", "line", "code"), [
    ("admin", "admin.notify {}", "bad_request"),
    ("consumer", 'admin.notify {"user_id": "u1", "text": "hi"}', "forbidden"),
])
async def test_script_stops_at_the_first_error(gateway, tmp_path, role, line, code):
    script = tmp_path / "failing.txt"
    script.write_text(f"ping\n{line}\nping\n")
    status, out = await run_console(ws_url(gateway), tmp_path, "--role", role, "--sub", user(),
                                    "--script", str(script))
    assert status == 1, out
    assert f"error {code}" in out and f'"code": "{code}"' in out
    assert "failing.txt:2" in out
    assert out.count("-> ") == 2  # the last ping never went out


async def test_raw_frames_and_msgpack(gateway, tmp_path):
    script = tmp_path / "raw.txt"
    script.write_text('{"type": "ping", "id": "mine"}\n{"type": "ping"}\n')
    code, out = await run_console(ws_url(gateway), tmp_path, "--msgpack", "--script", str(script))
    assert code == 0, out
    assert '"id": "mine"' in out and '"id": null' in out  # a frame without id is sent as typed
    assert out.count('"server_time"') == 2  # msgpack replies shown as JSON


async def test_unreadable_script_and_unreachable_gateway_say_so_in_one_line(gateway, tmp_path):
    code, out = await run_console(ws_url(gateway), tmp_path, "--script", str(tmp_path / "missing.txt"))
    assert (code, out.strip().count("\n")) == (2, 0)
    assert "cannot read script" in out and "No such file" in out

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "ping.txt"
    script.write_text("ping\n")
    code, out = await run_console(f"ws://127.0.0.1:{port}/ws", tmp_path, "--script", str(script))
    assert (code, out.strip().count("\n")) == (2, 0)
    assert f"cannot connect to ws://127.0.0.1:{port}/ws" in out


class Terminal:
    """A console in a pseudo-terminal (pexpect spawns it), its screen read by the event loop so
    that the gateway in this process keeps serving; matched with the escape sequences removed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.child = pexpect.spawn(sys.executable, list(args), cwd=str(ROOT), dimensions=(40, 160),
                                   env={**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "NO_COLOR": "1",
                                        **(env or {})})
        self.fd = self.child.child_fd
        self.output = bytearray()
        self.changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the console exited
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.fd)
        self.output += data
        self.changed.set()

    @property
    def text(self) -> str:
        return ANSI.sub("", self.output.decode(errors="replace"))

    async def expect(self, wanted: str, after: int = 0) -> int:
        """Wait for `wanted` on screen after position `after`; returns where it ends."""
        async with asyncio.timeout(TIMEOUT_S):
            while (found := self.text.find(wanted, after)) < 0:
                self.changed.clear()
                await self.changed.wait()
        return found + len(wanted)

    def type(self, keys: str) -> None:
        self.child.send(keys)

    async def exit_status(self) -> int | None:
        async with asyncio.timeout(TIMEOUT_S):
            while self.child.isalive():
                await asyncio.sleep(0.05)
        return self.child.exitstatus

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        self.child.close(force=True)


async def test_interactive_ping_event_and_quit(gateway, signed_in, tmp_path):
    alice = user()
    terminal = Terminal(*console_argv(ws_url(gateway), tmp_path, "--role", "admin", "--sub", alice)[1:])
    try:
        seen = await terminal.expect("dispatch admin>")  # the prompt says who is signed in
        terminal.type("ping\r")
        seen = await terminal.expect('"server_time"', seen)
        seen = await terminal.expect("dispatch admin>", seen)

        admin, _ = await signed_in("admin")  # someone else pushes a notice while the prompt waits
        await admin.request(Notify(user_id=alice, text="ring ring"))
        seen = await terminal.expect("event notice", seen)
        seen = await terminal.expect('"ring ring"', seen)

        terminal.type(":watch\r")  # the live feed, one line per event
        seen = await terminal.expect('"brands": null', seen)
        consumer, consumer_id = await signed_in("consumer")
        order = (await consumer.request(order_at(spot()))).order
        await terminal.expect(f"order.created  whirlpool  {order.id}  open  139.00  {consumer_id}", seen)

        terminal.type(":quit\r")
        assert await terminal.exit_status() == 0, terminal.text
    finally:
        terminal.close()
    assert "ping" in (tmp_path / "console_history").read_text()  # Up-arrow finds it next time


async def test_an_idle_console_keeps_its_session(make_gateway, tmp_path):
    async with make_gateway(idle_timeout_s=1.0) as gw:
        terminal = Terminal(*console_argv(ws_url(gw), tmp_path, "--role", "admin", "--sub", user(),
                                          "--idle-timeout-s", "1")[1:])
        try:
            seen = await terminal.expect("dispatch admin>")
            [session] = gw.sessions
            await asyncio.sleep(3.5)  # over three idle timeouts without a key pressed
            assert gw.sessions == {session}  # the same session: never closed for idling
            terminal.type("ping\r")
            seen = await terminal.expect('"server_time"', seen)
            assert "reconnected" not in terminal.text and "closed" not in terminal.text
        finally:
            terminal.close()


async def test_a_restarted_gateway_is_rejoined_and_signed_in_again(servers, key_dir, tmp_path):
    args = ("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET, "--data-dir", str(tmp_path))
    served = await GatewayProcess(*args).start()
    alice = user()
    terminal = Terminal(*console_argv(served.url, tmp_path, "--role", "admin", "--sub", alice)[1:])
    restarted: GatewayProcess | None = None
    try:
        seen = await terminal.expect("dispatch admin>")
        assert served.process is not None
        served.process.send_signal(signal.SIGKILL)  # no close frame: the connection just drops
        await served.process.wait()
        restarted = await GatewayProcess(*args, port=served.port).start()
        seen = await terminal.expect(f"reconnected to {served.url} after connection lost", seen)
        seen = await terminal.expect(f"signed in again as admin {alice}", seen)
        terminal.type('admin.notify {"user_id": "' + alice + '", "text": "still here"}\r')
        await terminal.expect('"sessions": 1', seen)  # the new session is signed in as alice
        await terminal.expect('"still here"', seen)  # and gets her events
        terminal.type(":quit\r")
        assert await terminal.exit_status() == 0, terminal.text
    finally:
        terminal.close()
        if restarted is not None:
            await restarted.terminate()


async def test_tab_completes_catalog_values_in_the_terminal(gateway, tmp_path):
    terminal = Terminal(*console_argv(ws_url(gateway), tmp_path, "--role", "consumer", "--sub", user())[1:])
    try:
        seen = await terminal.expect("dispatch consumer>")
        terminal.type('order.create {"brand": "whirlp\t')
        seen = await terminal.expect('order.create {"brand": "whirlpool"', seen)
        terminal.type(', "sku": "WRF5\t')  # only whirlpool's SKUs: one starts so
        await terminal.expect('"sku": "WRF535SWHZ"', seen)
    finally:
        terminal.close()


async def test_lists_are_tables_unless_json_is_asked(gateway, tmp_path):
    admin = user()
    script = tmp_path / "lists.txt"
    script.write_text('catalog.brand.save {"brand": "' + admin + '", "name": "Table brand"}\n'
                      'admin.log {"actor_id": "' + admin + '"}\n:json\nadmin.log {"actor_id": "' + admin + '"}\n')
    code, out = await run_console(ws_url(gateway), tmp_path, "--role", "admin", "--sub", admin,
                                  "--script", str(script))
    assert code == 0, out
    table, as_json = out.split("-> {\"type\": \"admin.log\"")[1:]
    assert "entries (2)" in table  # the sign-in and the brand
    header = next(line for line in table.splitlines() if "actor_role" in line)
    assert [word for word in re.split(r"[\s│┃|]+", header) if word][:4] == ["id", "at", "actor_id", "actor_role"]
    assert "catalog.brand.save" in table and '"next_before": null' in table
    assert '"entries": [' in as_json and '"action": "catalog.brand.save"' in as_json


def completions(text: str, values: Values | None = None) -> list[str]:
    return [c.text for c in FrameCompleter(values=values).get_completions(Document(text), CompleteEvent())]


def test_tab_completes_operations_then_their_fields():
    assert completions("admin.n") == ["admin.notify"]
    assert completions("admin.w") == ["admin.watch"]
    assert "admin.merchant.brands" in completions("adm")
    assert set(completions("auth.")) == {"auth.register", "auth.login", "auth.claim", "auth.refresh", "auth.logout"}
    assert completions('admin.notify {"') == ['"text": ', '"user_id": ', '"group": ']
    assert completions('admin.notify {"us') == ['"user_id": ']
    assert completions('admin.notify {"text": "hi", "') == ['"user_id": ', '"group": ']  # not twice
    assert completions('admin.notify {"text": "a, b') == []  # inside a string value
    assert completions("ping ") == []  # no fields but `id`, which the console fills in


async def test_tab_completes_values_from_the_catalog_the_types_and_the_orders_seen(signed_in):
    consumer, _ = await signed_in("consumer")
    values = Values()
    values.catalog(msgspec.to_builtins(await consumer.request(CatalogList())))
    assert completions('order.create {"brand": "whirl', values) == ['"whirlpool"']
    skus = completions('order.create {"brand": "whirlpool", "sku": "', values)
    assert '"WRF535SWHZ"' in skus and {values.skus[sku.strip('"')][0] for sku in skus} == {"whirlpool"}
    assert len(completions('order.create {"sku": "', values)) > len(skus)  # without a brand: every SKU
    assert '"repair"' in completions('order.create {"service_type": "', values)
    assert completions('order.list {"state": "comp', values) == ['"completed"']  # the type's Literal
    assert completions('order.accept {"order_id": "', values) == []  # none seen yet

    order = (await consumer.request(order_at(spot()))).order
    values.seen(msgspec.to_builtins({"type": "result", "order": order}))
    values.seen({"type": "order.unavailable", "order_id": "o-older", "state": "accepted"})
    assert completions('order.accept {"order_id": "', values) == ['"o-older"', f'"{order.id}"']  # newest first
    assert completions(":help order.acc") == ["order.accept"]


async def test_tab_completes_a_help_with_ai_conversation(signed_in):
    consumer, _ = await signed_in("consumer")
    values = Values()
    values.catalog(msgspec.to_builtins(await consumer.request(CatalogList())))
    assert {'"brand": ', '"sku": ', '"description": '} <= set(completions('ai.start {"', values))
    assert completions('ai.start {"brand": "whirl', values) == ['"whirlpool"']
    assert '"WRF535SWHZ"' in completions('ai.start {"brand": "whirlpool", "sku": "', values)
    assert completions('ai.end {"outcome": "gi', values) == ['"give_up"']
    assert completions('ai.reply {"conversation_id": "', values) == []  # none seen yet
    started = await consumer.request(AiStart(brand="whirlpool", sku="WRF535SWHZ", description="Fridge warm"))
    values.seen(msgspec.to_builtins({"type": "result", **msgspec.structs.asdict(started)}))
    values.seen({"type": "ai.delta", "conversation_id": "c-older", "turn": 1, "seq": 0, "text": "..."})
    assert completions('ai.reply {"conversation_id": "', values) == ['"c-older"', f'"{started.conversation_id}"']
    assert completions('ai.get {"conversation_id": "', values)[0] == '"c-older"'


async def test_a_script_drives_a_help_with_ai_conversation(make_gateway, tmp_path):
    script = tmp_path / "ai.txt"
    script.write_text('ai.start {"brand": "whirlpool", "sku": "WRF535SWHZ", "description": "The fridge is warm"}\n'
                      + "ping\n" * 40)  # the pings keep the script going while the answer streams
    async with make_gateway(ai_stream_pause_s=0.0) as gw:  # the whole answer at once, well within the pings
        code, out = await run_console(ws_url(gw), tmp_path, "--role", "consumer", "--sub", user(),
                                      "--script", str(script))
    assert code == 0, out
    assert '"conversation_id"' in out and "event ai.delta" in out and "event ai.answer" in out
    assert '"verdict": "continue"' in out


async def test_help_of_an_operation_names_the_roles_allowed(gateway, tmp_path):
    script = tmp_path / "help.txt"
    script.write_text(":help order.accept\n:help admin.notify\n:help catalog.list\n:help ping\n")
    code, out = await run_console(ws_url(gateway), tmp_path, "--script", str(script))
    assert code == 0, out
    sections = out.split("roles: ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["technician", "admin",
                                                      "admin, consumer, merchant, technician", "anyone, before auth"]
    assert "order_id" in sections[0]


async def test_an_order_prints_as_one_line_unless_full(gateway, tmp_path):
    consumer = f"cons-{uuid.uuid4().hex[:8]}"
    create = {k: v for k, v in msgspec.to_builtins(order_at(spot())).items() if v not in (None, []) and k != "type"}
    script = tmp_path / "order.txt"
    script.write_text("order.create " + json.dumps(create) + "\n")
    code, out = await run_console(ws_url(gateway), tmp_path, "--role", "consumer", "--sub", consumer,
                                  "--script", str(script))
    assert code == 0, out
    [line] = [line for line in out.splitlines() if line.startswith("order ")]
    assert re.fullmatch(r"order \S+  open  whirlpool WRF535SWHZ repair  139\.00 USD  12 Elm Street, Apt 3  "
                        rf"consumer {consumer}(  payment \w+)?", line), line
    assert "compressor clicks" not in out.split("result  ")[1]  # the description is for --full

    code, out = await run_console(ws_url(gateway), tmp_path, "--role", "consumer", "--sub", consumer, "--full",
                                  "--script", str(script))
    assert code == 0, out
    reply = out.split("result  ")[1]
    assert '"description": "Fridge is warm, compressor clicks"' in reply and '"created_at"' in reply


async def test_the_readme_story_in_two_consoles(gateway, tmp_path):
    """README "Try it": a consumer orders, a technician on duty nearby sees it, accepts, they chat,
    the job completes and is rated; each step a console script as the README types it."""
    place, consumer, tech = spot(), f"ann-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"

    async def as_user(role: str, sub: str, *lines: str) -> str:
        script = tmp_path / f"{role}-{uuid.uuid4().hex[:6]}.txt"
        script.write_text("\n".join(lines) + "\n")
        code, out = await run_console(ws_url(gateway), tmp_path, "--role", role, "--sub", sub, "--script", str(script))
        assert code == 0, out
        return out

    where = f'"lat": {place[0]}, "lng": {place[1]}'
    await as_user("technician", tech, 'tech.duty {"on_duty": true}', "location.update {" + where + "}")
    out = await as_user("consumer", consumer, 'order.create {"brand": "whirlpool", "sku": "WRF535SWHZ", '
                        '"service_type": "repair", "description": "Fridge is warm", "address": "12 Elm Street", '
                        + where + "}")
    order_id = re.search(r"^order (\S+)  open  whirlpool", out, re.MULTILINE)[1]
    out = await as_user("technician", tech, "order.nearby {" + where + "}",
                        'order.accept {"order_id": "' + order_id + '"}',
                        'chat.send {"order_id": "' + order_id + '", "client_id": "1", "text": "On my way"}',
                        'order.depart {"order_id": "' + order_id + '"}', 'order.start {"order_id": "' + order_id + '"}',
                        'order.complete {"order_id": "' + order_id + '", "note": "Replaced the relay"}')
    assert order_id in out.split("-> ")[2]  # order.nearby listed it
    assert f"order {order_id}  completed" in out
    out = await as_user("consumer", consumer, 'chat.history {"order_id": "' + order_id + '"}',
                        'order.rate {"order_id": "' + order_id + '", "stars": 5, "comment": "Quick and tidy"}')
    assert "On my way" in out and f"order {order_id}  completed" in out and "rated 5" in out
