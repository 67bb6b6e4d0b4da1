"""The console's session with the gateway: one client at a time, kept alive under the gateway's
idle timeout with `ping` frames, reconnected with backoff and signed in again when it drops."""

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import WebSocketException

from protocol.client import Client
from protocol.codec import Codec

CONNECT_ERRORS = (OSError, WebSocketException, TimeoutError)
BACKOFF_FIRST_S = 0.25
BACKOFF_MOST_S = 5.0
CONNECT_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 10.0

Pushed = Callable[[str, Any], None]  # ("event" or "unmatched", frame)
Say = Callable[[str], None]  # one line for the user


def backoff(attempt: int) -> float:
    """Exponential from BACKOFF_FIRST_S to BACKOFF_MOST_S, with jitter so that many consoles a
    restart dropped do not reconnect in step."""
    return min(BACKOFF_MOST_S, BACKOFF_FIRST_S * 2.0 ** min(attempt, 5)) * random.uniform(0.5, 1.0)


def describe_close(client: Client) -> str:
    ws = client.ws
    if ws.close_code is None or ws.close_code == 1006:
        return "connection lost"
    return f"closed {ws.close_code} {ws.close_reason}".rstrip()


class Link:
    """Owns the current `Client`. `sign_in` returns the `auth` arguments (a fresh token when the
    console mints its own) or None when the session stays anonymous; `on_signed_in` sees each
    `auth` reply (the first one too)."""

    def __init__(self, url: str, codec: Codec, *, heartbeat_s: float, sign_in: Callable[[], dict[str, Any] | None],
                 on_pushed: Pushed, on_signed_in: Callable[[dict[str, Any]], Awaitable[None]], say: Say) -> None:
        self.url = url
        self.codec = codec
        self.heartbeat_s = heartbeat_s
        self.sign_in = sign_in
        self.on_pushed = on_pushed
        self.on_signed_in = on_signed_in
        self.say = say
        self.client: Client | None = None
        self.up = asyncio.Event()  # set while a signed-in (or anonymous) session is open
        self.last_sent = time.monotonic()
        self.lost: str | None = None  # why the last session ended, while reconnecting
        self._pumps: list[asyncio.Task[None]] = []

    async def open(self) -> dict[str, Any] | None:
        """The first connection; raises CONNECT_ERRORS. Returns the `auth` reply (an `error`
        frame too), None without a token."""
        client = await Client.connect(self.url, codec=self.codec, open_timeout=CONNECT_TIMEOUT_S)
        return await self._adopt(client)

    async def _adopt(self, client: Client) -> dict[str, Any] | None:
        self.client = client
        self._pumps = [asyncio.create_task(self._pump(client.events, "event")),
                       asyncio.create_task(self._pump(client.unmatched, "unmatched"))]
        arguments = self.sign_in()
        reply = None
        if arguments is not None:
            reply, _ = await self.call("auth", arguments, PING_TIMEOUT_S)
            if reply.get("type") != "error":
                await self.on_signed_in(reply)
        self.up.set()
        return reply

    async def call(self, operation: str, arguments: dict[str, Any], timeout: float) -> tuple[Any, float]:
        """A request on the current session; ConnectionError when there is none."""
        if self.client is None:
            raise ConnectionError(self.lost or "not connected")
        self.last_sent = time.monotonic()
        return await self.client.call(operation, arguments, timeout)

    async def call_raw(self, data: bytes, request_id: str | None, timeout: float) -> tuple[Any, float]:
        if self.client is None:
            raise ConnectionError(self.lost or "not connected")
        self.last_sent = time.monotonic()
        return await self.client.call_raw(data, request_id, timeout)

    async def send_raw(self, data: bytes) -> None:
        if self.client is None:
            raise ConnectionError(self.lost or "not connected")
        self.last_sent = time.monotonic()
        await self.client.ws.send(data, text=self.codec.text)

    async def _pump(self, queue: asyncio.Queue[Any], label: str) -> None:
        while True:
            self.on_pushed(label, await queue.get())

    async def heartbeat(self) -> None:
        """A `ping` whenever the session has been quiet for `heartbeat_s`: the gateway closes
        sessions that send nothing for IDLE_TIMEOUT_S (websocket pings do not count)."""
        while True:
            await asyncio.sleep(max(0.05, self.last_sent + self.heartbeat_s - time.monotonic()))
            if self.client is None or time.monotonic() - self.last_sent < self.heartbeat_s:
                continue
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self.call("ping", {}, PING_TIMEOUT_S)  # its reply is matched by id, never printed

    async def wait_closed(self) -> str:
        """Until the current session ends; why it ended."""
        assert self.client is not None
        await self.client.ws.wait_closed()
        return describe_close(self.client)

    async def keep(self) -> None:
        """Forever: when the session ends, reconnect with backoff, sign in again and say so in
        one line. The prompt stays up meanwhile; frames typed then are refused at once."""
        while True:
            self.lost = await self.wait_closed()
            self.up.clear()
            await self._drop()
            started, attempt = time.monotonic(), 0
            while True:
                attempt += 1
                await asyncio.sleep(backoff(attempt))
                try:
                    client = await Client.connect(self.url, codec=self.codec, open_timeout=CONNECT_TIMEOUT_S)
                except CONNECT_ERRORS:
                    continue
                try:
                    reply = await self._adopt(client)
                except (ConnectionError, TimeoutError):
                    await self._drop()
                    continue
                break
            took = time.monotonic() - started
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            if reply is None:
                self.say(f"reconnected to {self.url} after {self.lost} ({tries}, {took:.1f} s)")
            elif reply.get("type") == "error":
                self.say(f"reconnected to {self.url} after {self.lost}, but signing in again failed: "
                         f"{reply.get('code')} {reply.get('message')}")
            else:
                self.say(f"reconnected to {self.url} after {self.lost} ({tries}, {took:.1f} s); signed in again "
                         f"as {reply.get('role')} {reply.get('user_id')}")
            self.lost = None

    async def _drop(self) -> None:
        client, self.client = self.client, None
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._pumps = []
        if client is not None:
            while not client.events.empty():  # what arrived before the drop is still shown
                self.on_pushed("event", client.events.get_nowait())
            with contextlib.suppress(*CONNECT_ERRORS):
                await client.close()

    async def close(self) -> None:
        await self._drop()
