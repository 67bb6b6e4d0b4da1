"""The chat bench's load: client processes holding rooms, each room an order's two members (its
consumer's session and its technician's, both in the same process), sending `chat.send` open-loop
at a steady rate or in a closed loop, and timing each message from its frame leaving the sender to
the OTHER member's `chat.message` (the sender receives its own copy too; that one is ignored).

Sessions are `bench.session.Session`s (websockets' Sans-I/O protocol on uvloop). Room r of the
whole group is room r // processes of child r % processes.
"""

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from websockets.uri import WebSocketURI, parse_uri

from bench.load import Children, close_all, commands, open_sessions, until
from bench.session import ERROR, RESULT, Session

CHAT_MESSAGE = b'{"type":"chat.message"'  # msgspec writes the tag first
CLIENT_ID = b'"client_id":"'
REQUEST_ID = b'"id":"'  # a reply's id: `"order_id":"` and the like have no quote before `id`
TEXT = b"On my way, about 20 minutes out. Is the side gate open, or should I ring the front door?"
DRAIN_S = 30.0  # messages still due when a window closes must arrive within this
TICK_S = 0.001  # open loop: uvloop's timers count whole milliseconds; a shorter sleep would spin
SLOW_S, SLOW_KEPT = 0.050, 2000  # open loop: the slow messages' send times show stalls apart from overload


@dataclass(frozen=True)
class Room:
    order_id: str
    hellos: tuple[bytes, bytes]  # the `auth` frames of its consumer and of its technician


@dataclass
class Counts:
    """What the rooms of one client process (or, added up, of all) measured in one window."""

    sent: int = 0  # messages sent in the window
    done: int = 0  # open loop: of those, delivered to the other member and answered; closed: delivered in the window
    latencies: "array[float]" = field(default_factory=lambda: array("d"))  # sent -> the other member's chat.message
    replies: "array[float]" = field(default_factory=lambda: array("d"))  # sent -> the sender's reply
    lag: "array[float]" = field(default_factory=lambda: array("d"))  # open loop: sent later than scheduled by
    slow: list[tuple[float, float]] = field(default_factory=list)  # (sent, latency) over SLOW_S, the first SLOW_KEPT
    late: int = 0  # sent in the window and still not delivered or answered when the drain ended
    errors: int = 0  # error replies, lost sessions: the run is not valid
    first_error: str = ""

    def add(self, other: "Counts") -> None:
        self.sent += other.sent
        self.done += other.done
        self.latencies.extend(other.latencies)
        self.replies.extend(other.replies)
        self.lag.extend(other.lag)
        self.slow.extend(other.slow)
        self.late += other.late
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error


class Message:
    __slots__ = ("answered", "cid", "delivered", "room", "sender", "sent")

    def __init__(self, cid: bytes, room: int, sender: "Member", sent: float) -> None:
        self.cid, self.room, self.sender, self.sent = cid, room, sender, sent
        self.delivered = self.answered = 0.0


class Member(Session):
    """One member's session: its replies and the room's messages go to the process's `Traffic`."""

    def __init__(self, uri: WebSocketURI, hello: bytes, traffic: "Traffic") -> None:
        super().__init__(uri, hello)
        self.traffic = traffic

    def _message(self, data: bytes) -> None:
        if not self.opened.done():
            self.opened.set_result(data)
        elif data.startswith(CHAT_MESSAGE):
            self.traffic.heard(self, data)
        elif data.startswith(RESULT) or data.startswith(ERROR):
            self.traffic.answered(data)


def _between(data: bytes, key: bytes) -> bytes:
    start = data.find(key)
    if start < 0:
        return b""
    start += len(key)
    return bytes(data[start:data.find(b'"', start)])  # frames may hold a bytearray: not hashable


class Traffic:
    """A process's rooms and the messages in flight among them. A message is done once the other
    member has it and the sender has its reply (stored and committed)."""

    def __init__(self, order_ids: Sequence[str]) -> None:
        self.order_ids = [o.encode() for o in order_ids]
        self.members: list[Member] = []  # room r: 2r (consumer), 2r + 1 (technician)
        self.turns = [0] * len(order_ids)  # the members of a room take turns
        self.pending: dict[bytes, Message] = {}  # by client id, which is also the request id
        self.serial = 0
        self.counts: Counts | None = None
        self.closed_loop = False
        self.looping = 0  # closed loop: rooms 0 .. looping - 1 send again when a message is done
        self.t_from = self.t_until = 0.0

    def measure(self, counts: Counts, t_from: float, t_until: float, closed_loop: bool, looping: int = 0) -> None:
        self.counts, self.t_from, self.t_until = counts, t_from, t_until
        self.closed_loop, self.looping = closed_loop, looping

    def send(self, room: int) -> None:
        turn = self.turns[room]
        self.turns[room] = turn + 1
        member = self.members[2 * room + turn % 2]
        self.serial += 1
        cid = b"%d" % self.serial
        member.ws.send_text(b'{"type":"chat.send","id":"%s","order_id":"%s","client_id":"%s","text":"%s"}'
                            % (cid, self.order_ids[room], cid, TEXT))
        member._flush()
        now = time.monotonic()
        self.pending[cid] = Message(cid, room, member, now)
        counts = self.counts
        if counts is not None and self.t_from <= now < self.t_until:
            counts.sent += 1

    def heard(self, member: Member, data: bytes) -> None:
        message = self.pending.get(_between(data, CLIENT_ID))
        if message is None or message.sender is member:  # not ours (any more), or the sender's own copy
            return
        message.delivered = time.monotonic()
        if message.answered:
            self._done(message)

    def answered(self, data: bytes) -> None:
        cid = _between(data, REQUEST_ID)
        message = self.pending.get(cid)
        if message is None:
            return
        if data.startswith(ERROR):
            del self.pending[cid]
            counts = self.counts
            if counts is not None:
                counts.errors += 1
                counts.first_error = counts.first_error or data[:300].decode(errors="replace")
            return  # in a closed loop, that room stops: the run is not valid anyway
        message.answered = time.monotonic()
        if message.delivered:
            self._done(message)

    def _done(self, message: Message) -> None:
        del self.pending[message.cid]
        counts = self.counts
        if counts is None:
            return
        if self.closed_loop:
            if self.t_from <= message.delivered < self.t_until:
                counts.done += 1
                counts.latencies.append(message.delivered - message.sent)
                counts.replies.append(message.answered - message.sent)
            if message.room < self.looping and time.monotonic() < self.t_until:
                self.send(message.room)
        elif self.t_from <= message.sent < self.t_until:
            latency = message.delivered - message.sent
            counts.done += 1
            counts.latencies.append(latency)
            counts.replies.append(message.answered - message.sent)
            if latency > SLOW_S and len(counts.slow) < SLOW_KEPT:
                counts.slow.append((message.sent, latency))

    async def drained(self, counts: Counts) -> None:
        """Wait (boundedly) for the messages in flight; those of the window still due are late.
        Their replies and events, should they come after all, are ignored."""
        for _ in range(int(DRAIN_S / 0.02)):
            if not self.pending:
                break
            await asyncio.sleep(0.02)
        counts.late += sum(1 for m in self.pending.values() if self.t_from <= m.sent < self.t_until)
        self.pending.clear()
        self.counts, self.looping = None, 0
        lost = sum(1 for m in self.members if m.closed.done())
        if lost:
            counts.errors += lost
            counts.first_error = counts.first_error or f"{lost} sessions closed"


# -- the child process ---------------------------------------------------------------------------
async def _open_loop(traffic: Traffic, rate: float, start: float, t_from: float, t_until: float) -> Counts:
    """Message k leaves at start + k / rate (at most a tick late), whether or not earlier ones were
    answered; rooms take turns, and so do the members of each room."""
    counts = Counts()
    traffic.measure(counts, t_from, t_until, closed_loop=False)
    rooms, interval, k = len(traffic.order_ids), 1.0 / rate, 0
    await until(start)
    while True:
        now = time.monotonic()
        due = start + k * interval
        while due <= now and due < t_until:
            traffic.send(k % rooms)
            if due >= t_from:
                counts.lag.append(time.monotonic() - due)
            k += 1
            due = start + k * interval
        if due >= t_until:
            break
        await asyncio.sleep(max(TICK_S, due - now))
    await traffic.drained(counts)
    return counts


async def _closed_loop(traffic: Traffic, rooms: int, start: float, t_from: float, t_until: float) -> Counts:
    """Rooms 0 .. rooms - 1 each keep one message in flight: the next leaves once the previous one
    is done."""
    counts = Counts()
    traffic.measure(counts, t_from, t_until, closed_loop=True, looping=rooms)
    await until(start)
    for room in range(rooms):
        traffic.send(room)
    await until(t_until)
    await traffic.drained(counts)
    return counts


async def _drive(pipe: Connection, url: str, rooms: Sequence[Room]) -> None:
    queue = commands(pipe)
    traffic = Traffic([r.order_id for r in rooms])
    uri = parse_uri(url)
    traffic.members = [Member(uri, hello, traffic) for r in rooms for hello in r.hellos]
    try:
        opened, failed, first = await open_sessions(uri, traffic.members)
        pipe.send(("ready", len(opened), failed, first))
        while True:
            command = await queue.get()
            kind, args = command[0], command[1:]
            if kind == "rate":
                pipe.send(("measured", await _open_loop(traffic, *args)))
            elif kind == "loop":
                pipe.send(("measured", await _closed_loop(traffic, *args)))
            elif kind == "close":
                break
    finally:
        await close_all(traffic.members)
    pipe.send(("closed",))


# -- the parent's side ---------------------------------------------------------------------------
Start = Callable[[float, float, float], None]  # tell the children: start, window opens, window closes


class ChatClients(Children):
    """`with ChatClients(url, rooms, processes=2) as clients: clients.open(...); clients.rate(...)`."""

    def __init__(self, url: str, rooms: Sequence[Room], *, processes: int, cpus: set[int] | None = None) -> None:
        self.rooms = len(rooms)
        super().__init__("bench-chat-client", _drive, [(url, rooms[i::processes]) for i in range(processes)], cpus)

    def start_rate(self, rate: float) -> Start:
        """Open loop at `rate` messages/s over all rooms; `collect()` gets the counts."""
        share = rate / len(self.pipes)
        return lambda *moments: self._send(("rate", share, *moments))

    def start_loop(self, in_flight: int) -> Start:
        """Closed loop of `in_flight` rooms (one message in flight each), spread over the processes."""
        shares = [len(range(i, in_flight, len(self.pipes))) for i in range(len(self.pipes))]
        return lambda *moments: self._send([("loop", n, *moments) for n in shares])

    def collect(self, timeout: float) -> Counts:
        total = Counts()
        for reply in self._gather(timeout + DRAIN_S + 30, "measured"):
            total.add(reply[1])
        return total
