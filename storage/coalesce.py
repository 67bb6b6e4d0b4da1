"""Reads of one row each, made by many sessions at once, coalesced into one query.

A node that takes over a stopped node's sessions signs thousands in within a second or two, and
each sign-in reads two rows from PostgreSQL (is the user suspended, is the technician on duty).
One query per sign-in queued thousands of them behind the pool's ten connections: sign-ins
waited there for seconds (bench.storm). Here the keys asked for while a query is out wait for the
next one, which asks for all of them: each caller's query still starts after its call (a
suspension committed before the call is seen), and under no load a read costs one round trip."""

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Generic, TypeVar

import asyncpg

from storage import orders, suspensions

K = TypeVar("K")
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """`await get(key)`: `fetch(keys)`'s answer for the key (`missing` when it has none), from one
    `fetch` for every key asked for meanwhile. A failed `fetch` fails each of its callers."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], missing: V) -> None:
        self._fetch = fetch
        self._missing = missing
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._runner: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="coalesced-read")
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                found = await self._fetch(list(batch))
            except asyncio.CancelledError:  # the process stops
                for futures in batch.values():
                    for future in futures:
                        future.cancel()
                raise
            except Exception as exc:
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for key, futures in batch.items():
                value = found.get(key, self._missing)
                for future in futures:
                    if not future.done():
                        future.set_result(value)


class SignInReads:
    """What a session's sign-in reads from PostgreSQL, coalesced across the process's sessions."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.suspended: Coalesced[str, bool] = Coalesced(lambda ids: _suspended(db, ids), False)
        self.on_duty: Coalesced[str, bool] = Coalesced(lambda ids: _on_duty(db, ids), False)


async def _suspended(db: asyncpg.Pool, user_ids: Collection[str]) -> dict[str, bool]:
    return dict.fromkeys(await suspensions.in_force_among(db, list(user_ids)), True)


async def _on_duty(db: asyncpg.Pool, technicians: Collection[str]) -> dict[str, bool]:
    return await orders.duties(db, list(technicians))
