"""Chat rooms: messages with a gap-free sequence per room, idempotent by the sender's client id.
Texts are sealed (storage.crypto) bound to their room and sequence number, known before the insert."""

import uuid
from collections import Counter
from dataclasses import dataclass

import asyncpg

from storage.crypto import FieldCipher

COLUMNS = ("order_id, seq, sender_id, sender_role, client_id, kind, body, body_enc, attachments, system_code,"
           " created_at, hidden_at")


def body_context(order_id: uuid.UUID, seq: int) -> str:
    return f"chat_messages.body:{order_id}:{seq}"


async def body(cipher: FieldCipher, row: asyncpg.Record) -> str | None:
    """A message's text (from `body` for rows stored before encryption, until the backfill)."""
    return await cipher.reveal(row["body_enc"], row["body"], body_context(row["order_id"], row["seq"]))

@dataclass(frozen=True, slots=True)
class Draft:
    """A message to store."""

    order_id: uuid.UUID
    sender_id: str
    sender_role: str
    client_id: str | None
    kind: str
    body: str | None = None
    attachments: tuple[uuid.UUID, ...] = ()
    system_code: str | None = None

    @property
    def key(self) -> tuple[uuid.UUID, str, str] | None:
        return (self.order_id, self.sender_id, self.client_id) if self.client_id else None


async def send_many(conn: asyncpg.Connection, cipher: FieldCipher,
                    drafts: list[Draft]) -> list[tuple[asyncpg.Record, bool]]:
    """Store many messages in three statements (in the caller's transaction): (row, duplicate) per
    draft, in order. Rooms are locked in id order, so concurrent batches cannot deadlock; the
    locks hold until the commit, so what the caller does before committing (delivering) happens
    in sequence order. A `UniqueViolationError` means another process stored one of them first."""
    keyed = [(d, d.key) for d in drafts]  # the property once per draft
    keys = [k for _, k in keyed if k]
    stored: dict[tuple[uuid.UUID, str, str], tuple[asyncpg.Record, bool]] = {}
    if keys:
        for row in await conn.fetch(
                f"SELECT {COLUMNS} FROM chat_messages m JOIN unnest($1::uuid[], $2::text[], $3::text[])"
                " AS k(o, s, c) ON m.order_id = k.o AND m.sender_id = k.s AND m.client_id = k.c",
                [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]):
            stored[(row["order_id"], row["sender_id"], row["client_id"])] = (row, True)
    Key = tuple[uuid.UUID, str, str]
    plan: list[tuple[Key | None, int]] = []  # per draft: (key, -1) already stored; (None, i) fresh[i]; (key, i) again
    fresh: list[Draft] = []
    claimed: dict[tuple[uuid.UUID, str, str], int] = {}
    for d, key in keyed:  # a client id twice in one batch: the first is stored, the second is its duplicate
        if key is not None and key in stored:
            plan.append((key, -1))
        elif key is not None and key in claimed:
            plan.append((key, claimed[key]))
        else:
            if key is not None:
                claimed[key] = len(fresh)
            plan.append((None, len(fresh)))
            fresh.append(d)
    counts = Counter(d.order_id for d in fresh)
    rooms = sorted(counts)
    firsts = {r["order_id"]: r["last_seq"] - counts[r["order_id"]] + 1 for r in await conn.fetch(
        "INSERT INTO chat_rooms AS r (order_id, last_seq) SELECT * FROM unnest($1::uuid[], $2::bigint[])"
        " ON CONFLICT (order_id) DO UPDATE SET last_seq = r.last_seq + EXCLUDED.last_seq RETURNING *",
        rooms, [counts[r] for r in rooms])} if rooms else {}
    seqs = []
    for d in fresh:
        seqs.append(firsts[d.order_id])
        firsts[d.order_id] += 1
    by_seq = {(r["order_id"], r["seq"]): r for r in await conn.fetch(
        "INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body_enc, attachments,"
        " system_code) SELECT o, q, s, r, c, k, b, string_to_array(a, ',')::uuid[], y FROM unnest($1::uuid[],"
        " $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[])"
        f" AS t(o, q, s, r, c, k, b, a, y) RETURNING {COLUMNS}",
        [d.order_id for d in fresh], seqs, [d.sender_id for d in fresh], [d.sender_role for d in fresh],
        [d.client_id for d in fresh], [d.kind for d in fresh],
        [None if d.body is None else cipher.encrypt(d.body, body_context(d.order_id, q))
         for d, q in zip(fresh, seqs, strict=True)],
        [",".join(map(str, d.attachments)) for d in fresh], [d.system_code for d in fresh])} if fresh else {}
    rows = [by_seq[(d.order_id, seq)] for d, seq in zip(fresh, seqs, strict=True)]
    return [stored[key] if key is not None and i < 0 else (rows[i], key is not None) for key, i in plan]


async def page(db: asyncpg.Pool, order_id: uuid.UUID, *, before: int | None, after: int | None,
               limit: int) -> list[asyncpg.Record]:
    """`limit + 1` messages in sequence order: after `after`, or the newest before `before`."""
    if after is not None:
        rows: list[asyncpg.Record] = await db.fetch(
            f"SELECT {COLUMNS} FROM chat_messages WHERE order_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            order_id, after, limit + 1)
        return rows
    rows = await db.fetch(
        f"SELECT {COLUMNS} FROM chat_messages WHERE order_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        order_id, before if before is not None else 2**62, limit + 1)
    return rows[::-1]


async def missed(db: asyncpg.Pool, rooms: dict[uuid.UUID, int], limit: int) -> list[asyncpg.Record]:
    """Per room, up to `limit + 1` messages after its position, in one query, once no batch storing
    messages in those rooms is still open. A batch delivers its messages before it commits (handlers.chat.writer),
    to the sessions it finds then: a session that signed in after that and read its rooms before the commit would
    have neither the event nor the message. Waiting on the rooms' locks (in id order, as the batches take
    them) closes that window: the read after the wait sees the batch committed. Every room's row exists from
    its order's creation on (storage.orders.create), so a batch holding the room's very first message holds a
    lock on a committed row too."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM chat_rooms WHERE order_id = ANY($1::uuid[]) ORDER BY order_id FOR SHARE",
                           list(rooms))
        rows: list[asyncpg.Record] = await conn.fetch(
            f"SELECT m.* FROM unnest($1::uuid[], $2::bigint[]) AS p(order_id, after_seq),"
            f" LATERAL (SELECT {COLUMNS} FROM chat_messages c WHERE c.order_id = p.order_id AND c.seq > p.after_seq"
            f" ORDER BY c.seq LIMIT $3) m ORDER BY m.order_id, m.seq",
            list(rooms), list(rooms.values()), limit + 1)
    return rows


async def mark_read(db: asyncpg.Pool, order_id: uuid.UUID, user_id: str, seq: int) -> int:
    """Move the member's read position forward (never back, never past the last message)."""
    value: int = await db.fetchval(
        "INSERT INTO chat_reads AS r (order_id, user_id, read_seq)"
        " SELECT $1, $2, LEAST($3, coalesce((SELECT last_seq FROM chat_rooms WHERE order_id = $1), 0))"
        " ON CONFLICT (order_id, user_id) DO UPDATE SET read_seq = GREATEST(r.read_seq, EXCLUDED.read_seq)"
        " RETURNING read_seq", order_id, user_id, seq)
    return value


async def rooms_of(db: asyncpg.Pool, user_id: str, role: str) -> list[asyncpg.Record]:
    """The member's rooms with their state, last message and unread count, most recent first."""
    member = "o.consumer_id = $1" if role == "consumer" else "o.technician_id = $1"
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT o.id AS room, o.state, coalesce(r.last_seq, 0) AS last_seq, coalesce(rd.read_seq, 0) AS read_seq,"
        f" (SELECT count(*) FROM chat_messages c WHERE c.order_id = o.id AND c.seq > coalesce(rd.read_seq, 0)"
        f"  AND c.sender_id <> $1) AS unread,"
        f" m.order_id, m.seq, m.sender_id, m.sender_role, m.client_id, m.kind, m.body, m.body_enc, m.attachments,"
        f" m.system_code, m.created_at, m.hidden_at"
        f" FROM orders o LEFT JOIN chat_rooms r ON r.order_id = o.id"
        f" LEFT JOIN chat_reads rd ON rd.order_id = o.id AND rd.user_id = $1"
        f" LEFT JOIN chat_messages m ON m.order_id = o.id AND m.seq = r.last_seq"
        f" WHERE {member} ORDER BY coalesce(m.created_at, o.created_at) DESC LIMIT 200", user_id)
    return rows


async def hide(db: asyncpg.Pool, order_id: uuid.UUID, seq: int, admin: str,
               reason: str) -> tuple[asyncpg.Record, bool] | None:
    """Hide a person's message (the text stays, sealed, for audit): (row, newly hidden), or None
    when the room has no such message. A system message is returned unchanged (never hidden)."""
    row = await db.fetchrow(
        "WITH hidden AS (UPDATE chat_messages SET hidden_at = now(), hidden_by = $3, hidden_reason = $4"
        f" WHERE order_id = $1 AND seq = $2 AND kind = 'text' AND hidden_at IS NULL RETURNING {COLUMNS})"
        f" SELECT *, true AS fresh FROM hidden UNION ALL"
        f" SELECT {COLUMNS}, false FROM chat_messages WHERE order_id = $1 AND seq = $2"
        " AND NOT EXISTS (SELECT 1 FROM hidden)", order_id, seq, admin, reason)
    return None if row is None else (row, row["fresh"])
