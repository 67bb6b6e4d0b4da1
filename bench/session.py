"""One client session of the load generator, on websockets' Sans-I/O protocol: bytes in, frames out,
and no task, future or lock per frame. (The asyncio client costs as much CPU per reply as the bare
server does to answer it, so the clients, not the server, would set the pace.)

After its hello a session does one thing at a time, which the child process sets it to: ping,
answer requests one by one, stream positions, call one operation in a closed loop. Replies (`result`,
`error`) go to that; pushed events only count when the process listens for `order.available`.
"""

import asyncio
import collections
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from hdrh.histogram import HdrHistogram
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import WebSocketURI

RESULT = b'{"type":"result"'  # both servers put the tag first, as msgspec encodes it
ERROR = b'{"type":"error"'
# The id of the order an `order.available` is about: msgspec writes the tag first, then the order,
# whose first field is its id (a UUID): no need to decode 600 bytes to find 36.
AVAILABLE = b'{"type":"order.available","order":{"id":"'
ORDER_ID = slice(len(AVAILABLE), len(AVAILABLE) + 36)
HIGHEST_US = 120_000_000  # paced histograms: 1 us to 120 s, 3 significant digits


def histogram() -> HdrHistogram:
    return HdrHistogram(1, HIGHEST_US, 3)


@dataclass
class Counts:
    """What the sessions of one client process counted in a measurement window."""

    replies: int = 0  # ping, loop: replies in the window; stream: updates confirmed by a marker's reply
    errors: int = 0  # error frames, lost sessions: the run is not valid
    sent: int = 0  # stream: location updates sent, markers included; paced: requests due in the window
    latencies: "array[float]" = field(default_factory=lambda: array("d"))  # loop: seconds per request in the window
    histogram: HdrHistogram | None = None  # paced: microseconds from when each request was due to its reply
    lag: HdrHistogram | None = None  # paced: microseconds from when each request was due to when it left
    finished: float = 0.0  # stream: when the last marker's reply came; paced: the last reply (time.monotonic)


@dataclass(frozen=True)
class Stream:
    """How a session streams `location.update`: from (lat, lng0) eastwards by `step` degrees per
    update, every `every`-th update carrying an id (a marker, which the server answers), at most
    `window` markers unanswered."""

    lat: float
    lng0: float
    step: float
    every: int
    window: int

    def lng(self, n: int) -> float:
        return self.lng0 + n * self.step


def device_time(wall: int) -> bytes:
    """A device's clock reading (Unix seconds) as its apps write it: ISO 8601 in UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall)).encode()


@dataclass(frozen=True)
class Walk:
    """A technician driving east for paced updates (`Session.start_paced`): update n is at (lat,
    lng0 + n * step), each one a `location.update` with an id and the fields the load generator's
    apps send (accuracy, heading, speed, the device's time)."""

    lat: float
    lng0: float
    step: float  # degrees of longitude per update
    speed: float  # metres per second the step makes at the pace

    def frame(self, n: int, device_time: bytes) -> bytes:
        return (b'{"type":"location.update","id":"u%d","lat":%.6f,"lng":%.6f,"accuracy":10.0,"heading":90.0,'
                b'"speed":%.1f,"device_time":"%s"}' % (n, self.lat, self.lng0 + n * self.step, self.speed, device_time))


class Session(asyncio.Protocol):
    def __init__(self, uri: WebSocketURI, hello: bytes, subprotocols: Sequence[Subprotocol] | None = None) -> None:
        self.ws = ClientProtocol(uri, subprotocols=subprotocols, max_size=1 << 20)
        self.hello = hello
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[bytes] = loop.create_future()  # the hello's reply
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.counts: Counts | None = None  # set while measuring
        # order id -> [sessions that received it, first, last (time.monotonic), bytes]; shared by a process's sessions
        self.heard: dict[bytes, list[float]] | None = None  # set while listening for `order.available`
        self.t_from = self.t_until = 0.0
        self._on_reply = self._ignore
        self._answers: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self.sent = 0  # ping: frames sent; stream: the number of the last update sent
        self.sent_at = 0.0  # loop: when the request left
        self.in_flight = False  # loop: a request is waiting for its reply
        self.stream: Stream | None = None
        self._markers: collections.deque[int] = collections.deque()
        self.confirmed = 0  # stream: updates up to this number are confirmed
        self.frame = b""  # loop, paced: the request
        self.walk: Walk | None = None  # paced: the updates' positions, instead of `frame`
        self._due: collections.deque[float] = collections.deque()  # paced: when each request in flight was due
        # order id -> when each `order.available` reached this process's sessions; shared like `heard`
        self.arrivals: dict[bytes, array[float]] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._message(cast(bytes, event.data))  # parsed frames hold bytes
            elif isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self._fail(ws.handshake_exc)
                else:
                    ws.send_text(self.hello)
        self._flush()  # also pongs and the closing handshake, which the protocol answers itself

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if self.counts is not None:
            self.counts.errors += 1
            self.counts = None
        self._markers.clear()
        self._due.clear()
        self.in_flight = False
        if not self.closed.done():
            self.closed.set_result(None)

    # -- what the session does ----------------------------------------------------------------
    def ping(self, window: int, t_from: float, t_until: float, counts: Counts) -> None:
        """Keep `window` pings in flight until t_until; count `result` replies from t_from."""
        self.counts, self.t_from, self.t_until, self._on_reply = counts, t_from, t_until, self._pinged
        for _ in range(window):
            self._send_ping()
        self._flush()

    def request(self, frame: bytes) -> asyncio.Future[bytes]:
        """Send a frame; the future gets the next reply (`result` or `error`), replies in order."""
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._answers.append(answer)
        self._on_reply = self._answer
        self.ws.send_text(frame)
        self._flush()
        return answer

    def start_stream(self, stream: Stream, t_from: float, t_until: float, counts: Counts) -> None:
        """Send position updates without waiting for anything but the markers' replies (which bound
        the frames in flight, as TCP's window does) until t_until; updates confirmed from t_from
        count. The stream ends on a marker, so its reply confirms the last update."""
        self.stream, self.counts, self.t_from, self.t_until = stream, counts, t_from, t_until
        self.sent = self.confirmed = 0
        self._markers.clear()
        self._on_reply = self._streamed
        self._stream_more(time.monotonic())

    def start_loop(self, frame: bytes, t_from: float, t_until: float, counts: Counts) -> None:
        """Send `frame`, wait for its reply, again, until t_until; latencies of requests sent from
        t_from and answered by t_until count."""
        self.frame, self.counts, self.t_from, self.t_until = frame, counts, t_from, t_until
        self._on_reply = self._looped
        self.sent_at, self.in_flight = time.monotonic(), True
        self.ws.send_text(frame)
        self._flush()

    def start_paced(self, frame: bytes, t_from: float, counts: Counts, walk: Walk | None = None) -> None:
        """From now on `send_paced(due)` sends `frame` (with a `walk`, the walk's next update); each
        reply to a request due from t_from counts, its latency from when it was due (not sent) into
        `counts.histogram`: an open loop, free of coordinated omission."""
        self.frame, self.walk, self.counts, self.t_from = frame, walk, counts, t_from
        self.sent = 0
        self._due.clear()
        self._on_reply = self._paced

    def send_paced(self, due: float, device_time: bytes = b"") -> None:
        self._due.append(due)
        if self.walk is None:
            self.ws.send_text(self.frame)
        else:
            self.sent += 1
            self.ws.send_text(self.walk.frame(self.sent, device_time))
        self._flush()

    @property
    def busy(self) -> bool:
        """Replies of a stream, a loop or paced requests are still to come."""
        return bool(self._markers) or self.in_flight or bool(self._due)

    def close(self) -> None:
        self.counts = None
        self.heard = None
        if self.transport is not None and not self.transport.is_closing() and self.ws.state is State.OPEN:
            self.ws.send_close()
            self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- frames in ----------------------------------------------------------------------------
    def _message(self, data: bytes) -> None:
        if not self.opened.done():
            self.opened.set_result(data)
        elif data.startswith(RESULT) or data.startswith(ERROR):
            self._on_reply(data)
        elif self.heard is not None and data.startswith(AVAILABLE):
            now = time.monotonic()
            key = bytes(data[ORDER_ID])
            if self.arrivals is not None:
                moments = self.arrivals.get(key)
                if moments is None:
                    moments = self.arrivals[key] = array("d")
                moments.append(now)
            seen = self.heard.get(key)
            if seen is None:
                self.heard[key] = [1, now, now, len(data)]
            else:
                seen[0] += 1
                seen[2] = now

    def _ignore(self, data: bytes) -> None:
        pass

    def _pinged(self, data: bytes) -> None:
        counts = self.counts
        if counts is None:
            return
        now = time.monotonic()
        if now >= self.t_until:
            self.counts = None
            return
        if not data.startswith(RESULT):
            counts.errors += 1
        elif now >= self.t_from:
            counts.replies += 1
        self._send_ping()

    def _answer(self, data: bytes) -> None:
        if self._answers:
            answer = self._answers.popleft()
            if not answer.done():
                answer.set_result(data)

    def _paced(self, data: bytes) -> None:
        counts = self.counts
        if counts is None or not self._due:
            return
        due = self._due.popleft()
        if not data.startswith(RESULT):
            counts.errors += 1
        elif due >= self.t_from and counts.histogram is not None:
            now = time.monotonic()
            counts.replies += 1
            counts.finished = max(counts.finished, now)
            counts.histogram.record_value(max(1, min(HIGHEST_US, int((now - due) * 1e6))))

    def _streamed(self, data: bytes) -> None:
        counts = self.counts
        if counts is None or not self._markers:
            return
        now = time.monotonic()
        marker = self._markers.popleft()
        if not data.startswith(RESULT):
            counts.errors += 1
        elif self.t_from <= now < self.t_until:
            counts.replies += marker - self.confirmed
        self.confirmed = marker
        if not self._markers:
            counts.finished = max(counts.finished, now)
        self._stream_more(now)

    def _looped(self, data: bytes) -> None:
        self.in_flight = False
        counts = self.counts
        if counts is None:
            return
        now = time.monotonic()
        if not data.startswith(RESULT):
            counts.errors += 1
        elif self.sent_at >= self.t_from and now < self.t_until:
            counts.replies += 1
            counts.latencies.append(now - self.sent_at)
        if now >= self.t_until:
            self.counts = None
            return
        self.sent_at, self.in_flight = now, True
        self.ws.send_text(self.frame)
        self._flush()

    # -- frames out ---------------------------------------------------------------------------
    def _send_ping(self) -> None:
        self.sent += 1
        self.ws.send_text(b'{"type":"ping","id":"%d"}' % self.sent)

    def _stream_more(self, now: float) -> None:
        stream, counts = self.stream, self.counts
        if stream is None or counts is None or now >= self.t_until:
            return
        send, n = self.ws.send_text, self.sent
        limit = self.confirmed + stream.window * stream.every  # a multiple of `every`: ends on a marker
        lat = b"%.5f" % stream.lat
        while n < limit:
            n += 1
            if n % stream.every:
                send(b'{"type":"location.update","lat":%s,"lng":%.5f}' % (lat, stream.lng(n)))
            else:
                send(b'{"type":"location.update","id":"%d","lat":%s,"lng":%.5f}' % (n, lat, stream.lng(n)))
                self._markers.append(n)
        counts.sent += n - self.sent
        self.sent = n
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        chunks = self.ws.data_to_send()
        if not chunks:
            return
        if chunks[-1]:
            transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))  # one write, not one per frame
            return
        if len(chunks) > 1:
            transport.write(b"".join(chunks[:-1]))
        if transport.can_write_eof():  # the protocol is done: half-close, as websockets does
            transport.write_eof()

    def _fail(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: a session that fails to open is counted, not logged
        while self._answers:
            answer = self._answers.popleft()
            if not answer.done():
                answer.set_exception(exc)
                answer.exception()
