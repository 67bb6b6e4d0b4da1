"""The chat bench's baseline: bare asyncpg inserting chat messages like the gateway's into the same
table, one INSERT of one `chat_messages` row per statement (autocommit: one transaction each),
from `--in-flight` coroutines in a closed loop over a pool of `--pool-size` connections, on
uvloop. The pool is the gateway's own (`storage.db.connect_postgres`: a connection goes back to
it as it is, without asyncpg's default reset query). Each text is sealed as
the gateway seals it (AES-256-GCM, bound to room and sequence, into `body_enc`), under a key of
its own that is never stored. No order lookup, no room counter, no delivery: each coroutine
numbers its room's messages itself.

`--batch` writes the way the gateway's chat writer does (handlers/chat/writer.py): the coroutines
queue their rows and one writer task stores all that are queued, up to 500, in one transaction
with one multi-row INSERT (`unnest` of arrays, the gateway's statement), then answers them all.

    python -m bench.chat_inserts --database-url URL --rooms ROOMS.json --in-flight 200 --seq-from N

ROOMS.json: [[order id, consumer id, technician id], ...]; coroutine i writes in room i, its
members taking turns as senders. It prints `ready` once the pool is open, then reads
`start START FROM UNTIL` (time.monotonic(), which every process shares): it inserts from START
until UNTIL and prints one JSON line: the inserts done within [FROM, UNTIL) and their latencies.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import uvloop
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.chat_clients import TEXT
from storage.chat import body_context
from storage.crypto import HEADER, NONCE_LEN, VERSION
from storage.db import connect_postgres

MAX_BATCH = 500  # as handlers.chat.writer
INSERT_MANY = ("INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body_enc,"
               " attachments, system_code) SELECT o, q, s, r, c, k, b, string_to_array(a, ',')::uuid[], y"
               " FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],"
               " $8::text[], $9::text[])"
               " AS t(o, q, s, r, c, k, b, a, y)")
Row = tuple[uuid.UUID, int, str, str, str, str, bytes, str, None]
INSERT = ("INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body_enc, attachments,"
          " system_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")


async def main(args: argparse.Namespace) -> None:
    rooms = json.loads(Path(args.rooms).read_text())[:args.in_flight]
    if len(rooms) < args.in_flight:
        raise SystemExit(f"{len(rooms)} rooms for {args.in_flight} coroutines")
    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def sealed(room: uuid.UUID, seq: int) -> bytes:  # storage.crypto's envelope, as the gateway writes it
        nonce = os.urandom(NONCE_LEN)
        return HEADER.pack(VERSION, 0) + nonce + aead.encrypt(nonce, TEXT, body_context(room, seq).encode())

    pool = await connect_postgres(args.database_url, args.pool_size)  # exactly the gateway's pool
    try:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        _, begin, t_from, t_until = line.split()
        start, window_from, window_until = float(begin), float(t_from), float(t_until)
        latencies: list[float] = []
        errors: list[str] = []
        queue: list[tuple[Row, asyncio.Future[None]]] = []
        wake = asyncio.Event()

        async def batcher() -> None:  # the gateway's ChatWriter loop, without rooms, dedup or delivery
            nonlocal queue
            while True:
                await wake.wait()
                wake.clear()
                while queue:
                    batch, queue = queue[:MAX_BATCH], queue[MAX_BATCH:]
                    try:
                        async with pool.acquire() as conn, conn.transaction():
                            columns = zip(*(r for r, _ in batch), strict=True)
                            await conn.execute(INSERT_MANY, *(list(column) for column in columns))
                    except Exception as exc:
                        for _, done in batch:
                            done.set_exception(exc)
                        continue
                    for _, done in batch:
                        done.set_result(None)

        async def insert(row: Row) -> None:
            if not args.batch:
                await pool.execute(INSERT, *row[:7], [], None)
                return
            done = asyncio.get_running_loop().create_future()
            queue.append((row, done))
            wake.set()
            await done

        async def writer(order_id: str, consumer: str, technician: str) -> None:
            room = uuid.UUID(order_id)
            senders = ((consumer, "consumer"), (technician, "technician"))
            n = 0
            while time.monotonic() < window_until:
                sender, role = senders[n % 2]
                sent = time.monotonic()
                try:
                    await insert((room, args.seq_from + n, sender, role, f"b{args.seq_from + n}", "text",
                                  sealed(room, args.seq_from + n), "", None))
                except Exception as exc:  # counted: the run is not valid
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                done = time.monotonic()
                if window_from <= done < window_until:
                    latencies.append(done - sent)
                n += 1

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        batching = asyncio.create_task(batcher())
        await asyncio.gather(*(writer(*room) for room in rooms))
        batching.cancel()
        print(json.dumps({"inserted": len(latencies), "latencies": latencies, "errors": len(errors),
                          "first_error": errors[0] if errors else ""}), flush=True)
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--rooms", required=True, help="JSON: [[order id, consumer id, technician id], ...]")
    parser.add_argument("--in-flight", type=int, required=True, help="coroutines, one insert in flight each")
    parser.add_argument("--pool-size", type=int, default=10, help="as the gateway's DB_POOL_SIZE")
    parser.add_argument("--seq-from", type=int, required=True,
                        help="the first sequence number: above any the gateway or an earlier run used")
    parser.add_argument("--batch", action="store_true",
                        help="as the gateway's chat writer: all queued rows, up to 500, in one transaction")
    uvloop.run(main(parser.parse_args()))
