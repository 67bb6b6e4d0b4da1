"""The baseline server: bare websockets on uvloop with the gateway's transport settings, decoding
each frame with msgspec and answering it with a small Struct when it has an `id` (frames without
one are a stream, as the gateway's `location.update`). Nothing else: no sessions, no auth. Its
garbage collector is kept as the gateway keeps its own (`gateway.app.settle_garbage_collector`:
long-lived objects frozen every second, the young generation collected every 20,000 allocations),
so that at thousands of sessions neither side's tail is set by full collections the other avoids.

Replies are written the way the gateway writes: a ready-made frame straight to the transport while
its buffer is under the high-water mark (`gateway.wire.write_now`), `await ws.send()` only
otherwise. `--write send` answers every frame with `await ws.send()` instead: the baseline as it was
before, kept as a second reference.

One operation of its own, for the fan-out baseline: `{"type": "broadcast", "id": ..., "event": {...}}`
sends the event, encoded once, to every other open connection with websockets' `broadcast()`,
then answers.

    python -m bench.bare --port 8765 [--write transport|send]
"""

import argparse
import asyncio
import signal

import msgspec
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.app import settle_garbage_collector
from gateway.config import Config
from gateway.wire import write_now


class Reply(msgspec.Struct, tag="result", tag_field="type"):
    id: str | None = None


encode = msgspec.json.Encoder().encode
decode = msgspec.json.decode


async def answer(ws: ServerConnection, direct: bool) -> None:
    recv, send = ws.recv, ws.send
    try:
        while True:
            frame = decode(await recv(decode=False))
            request_id = frame.get("id") if isinstance(frame, dict) else None
            if not isinstance(request_id, str):
                continue
            if frame.get("type") == "broadcast":
                broadcast(ws.server.connections - {ws}, encode(frame.get("event")), text=True)
            reply = encode(Reply(id=request_id))
            if not (direct and write_now(ws, reply, text=True)):
                await send(reply, text=True)
    except ConnectionClosed:
        pass


def healthz(connection: ServerConnection, request: Request) -> Response | None:
    """The same readiness probe as the gateway's, so one start-up routine serves both."""
    if request.path.split("?", 1)[0] == "/healthz":
        body = b'{"status":"ok"}'
        return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))]), body)
    return None


async def main(host: str, port: int, write: str) -> None:
    defaults = Config()  # the transport settings Gateway.start uses (keep in step), from the same defaults
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    direct = write == "transport"

    async def handler(ws: ServerConnection) -> None:
        await answer(ws, direct)

    async with serve(handler, host, port, process_request=healthz, compression=None,
                     max_size=defaults.max_frame_bytes * 4,
                     ping_interval=defaults.ping_interval_s, ping_timeout=defaults.ping_interval_s,
                     close_timeout=defaults.ping_interval_s):
        settling = asyncio.create_task(settle_garbage_collector())  # as the gateway's
        await stop.wait()
        settling.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--write", choices=("transport", "send"), default="transport",
                        help="how replies are written: as the gateway does (default), or each with await ws.send()")
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port, args.write))
