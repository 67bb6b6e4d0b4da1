"""Chat sends from every session of this process, written in batches: one transaction looks up the
rooms' members (a sender who is not one is answered `not_found`), stores all messages that arrived
meanwhile (four statements, however many), delivers them to their rooms before the commit releases
the rooms (so members get a room's messages in sequence order), queues the pushes for offline
members in the same transaction, and only then answers the senders."""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from handlers.chat import metrics
from handlers.chat.push import Offline, to_offline
from handlers.chat.texts import ATTACHMENT, NEW_MESSAGE
from handlers.errors import N_, NotFound
from handlers.orders.texts import SYSTEM_TEXT
from handlers.services import Services
from protocol.chat import ChatMessage, ChatMessageEvent
from protocol.frames import Event
from storage import chat, lifecycle, users

log = logging.getLogger(__name__)
Deliver = Callable[[list[tuple[list[str], Event]]], Awaitable[object]]
MAX_BATCH = 500
# (the message's row, whether it was stored before: a duplicate, the text message as its room's members got it)
Stored = tuple[asyncpg.Record, bool, ChatMessage | None]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field
class Post:
    draft: chat.Draft
    members: tuple[str, ...] | None  # who is in the room now; None: looked up, the sender must be one
    done: "asyncio.Future[Stored]"
    arrived: float  # time.monotonic() when it reached the writer


def members_of(order: asyncpg.Record) -> tuple[str, ...]:
    consumer, technician = order["consumer_id"], order["technician_id"]
    if technician is None:
        return () if consumer is None else (consumer,)
    return (technician,) if consumer is None else (consumer, technician)


def not_a_member() -> NotFound:
    return NotFound(N_("No such order."))  # what an order that does not exist says


async def message(services: Services, row: asyncpg.Record, locale: str, *, reveal: bool = False,
                  known: chat.Draft | None = None) -> ChatMessage:
    """The message as a reader sees it: one staff hid shows no text or attachments unless `reveal`
    (admins reading a transcript). `known`: the draft just stored as this row, whose text needs no
    decrypting."""
    system = row["kind"] == "system"
    hidden = row["hidden_at"] is not None
    if hidden and not reveal:
        text, attachments = None, []
    else:
        text = (services.catalogs.translate(locale, SYSTEM_TEXT[row["system_code"]]) if system
                else known.body if known is not None else await chat.body(services.cipher, row))
        attachments = [str(a) for a in row["attachments"]]
    return ChatMessage(order_id=str(row["order_id"]), seq=row["seq"], sender_id=row["sender_id"],
                       sender_role=row["sender_role"], kind=row["kind"], text=text, attachments=attachments,
                       client_id=row["client_id"], sent_at=row["created_at"], hidden=hidden)


class ChatWriter:
    def __init__(self, deliver: Deliver, here: Callable[[str], bool] | None = None) -> None:
        """`deliver`: to every session of the users, wherever they are; `here`: whether a user has a
        session on this process (no need to ask Redis whether they are online)."""
        self._deliver = deliver
        self._here = here
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

    async def post(self, draft: chat.Draft, members: tuple[str, ...] | None = None) -> Stored:
        """Store, deliver and commit one message; (row, duplicate) once it is durable. Without `members`, the
        room's are read in the batch's transaction, and a sender who is not one of them gets `not_found`."""
        done: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
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
            settle(post, result)

    async def _write_one(self, post: Post) -> None:
        result: Stored | Exception
        try:
            [result] = await self._commit([post])
        except asyncpg.UniqueViolationError:
            try:
                [result] = await self._commit([post])  # now it finds the stored one
            except Exception as exc:
                result = exc
        except Exception as exc:
            result = exc
        settle(post, result)

    async def _commit(self, batch: list[Post]) -> list[Stored | NotFound]:
        services = self._services
        assert services is not None
        async with services.db.acquire() as conn, conn.transaction():
            rooms = await self._members(conn, batch)
            taken = [(post, members) for post, members in zip(batch, rooms, strict=True) if members is not None]
            results = await chat.send_many(conn, services.cipher, [post.draft for post, _ in taken])
            fresh = [(post, members, row) for (post, members), (row, duplicate) in zip(taken, results, strict=True)
                     if not duplicate]
            shown = await self._announce(services, conn, fresh) if fresh else {}
        for kind, count in Counter(row["kind"] for _, _, row in fresh).items():  # committed
            metrics.STORED.labels(kind).inc(count)
        out: list[Stored | NotFound] = []
        stored = iter(results)
        for post, members in zip(batch, rooms, strict=True):
            if members is None:
                out.append(not_a_member())
            else:
                row, duplicate = next(stored)
                out.append((row, duplicate, shown.get(id(post))))
        return out

    @staticmethod
    async def _members(conn: asyncpg.Connection, batch: list[Post]) -> list[tuple[str, ...] | None]:
        """Each post's room members (None: its sender is not one, or there is no such order), those not
        given read in one query."""
        wanted = list({post.draft.order_id for post in batch if post.members is None})
        found = {row["id"]: members_of(row) for row in await conn.fetch(
            "SELECT id, consumer_id, technician_id FROM orders WHERE id = ANY($1::uuid[])", wanted)} if wanted else {}
        rooms: list[tuple[str, ...] | None] = []
        for post in batch:
            members = post.members if post.members is not None else found.get(post.draft.order_id)
            given = post.members is not None
            rooms.append(members if given or (members is not None and post.draft.sender_id in members) else None)
        return rooms

    async def _announce(self, services: Services, conn: asyncpg.Connection,
                        fresh: list[tuple[Post, tuple[str, ...], asyncpg.Record]]) -> dict[int, ChatMessage]:
        """Deliver (in sequence order: rows are in batch order, rooms still locked) and queue pushes for
        the members with no session here who are not online elsewhere either; the text messages as
        delivered, by id() of their post (the sender's reply shows the same)."""
        system_readers = sorted({m for _, members, row in fresh if row["kind"] == "system" for m in members})
        locales = await users.locales(conn, system_readers) if system_readers else {}
        events: list[tuple[list[str], Event]] = []
        offline: list[Offline] = []
        shown: dict[int, ChatMessage] = {}
        here = self._here or (lambda _: False)
        for post, members, row in fresh:
            if row["kind"] == "system":  # each reader in their language
                events += [([m], ChatMessageEvent(message=await message(services, row, locales.get(m, "en"))))
                           for m in members]
                continue
            shown[id(post)] = text = await message(services, row, "en", known=post.draft)
            events.append((list(members), ChatMessageEvent(message=text)))
            away = [m for m in members if m != row["sender_id"] and not here(m)]
            if away:
                offline.append(Offline(away, f"chat:{row['order_id']}:{row['seq']}", NEW_MESSAGE,
                                       post.draft.body or ATTACHMENT,
                                       {"type": "chat.message", "order_id": text.order_id, "seq": str(row["seq"])}))
        await self._deliver(events)
        delivered = time.monotonic()
        for post, _, _ in fresh:
            metrics.DELIVERY.observe(delivered - post.arrived)
        await to_offline(services, conn, offline)
        return shown


def settle(post: Post, result: Stored | Exception) -> None:
    if post.done.done():  # its sender left
        return
    if isinstance(result, Exception):
        post.done.set_exception(result)
    else:
        post.done.set_result(result)
