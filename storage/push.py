"""Device tokens, the push outbox and Redis presence (is a user connected anywhere, and on which
gateway processes?). The outbox's texts are sealed (storage.crypto), bound to the job's dedupe key."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from storage import lifecycle
from storage.crypto import FieldCipher

log = logging.getLogger(__name__)

NODES = "presence:nodes"  # ZSET gateway process -> unix time of its last heartbeat
NODE_TTL_S = 30.0  # a process that has not beaten for this long is dead: its users do not count (PRESENCE_TTL_S)
FLUSH_CHUNK = 1000  # users per presence script: others wait about 8 ms, 40-58 ms behind 15,000 in one (bench.presence)


DIRECTORY = "presence:where"  # HASH user -> the processes holding a session of theirs (node ids, space-separated)


def node_key(node: str) -> str:
    return "presence:" + node  # SET of the users with a live session on that process


# The directory is read-modify-written by every node at once (a user's phone on one node, their
# tablet on another), so its updates are Lua scripts: atomic, and one round trip per flush.
_DROP = """
local function drop(user, node)
  local where = redis.call('HGET', KEYS[1], user)
  if not where then return end
  if where == node then redis.call('HDEL', KEYS[1], user) return end
  local rest = {}
  for other in string.gmatch(where, '%S+') do
    if other ~= node then rest[#rest + 1] = other end
  end
  if #rest == 0 then redis.call('HDEL', KEYS[1], user)
  else redis.call('HSET', KEYS[1], user, table.concat(rest, ' ')) end
end
"""
# KEYS: the directory, the node's set. ARGV: the node, how many joined, the users who joined, those who left.
# (A user on no other node, the common case, costs one HSETNX or one HGET and HDEL; the set is
# written 4,000 users a call, within what Lua's unpack takes.)
_UPDATE = _DROP + """
local node, joined = ARGV[1], tonumber(ARGV[2])
for i = 3, 2 + joined do
  local user = ARGV[i]
  if redis.call('HSETNX', KEYS[1], user, node) == 0 then
    local where = redis.call('HGET', KEYS[1], user)
    if not string.find(' ' .. where .. ' ', ' ' .. node .. ' ', 1, true) then
      redis.call('HSET', KEYS[1], user, where .. ' ' .. node)
    end
  end
end
for i = 3, 2 + joined, 4000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 3999, 2 + joined)))
end
for i = 3 + joined, #ARGV do drop(ARGV[i], node) end
for i = 3 + joined, #ARGV, 4000 do
  redis.call('SREM', KEYS[2], unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
"""
# KEYS: the directory, the node's set. ARGV: the node, how many. That many of its users leave its
# set and the directory; returns how many did (fewer: the set is gone).
_FORGET = _DROP + """
local users = redis.call('SPOP', KEYS[2], tonumber(ARGV[2]))
for _, user in ipairs(users) do drop(user, ARGV[1]) end
return #users
"""


class Presence:
    """Which users have a live session on this gateway process, kept in Redis for every process
    to ask: this process's set, and its id in the directory entry of each of those users (where
    delivery routes their events). Joins and leaves are coalesced into one script per flush (a
    thousand sessions closing at once are one round trip, not a thousand); liveness is one
    heartbeat per process."""

    def __init__(self, redis: aioredis.Redis, node: str, ttl_s: float = NODE_TTL_S, chunk: int = FLUSH_CHUNK) -> None:
        self._redis = redis
        self.node = node
        self.chunk = chunk
        self.ttl_s = ttl_s  # beats every third of it: a live node is never taken for dead
        self._changes: dict[str, bool] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._update = redis.register_script(_UPDATE)
        self._forget = redis.register_script(_FORGET)

    async def start(self) -> None:
        await self._forget_all(self.node)
        await self._beat()
        self._tasks = [asyncio.create_task(self._flush(), name="presence"),
                       asyncio.create_task(self._heartbeat(), name="presence-heartbeat")]

    async def stop(self) -> None:
        await lifecycle.stop(self._tasks)
        with contextlib.suppress(aioredis.RedisError, OSError):
            await self._redis.zrem(NODES, self.node)
            await self._forget_all(self.node)

    def set(self, user_id: str, online: bool) -> None:
        self._changes[user_id] = online
        self._wake.set()

    async def settled(self) -> None:
        """Return once every change made so far is in Redis."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        await waiter

    async def restore(self, users: Iterable[str]) -> None:
        """After a lost Redis connection (Redis may have restarted empty): the users of this
        process's sessions back in its set and the directory, then its heartbeat, which tells
        delivery the directory holds this process again (`locate`)."""
        for user in users:
            self.set(user, True)
        await self.settled()
        await self._beat()

    async def _beat(self) -> None:
        """Say this node lives; forget nodes dead for ten TTLs (killed: no `stop` removed their set)."""
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(NODES, {self.node: now})
        pipe.zrangebyscore(NODES, "-inf", now - 10 * self.ttl_s)
        _, dead = await pipe.execute()
        if dead:
            await self._redis.zrem(NODES, *dead)
            for gone in dead:  # one script each: a node's users may be many, the dead are few
                await self._forget_all(gone.decode())
            log.info("presence: forgot %d nodes dead for over %g s", len(dead), 10 * self.ttl_s)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self._beat()
            except (aioredis.RedisError, OSError) as exc:
                if lifecycle.cancelling():
                    raise
                log.warning("presence heartbeat failed: %r", exc)

    async def _forget_all(self, node: str) -> None:
        """The node's users out of the directory and its set gone, `chunk` users per script."""
        while await self._forget(keys=[DIRECTORY, node_key(node)], args=[node, self.chunk]) >= self.chunk:
            pass

    async def _write(self, changes: dict[str, bool]) -> None:
        """The changes in scripts of at most `chunk` users each, one after the other: Redis runs a
        script to its end before any other client's command, so 15,000 sign-ins in one script
        would hold every other node's commands for its whole run. A chunk written twice (its
        connection failed after the script ran) changes nothing the second time."""
        items = list(changes.items())
        for start in range(0, len(items), self.chunk):
            part = items[start:start + self.chunk]
            joined = [u for u, online in part if online]
            left = [u for u, online in part if not online]
            await self._update(keys=[DIRECTORY, node_key(self.node)], args=[self.node, len(joined), *joined, *left])

    async def _flush(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            changes, self._changes = self._changes, {}
            waiters, self._waiters = self._waiters, []
            try:
                await self._write(changes)
            except (aioredis.RedisError, OSError) as exc:
                if lifecycle.cancelling():
                    raise
                log.warning("presence update failed, retrying: %r", exc)
                self._changes = changes | self._changes
                self._waiters = waiters + self._waiters
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


async def online(redis: aioredis.Redis, user_ids: list[str], ttl_s: float = NODE_TTL_S) -> set[str]:
    """Those of the users with a live session on some live gateway process (one that beat within
    `ttl_s`: a killed node's users count until then)."""
    nodes: Any = await redis.zrangebyscore(NODES, time.time() - ttl_s, "+inf")
    if not nodes or not user_ids:
        return set()
    pipe = redis.pipeline(transaction=False)
    for node in nodes:
        pipe.smismember(node_key(node.decode()), user_ids)
    found: set[str] = set()
    for flags in await pipe.execute():
        found.update(u for u, flag in zip(user_ids, flags, strict=True) if flag)
    return found


async def locate(redis: aioredis.Redis, node: str, user_ids: list[str]) -> dict[str, list[str]] | None:
    """The other processes holding a session of each of the users, per the directory: user ->
    node ids (users found nowhere else are left out), in one round trip. None when `node` itself
    is not registered (Redis lost its data and this process has not restored its presence yet):
    then the directory cannot be trusted. A killed node stays in its users' entries until it is
    forgotten (10 x TTL); events routed to it reach no one."""
    pipe = redis.pipeline(transaction=False)
    pipe.zscore(NODES, node)
    pipe.hmget(DIRECTORY, user_ids)
    registered, entries = await pipe.execute()
    if registered is None:
        return None
    mine = node.encode()
    others: dict[bytes, list[str]] = {}  # entry -> its nodes but this one: entries repeat, parse each once
    found: dict[str, list[str]] = {}
    for user, entry in zip(user_ids, entries, strict=True):
        if entry is None or entry == mine:
            continue
        nodes = others.get(entry)
        if nodes is None:
            nodes = others[entry] = [n.decode() for n in entry.split() if n != mine]
        if nodes:
            found[user] = nodes
    return found


async def register(db: asyncpg.Pool, user_id: str, token: str, platform: str) -> None:
    await db.execute(
        "INSERT INTO push_devices (token, user_id, platform) VALUES ($1, $2, $3)"
        " ON CONFLICT (token) DO UPDATE SET user_id = $2, platform = $3, created_at = now()",
        token, user_id, platform)


async def unregister(db: asyncpg.Pool, user_id: str, token: str) -> bool:
    status: str = await db.execute("DELETE FROM push_devices WHERE token = $1 AND user_id = $2", token, user_id)
    return status != "DELETE 0"


async def forget_token(db: asyncpg.Pool, token: str) -> None:
    await db.execute("DELETE FROM push_devices WHERE token = $1", token)


async def tokens(db: asyncpg.Pool, user_id: str) -> list[str]:
    rows = await db.fetch("SELECT token FROM push_devices WHERE user_id = $1 ORDER BY created_at", user_id)
    return [r["token"] for r in rows]


async def enqueue(conn: asyncpg.Connection | asyncpg.Pool, cipher: FieldCipher, user_id: str, dedupe_key: str,
                  title: str, body: str, data: dict[str, str]) -> None:
    await conn.execute(
        "INSERT INTO push_outbox (user_id, dedupe_key, title_enc, body_enc, data) VALUES ($1, $2, $3, $4, $5::jsonb)"
        " ON CONFLICT (dedupe_key) DO NOTHING", user_id, dedupe_key,
        cipher.encrypt(title, f"push_outbox.title:{dedupe_key}"),
        cipher.encrypt(body, f"push_outbox.body:{dedupe_key}"), msgspec.json.encode(data).decode())


async def texts(cipher: FieldCipher, row: asyncpg.Record) -> tuple[str, str]:
    """A job's (title, body), also of jobs queued before encryption (until the backfill)."""
    key = row["dedupe_key"]
    title = await cipher.reveal(row["title_enc"], row["title"], f"push_outbox.title:{key}")
    body = await cipher.reveal(row["body_enc"], row["body"], f"push_outbox.body:{key}")
    return title or "", body or ""


async def claim(db: asyncpg.Pool, batch: int, lease: timedelta,
                overdue: timedelta = timedelta(0)) -> list[asyncpg.Record]:
    """Jobs due for at least `overdue`, leased to this worker: another worker skips them until
    the lease ends."""
    rows: list[asyncpg.Record] = await db.fetch(
        "UPDATE push_outbox SET attempts = attempts + 1, next_attempt_at = now() + $2::interval"
        " WHERE id IN (SELECT id FROM push_outbox WHERE state = 'pending' AND next_attempt_at <= now() - $3::interval"
        " ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING *", batch, lease, overdue)
    return rows


async def finish(db: asyncpg.Pool, job_id: int, state: str, error: str | None = None,
                 retry_in: timedelta | None = None) -> None:
    """`sent`, `dead`, or back to `pending` with a delay."""
    await db.execute(
        "UPDATE push_outbox SET state = $2, last_error = $3, sent_at = CASE WHEN $2 = 'sent' THEN now() END,"
        " next_attempt_at = now() + coalesce($4::interval, '0 s'::interval) WHERE id = $1",
        job_id, state, error, retry_in)


def job_data(row: asyncpg.Record) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.json.decode(row["data"])
    return data


async def outbox_depth(db: asyncpg.Pool) -> tuple[int, float]:
    """(pending pushes, seconds the most overdue of them has been due; 0 when none is): the
    operator's view of the outbox, fleet-wide. Reads the `push_outbox_due` partial index only."""
    row = await db.fetchrow(
        "SELECT count(*) AS pending, coalesce(extract(epoch FROM now() - min(next_attempt_at)"
        " FILTER (WHERE next_attempt_at <= now())), 0)::float8 AS overdue FROM push_outbox WHERE state = 'pending'")
    assert row is not None
    return row["pending"], max(row["overdue"], 0.0)
