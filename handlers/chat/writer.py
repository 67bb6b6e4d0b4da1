"""Chat sends from every session of this process, written in batches: one transaction stores all
messages that arrived meanwhile (three statements, however many), delivers them to their rooms
before the commit releases the rooms (so members get a room's messages in sequence order), queues
the pushes for offline members in the same transaction, and only then answers the senders."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from handlers.chat import metrics
from handlers.chat.push import Offline, to_offline
from handlers.chat.texts import ATTACHMENT, NEW_MESSAGE
from handlers.orders.texts import SYSTEM_TEXT
from handlers.services import Services
from protocol.chat import ChatMessage, ChatMessageEvent
from protocol.frames import Event
from storage import chat, lifecycle, users

log = logging.getLogger(__name__)
Deliver = Callable[[list[tuple[list[str], Event]]], Awaitable[object]]
MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class Post:
    draft: chat.Draft
    members: tuple[str, ...]  # who is in the room now
    done: "asyncio.Future[tuple[asyncpg.Record, bool]]"
    arrived: float  # time.monotonic() when it reached the writer


async def message(services: Services, row: asyncpg.Record, locale: str, *, reveal: bool = False) -> ChatMessage:
    """The message as a reader sees it: one staff hid shows no text or attachments unless `reveal`
    (admins reading a transcript)."""
    system = row["kind"] == "system"
    hidden = row["hidden_at"] is not None
    if hidden and not reveal:
        text, attachments = None, []
    else:
        text = (services.catalogs.translate(locale, SYSTEM_TEXT[row["system_code"]]) if system
                else await chat.body(services.cipher, row))
        attachments = [str(a) for a in row["attachments"]]
    return ChatMessage(order_id=str(row["order_id"]), seq=row["seq"], sender_id=row["sender_id"],
                       sender_role=row["sender_role"], kind=row["kind"], text=text, attachments=attachments,
                       client_id=row["client_id"], sent_at=row["created_at"], hidden=hidden)


class ChatWriter:
    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._queue: list[Post] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._services: Services | None = None

    def start(self, services: Services) -> None:
        self._services = services
        self._task = asyncio.create_task(self._run(), name="chat-writer")

    async def stop(self) -> None:
        if self._task is not None:
            await lifecycle.stop([self._task])

    async def post(self, draft: chat.Draft, members: tuple[str, ...]) -> tuple[asyncpg.Record, bool]:
        """Store, deliver and commit one message; (row, duplicate) once it is durable."""
        done: asyncio.Future[tuple[asyncpg.Record, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(Post(draft, members, done, time.monotonic()))
        self._wake.set()
        return await done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._write(batch)

    async def _write(self, batch: list[Post]) -> None:
        assert self._services is not None
        try:
            results = await self._commit(batch)
        except asyncpg.UniqueViolationError:
            # another process stored one of these client ids meanwhile: one by one, each finds it
            for post in batch:
                await self._write_one(post)
            return
        except Exception as exc:  # the senders get the error; nothing was committed
            if lifecycle.cancelling():
                raise
            for post in batch:
                if not post.done.done():
                    post.done.set_exception(exc)
            return
        for post, result in zip(batch, results, strict=True):
            if not post.done.done():
                post.done.set_result(result)

    async def _write_one(self, post: Post) -> None:
        try:
            [result] = await self._commit([post])
        except asyncpg.UniqueViolationError:
            try:
                [result] = await self._commit([post])  # now it finds the stored one
            except Exception as exc:
                post.done.set_exception(exc)
                return
        except Exception as exc:
            post.done.set_exception(exc)
            return
        post.done.set_result(result)

    async def _commit(self, batch: list[Post]) -> list[tuple[asyncpg.Record, bool]]:
        services = self._services
        assert services is not None
        async with services.db.acquire() as conn, conn.transaction():
            results = await chat.send_many(conn, services.cipher, [p.draft for p in batch])
            fresh = [(post, row) for post, (row, duplicate) in zip(batch, results, strict=True) if not duplicate]
            if fresh:
                await self._announce(services, conn, fresh)
        for _, row in fresh:  # committed
            metrics.STORED.labels(row["kind"]).inc()
        return results

    async def _announce(self, services: Services, conn: asyncpg.Connection,
                        fresh: list[tuple[Post, asyncpg.Record]]) -> None:
        """Deliver (in sequence order: rows are in batch order, rooms still locked) and queue pushes."""
        system_readers = sorted({m for post, row in fresh if row["kind"] == "system" for m in post.members})
        locales = await users.locales(conn, system_readers) if system_readers else {}
        events: list[tuple[list[str], Event]] = []
        offline: list[Offline] = []
        for post, row in fresh:
            if row["kind"] == "system":  # each reader in their language
                events += [([m], ChatMessageEvent(message=await message(services, row, locales.get(m, "en"))))
                           for m in post.members]
                continue
            events.append((list(post.members), ChatMessageEvent(message=await message(services, row, "en"))))
            offline.append(Offline([m for m in post.members if m != row["sender_id"]],
                                   f"chat:{row['order_id']}:{row['seq']}", NEW_MESSAGE, post.draft.body or ATTACHMENT,
                                   {"type": "chat.message", "order_id": str(row["order_id"]),
                                    "seq": str(row["seq"])}))
        await self._deliver(events)
        delivered = time.monotonic()
        for post, _ in fresh:
            metrics.DELIVERY.observe(delivered - post.arrived)
        await to_offline(services, conn, offline)
