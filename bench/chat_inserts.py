"""The chat bench's baseline: bare asyncpg inserting chat messages like the gateway's into the same
table, one INSERT of one `chat_messages` row per statement (autocommit: one transaction each),
from `--in-flight` coroutines in a closed loop over a pool of `--pool-size` connections, on
uvloop. The pool is made with the arguments of the gateway's (`storage.db.connect_postgres`),
except that a connection goes back to it as it is: asyncpg's default runs a reset query on every
release, a second round trip per insert (`--reset` keeps that default). Each text is sealed as
the gateway seals it (AES-256-GCM, bound to room and sequence, into `body_enc`), under a key of
its own that is never stored. No order lookup, no room counter, no delivery: each coroutine
numbers its room's messages itself.

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

import asyncpg
import uvloop
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.chat_clients import TEXT
from storage.chat import body_context
from storage.crypto import HEADER, NONCE_LEN, VERSION
from storage.db import connect_postgres

INSERT = ("INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body_enc, attachments,"
          " system_code) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")


async def _keep(conn: asyncpg.Connection) -> None:
    """A pool's `reset`: nothing (the coroutines leave no session state behind)."""


async def main(args: argparse.Namespace) -> None:
    rooms = json.loads(Path(args.rooms).read_text())[:args.in_flight]
    if len(rooms) < args.in_flight:
        raise SystemExit(f"{len(rooms)} rooms for {args.in_flight} coroutines")
    aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def sealed(room: uuid.UUID, seq: int) -> bytes:  # storage.crypto's envelope, as the gateway writes it
        nonce = os.urandom(NONCE_LEN)
        return HEADER.pack(VERSION, 0) + nonce + aead.encrypt(nonce, TEXT, body_context(room, seq).encode())

    if args.reset:
        pool = await connect_postgres(args.database_url, args.pool_size)  # exactly the gateway's pool
    else:  # the same, but a connection goes back to the pool as it is: no reset query, no round trip
        pool = await asyncpg.create_pool(args.database_url, min_size=min(2, args.pool_size), max_size=args.pool_size,
                                         command_timeout=30, reset=_keep)
    try:
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        _, begin, t_from, t_until = line.split()
        start, window_from, window_until = float(begin), float(t_from), float(t_until)
        latencies: list[float] = []
        errors: list[str] = []

        async def writer(order_id: str, consumer: str, technician: str) -> None:
            room = uuid.UUID(order_id)
            senders = ((consumer, "consumer"), (technician, "technician"))
            n = 0
            while time.monotonic() < window_until:
                sender, role = senders[n % 2]
                sent = time.monotonic()
                try:
                    await pool.execute(INSERT, room, args.seq_from + n, sender, role, f"b{args.seq_from + n}", "text",
                                       sealed(room, args.seq_from + n), [], None)
                except Exception as exc:  # counted: the run is not valid
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                done = time.monotonic()
                if window_from <= done < window_until:
                    latencies.append(done - sent)
                n += 1

        await asyncio.sleep(max(0.0, start - time.monotonic()))
        await asyncio.gather(*(writer(*room) for room in rooms))
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
    parser.add_argument("--reset", action="store_true",
                        help="asyncpg's default: a connection going back to the pool is reset (one more query)")
    uvloop.run(main(parser.parse_args()))
