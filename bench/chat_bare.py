"""The chat bench's like-for-like baseline: a bare chat server, in this one file, doing for each
`chat.send` the work the gateway does, written plainly.

websockets on uvloop with the gateway's transport settings and its write path (as bench.bare: a
ready-made frame straight to the transport); an asyncpg pool made as the gateway's
(storage.db.connect_postgres); the gateway's field cipher with its keys (the gateway's DATA_DIR and
secret). A session's first frame is `auth`, its token verified as the gateway verifies it; then
each `chat.send` is decoded into the protocol's Struct (its bounds checked as the gateway's codec
checks them), queued, and one writer task stores all that are queued, up to 500, in one
transaction: the rooms' members read from `orders` (a sender who is not one gets an error), the
messages stored with the gateway's own statements (storage.chat.send_many: idempotent by client id,
the room's next gap-free sequence numbers, the text sealed bound to room and sequence number), each
fresh one delivered as `chat.message` to every session here of its room's members (the sender's
included) before the commit; after the commit the senders get their `result` with the stored message.

Long-lived objects (the sessions) are moved out of the garbage collector's way as the gateway
moves them (gateway.app.settle_garbage_collector). Not done here that the gateway does per
message: Redis (delivery to the sessions other processes hold, the presence lookup for pushes to
offline members), attachments, per-session state (rate limit, roles), metrics and latency
histograms, and every other operation.

    python -m bench.chat_bare --port 8766 --database-url URL --data-dir DIR --secret S [--pool-size 10]
"""

import argparse
import asyncio
import signal
from pathlib import Path

import asyncpg
import msgspec
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.bare import healthz
from gateway.app import settle_garbage_collector, start_cipher, token_issuer
from gateway.config import Config
from gateway.wire import write_now
from handlers.errors import GatewayError
from protocol.auth import Auth
from protocol.chat import ChatMessage, ChatMessageEvent, ChatSend, ChatSent
from protocol.frames import Empty, Error
from storage.chat import Draft, send_many
from storage.crypto import FieldCipher
from storage.db import connect_postgres, parse_uuid

MAX_BATCH = 500  # as handlers.chat.writer
MEMBERS = "SELECT id, consumer_id, technician_id FROM orders WHERE id = ANY($1::uuid[])"
AUTH = msgspec.json.Decoder(Auth)
SEND = msgspec.json.Decoder(ChatSend)
encode = msgspec.json.Encoder().encode
Stored = tuple[ChatMessage, bool] | None  # None: the sender is not a member of the room
SENDING: set[asyncio.Future[None]] = set()  # frames a slow reader's flow control holds back


def error(request_id: str | None, code: str, message: str) -> bytes:
    return encode(Error(id=request_id, code=code, message=message))


class ChatServer:
    def __init__(self, pool: asyncpg.Pool, cipher: FieldCipher, config: Config) -> None:
        self.pool, self.cipher, self.issuer = pool, cipher, token_issuer(config, create_secret=False)
        self.sessions: dict[str, set[ServerConnection]] = {}  # user id -> their sessions here
        self.queue: list[tuple[Draft, asyncio.Future[Stored]]] = []
        self.wake = asyncio.Event()

    async def connection(self, ws: ServerConnection) -> None:
        try:
            hello = AUTH.decode(await ws.recv(decode=False))
            identity = self.issuer.verify(hello.token)
        except (msgspec.DecodeError, GatewayError, ConnectionClosed):
            await ws.close(1008, "authentication failed")
            return
        user = identity.user_id
        self.sessions.setdefault(user, set()).add(ws)
        send(ws, encode(Empty(id=hello.id)))
        try:
            while True:
                send(ws, await self.answer(await ws.recv(decode=False), user, identity.role))
        except ConnectionClosed:
            pass
        finally:
            mine = self.sessions.get(user)
            if mine is not None:
                mine.discard(ws)
                if not mine:
                    del self.sessions[user]

    async def answer(self, data: bytes, user: str, role: str) -> bytes:
        try:
            req = SEND.decode(data)
        except msgspec.DecodeError as exc:
            return error(None, "bad_request", str(exc))
        try:
            order_id = parse_uuid(req.order_id)
        except ValueError:
            return error(req.id, "not_found", "No such order.")
        if not (req.text and req.text.strip()) or req.attachments:  # attachments: not in this baseline
            return error(req.id, "bad_request", "A message needs text.")
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.queue.append((Draft(order_id, user, role, req.client_id, "text", req.text), done))
        self.wake.set()
        stored = await done
        if stored is None:
            return error(req.id, "not_found", "No such order.")
        return encode(ChatSent(id=req.id, message=stored[0], duplicate=stored[1]))

    async def writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                try:
                    results = await self.write([draft for draft, _ in batch])
                except Exception as exc:  # nothing was committed: every sender gets the error
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_, done), result in zip(batch, results, strict=True):
                    if not done.done():
                        done.set_result(result)

    async def write(self, drafts: list[Draft]) -> list[Stored]:
        async with self.pool.acquire() as conn, conn.transaction():
            rooms = {row["id"]: (row["consumer_id"], row["technician_id"])
                     for row in await conn.fetch(MEMBERS, list({d.order_id for d in drafts}))}
            taken = [d for d in drafts if d.sender_id in rooms.get(d.order_id, ())]
            results: list[Stored] = []
            for draft, (row, duplicate) in zip(taken, await send_many(conn, self.cipher, taken), strict=True):
                message = ChatMessage(order_id=str(row["order_id"]), seq=row["seq"], sender_id=row["sender_id"],
                                      sender_role=row["sender_role"], kind=row["kind"], text=draft.body,
                                      client_id=row["client_id"], sent_at=row["created_at"])
                if not duplicate:  # delivered before the commit: the room's rows stay locked, in sequence order
                    frame = encode(ChatMessageEvent(message=message))
                    for member in rooms[draft.order_id]:
                        for ws in self.sessions.get(member, ()):
                            send(ws, frame)
                results.append((message, duplicate))
        stored = iter(results)
        return [next(stored) if d.sender_id in rooms.get(d.order_id, ()) else None for d in drafts]


def send(ws: ServerConnection, frame: bytes) -> None:
    """As the gateway writes: straight to the transport while it keeps up (always, in the bench)."""
    if not write_now(ws, frame, text=True):
        task = asyncio.ensure_future(ws.send(frame, text=True))
        SENDING.add(task)
        task.add_done_callback(SENDING.discard)


async def main(args: argparse.Namespace) -> None:
    config = Config(data_dir=Path(args.data_dir), secret=args.secret)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await connect_postgres(args.database_url, args.pool_size)
    try:
        server = ChatServer(pool, await start_cipher(config, pool), config)
        writer = asyncio.create_task(server.writer())
        settling = asyncio.create_task(settle_garbage_collector())  # as the gateway keeps sessions out of the way
        async with serve(server.connection, args.host, args.port, process_request=healthz, compression=None,
                         max_size=config.max_frame_bytes * 4, ping_interval=config.ping_interval_s,
                         ping_timeout=config.ping_interval_s, close_timeout=config.ping_interval_s):
            await stop.wait()
        writer.cancel()
        settling.cancel()
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--data-dir", required=True, help="the gateway's: its keys are beside it")
    parser.add_argument("--secret", required=True, help="the gateway's: the tokens it minted verify here")
    parser.add_argument("--pool-size", type=int, default=10, help="as the gateway's DB_POOL_SIZE")
    uvloop.run(main(parser.parse_args()))
