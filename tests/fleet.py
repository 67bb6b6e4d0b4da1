"""A fleet's parts for the multi-node tests: gateway nodes as processes sharing the tests'
PostgreSQL, Redis, secret and key-encryption key, and apps on the client library's `Reconnecting`
that chat and stream positions through node deaths and restarts, keeping what was acknowledged."""

import asyncio
import contextlib
import random
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from protocol.auth import Auth
from protocol.chat import ChatHistory, ChatMessage, ChatSend, ChatSync
from protocol.client import Client, Reconnecting
from protocol.location import Duty, LocationUpdate
from tests.conftest import SECRET
from tests.processes import GatewayProcess
from tests.world import offset

# Short enough that a dead node's traces go within the test, long enough for a loaded box.
FLEET_ENV = {"PRESENCE_TTL_S": "3", "SWEEP_INTERVAL_S": "1", "RATE_PER_S": "1000", "RATE_BURST": "1000",
             "LOG_LEVEL": "WARNING"}


def shared_kek(key_dir: Path) -> str:
    """The run's key-encryption key (the in-process gateway created it), as a node would get it."""
    [pem] = sorted(key_dir.glob("kek-*.pem"))
    return pem.read_text()


def node(servers: tuple[str, str], data_dir: Path, kek: str, port: int | None = None) -> GatewayProcess:
    """A node with its own data folder (on `port`, to start one again where it was)."""
    return GatewayProcess("--database-url", servers[0], "--redis-url", servers[1], "--secret", SECRET,
                          "--data-dir", str(data_dir), env={**FLEET_ENV, "KEK": kek, "KEY_DIR": ""}, port=port)


def clean(nodes: list[GatewayProcess]) -> None:
    for n in nodes:
        assert "Traceback" not in n.log and "internal" not in n.log, n.log


async def on_duty_at(client: Client, place: tuple[float, float]) -> None:
    await client.request(Duty(on_duty=True))
    await client.request(LocationUpdate(lat=place[0], lng=place[1]))


class ChatApp:
    """A member's app in one room: sends numbered messages (retried on a lost connection with the
    same `client_id`), keeps what it received by seq, and on every (re)connect signs in and asks
    `chat.sync` for what it missed."""

    def __init__(self, urls: list[str], token: str, order_id: str, who: str) -> None:
        self.token, self.order_id, self.who = token, order_id, who
        self.received: dict[int, ChatMessage] = {}
        self.acknowledged: dict[str, int] = {}  # client_id -> seq of every acknowledged send
        self.duplicates = 0  # sends the gateway answered `duplicate: true` (a retry of a stored one)
        self.app = Reconnecting(urls, self.sign_in, backoff=None)
        self.pump: asyncio.Task[None] | None = None

    async def sign_in(self, client: Client) -> None:
        await client.request(Auth(token=self.token))
        last = max(self.received, default=0)
        synced = await client.request(ChatSync(positions={self.order_id: last}))
        for room in synced.rooms:
            for message in room.messages:
                self.received[message.seq] = message

    async def talk(self, count: int | None, pause_s: float, stop: asyncio.Event | None = None) -> None:
        """`count` messages, or (None) until `stop`; each sent until it is acknowledged."""
        i = 0
        while (count is None or i < count) and not (stop is not None and stop.is_set()):
            client_id = f"{self.who}-{i}"
            sent = await self.app.request(ChatSend(order_id=self.order_id, client_id=client_id,
                                                   text=f"{self.who} {i}"), retry=True)
            self.acknowledged[client_id] = sent.message.seq
            self.duplicates += sent.duplicate
            i += 1
            await asyncio.sleep(pause_s)

    async def listen(self) -> None:
        while True:
            event = await self.app.events.get()
            message = getattr(event, "message", None)
            if isinstance(message, ChatMessage) and message.order_id == self.order_id:
                self.received[message.seq] = message


class Technician:
    """A technician's app streaming acknowledged positions; on reconnect it only signs in again."""

    def __init__(self, urls: list[str], token: str, place: tuple[float, float], rng: random.Random) -> None:
        self.token, self.place, self.rng = token, place, rng
        self.last: tuple[float, float] | None = None  # the last acknowledged position
        self.last_on = 0  # on which connection (1: the first)
        self.app = Reconnecting(urls, self.sign_in)

    async def sign_in(self, client: Client) -> None:
        await client.request(Auth(token=self.token))

    async def stream(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            where = offset(self.place, north_mi=self.rng.uniform(-2, 2), east_mi=self.rng.uniform(-2, 2))
            with contextlib.suppress(ConnectionError, ConnectionClosed):  # not acknowledged: may or may not be kept
                ack = await self.app.request(LocationUpdate(lat=where[0], lng=where[1]))
                assert ack.on_duty
                self.last, self.last_on = where, self.app.connections
            await asyncio.sleep(0.05)


async def all_hear(techs: "list[Technician]", order_id: str, timeout: float = 20) -> None:
    """Return once every technician's app received the order's announcement (they are on duty)."""
    for t in techs:
        while True:
            event = await asyncio.wait_for(t.app.events.get(), timeout)
            if getattr(event, "order", None) is not None and event.order.id == order_id:
                break


async def whole_history(url: str, token: str, order_id: str) -> list[ChatMessage]:
    """The room's every message, read page by page from the newest back."""
    history: list[ChatMessage] = []
    async with await Client.connect(url) as reader:
        await reader.request(Auth(token=token))
        before = None
        while True:
            page = await reader.request(ChatHistory(order_id=order_id, before_seq=before, limit=200))
            history = page.messages + history
            if not page.has_more:
                return history
            before = page.messages[0].seq


def check_room(history: list[ChatMessage], members: "list[ChatApp]") -> None:
    """No gap; every message a member sent stored exactly once, with the seq its sender was
    told; every member got every message (events and sync), once each."""
    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    sent = [m.client_id for m in history if m.kind == "text"]
    assert sorted(sent) == sorted(f"{c.who}-{i}" for c in members for i in range(len(c.acknowledged)))
    by_id = {m.client_id: m.seq for m in history}
    for chat in members:
        assert all(by_id[client_id] == seq for client_id, seq in chat.acknowledged.items())
        assert sorted(chat.received) == [m.seq for m in history]
