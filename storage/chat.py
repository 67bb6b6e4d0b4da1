"""Chat rooms: messages with a gap-free sequence per room, idempotent by the sender's client id."""

import uuid

import asyncpg

COLUMNS = "order_id, seq, sender_id, sender_role, client_id, kind, body, attachments, system_code, created_at"

# One statement: a retry returns the stored original; otherwise the room's counter moves by one
# (its row lock serializes senders) and the message takes that number. Two identical retries at
# once: the loser trips the unique index and its statement rolls back whole, counter included.
SEND = f"""
WITH existing AS (
    SELECT {COLUMNS} FROM chat_messages WHERE order_id = $1 AND sender_id = $2 AND client_id = $3),
room AS (
    INSERT INTO chat_rooms AS r (order_id, last_seq) SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM existing)
    ON CONFLICT (order_id) DO UPDATE SET last_seq = r.last_seq + 1 RETURNING last_seq),
stored AS (
    INSERT INTO chat_messages (order_id, seq, sender_id, sender_role, client_id, kind, body, attachments,
                               system_code)
    SELECT $1, last_seq, $2, $4, $3, $5, $6, $7, $8 FROM room RETURNING {COLUMNS})
SELECT *, false AS duplicate FROM stored UNION ALL SELECT *, true AS duplicate FROM existing
"""


async def send(conn: asyncpg.Connection, order_id: uuid.UUID, sender_id: str, sender_role: str,
               client_id: str | None, kind: str, body: str | None, attachments: list[uuid.UUID],
               system_code: str | None = None) -> asyncpg.Record:
    """Store a message (or find the one this client id stored); the record has `duplicate`.

    Run it in a transaction: the room stays locked until the commit, so what the caller does
    before committing (delivering the message) happens in sequence order across processes.
    `asyncpg.UniqueViolationError` means an identical retry won a race: try again, it finds it."""
    row: asyncpg.Record = await conn.fetchrow(SEND, order_id, sender_id, client_id, sender_role, kind, body,
                                              attachments, system_code)
    return row


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
    """Per room, up to `limit + 1` messages after its position, in one query."""
    rows: list[asyncpg.Record] = await db.fetch(
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
        f" m.order_id, m.seq, m.sender_id, m.sender_role, m.client_id, m.kind, m.body, m.attachments,"
        f" m.system_code, m.created_at"
        f" FROM orders o LEFT JOIN chat_rooms r ON r.order_id = o.id"
        f" LEFT JOIN chat_reads rd ON rd.order_id = o.id AND rd.user_id = $1"
        f" LEFT JOIN chat_messages m ON m.order_id = o.id AND m.seq = r.last_seq"
        f" WHERE {member} ORDER BY coalesce(m.created_at, o.created_at) DESC LIMIT 200", user_id)
    return rows
