"""Push to offline devices: device registration, the outbox written with the event it announces,
and the worker that sends it through FCM with retries, backoff and a dead letter."""

import asyncio
import logging
import random
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from prometheus_client import Counter

from handlers.chat.fcm import FcmClient
from handlers.context import Context
from handlers.routing import Router
from handlers.services import Services
from protocol.frames import Empty
from protocol.push import PushRegister, PushUnregister
from storage import lifecycle, push, users

log = logging.getLogger(__name__)
SENDS = Counter("push_sends", "Notifications sent to FCM, per device, by outcome (sent, unregistered, retry, "
                "failed)", ["outcome"], registry=None)
DEAD = Counter("push_dead_letters", "Notifications given up on: no device took them after every attempt",
               registry=None)
router = Router()
LEASE = timedelta(seconds=60)
BATCH = 50


@router.route(PushRegister, roles=["consumer", "technician"])
async def register(ctx: Context, req: PushRegister) -> Empty:
    assert ctx.identity is not None
    await push.register(ctx.services.db, ctx.identity.user_id, req.token, req.platform)
    return Empty()


@router.route(PushUnregister, roles=["consumer", "technician"])
async def unregister(ctx: Context, req: PushUnregister) -> Empty:
    assert ctx.identity is not None
    await push.unregister(ctx.services.db, ctx.identity.user_id, req.token)
    return Empty()


def preview(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Offline:
    """A push for those of `recipients` who have no live session: `title` and `body` are message
    ids translated for each recipient (`body` may be the message text itself)."""

    recipients: list[str]
    key: str  # with the recipient: one push per event and person, however often enqueued
    title: str
    body: str
    data: dict[str, str]


async def to_offline(services: Services, conn: asyncpg.Connection | asyncpg.Pool, pushes: list[Offline]) -> None:
    """Queue the pushes for offline recipients, in the caller's transaction when `conn` is one."""
    everyone = sorted({r for p in pushes for r in p.recipients})
    if not everyone:
        return
    online = await push.online(services.redis, everyone, services.chat_rules.presence_ttl_s)
    offline = [r for r in everyone if r not in online]
    if not offline:
        return
    locales = await users.locales(conn, offline)
    translate, limit = services.catalogs.translate, services.chat_rules.preview_chars
    for p in pushes:
        for user_id in p.recipients:
            if user_id in offline:
                locale = locales.get(user_id, "en")
                await push.enqueue(conn, services.cipher, user_id, f"{p.key}:{user_id}", translate(locale, p.title),
                                   preview(translate(locale, p.body), limit), p.data)


async def run_worker(services: Services, client: FcmClient | None) -> None:
    """Send due pushes, forever (cancel to stop); every process may run one: jobs are leased.
    A process that cannot send (no FCM credentials) takes a job only once it is `push_log_after_s`
    overdue (see ChatRules)."""
    overdue = timedelta(seconds=0 if client is not None else services.chat_rules.push_log_after_s)
    while True:
        try:
            jobs = await push.claim(services.db, BATCH, LEASE, overdue)
            for job in jobs:
                await _send(services, client, job)
        except (OSError, asyncpg.PostgresError) as exc:
            if lifecycle.cancelling():
                raise
            log.warning("push worker: %r", exc)
            jobs = []
        if not jobs:
            await asyncio.sleep(services.chat_rules.push_poll_s)


async def _send(services: Services, client: FcmClient | None, job: asyncpg.Record) -> None:
    rules = services.chat_rules
    devices = await push.tokens(services.db, job["user_id"])
    if client is None or not devices:  # the texts are personal: never logged
        log.info("push %s for %s: %s", job["id"], job["user_id"], "no device" if devices == [] else "logged only")
        await push.finish(services.db, job["id"], "sent", None if devices else "no device")
        return
    title, body = await push.texts(services.cipher, job)
    retry, wait, delivered, errors = False, 0.0, 0, []
    for token in devices:
        outcome = await client.send(token, title, body, push.job_data(job))
        SENDS.labels(outcome.kind).inc()
        if outcome.kind == "sent":
            delivered += 1
            continue
        errors.append(outcome.detail)
        if outcome.kind == "unregistered":
            await push.forget_token(services.db, token)  # FCM says this install is gone
        elif outcome.kind == "retry":
            retry, wait = True, max(wait, outcome.retry_after_s or 0.0)
    error = "; ".join(errors) or None
    if delivered or not retry:
        # delivered to a device (a retry would duplicate it there), or nothing left to try
        await push.finish(services.db, job["id"], "sent" if delivered else "dead", error)
        if not delivered:
            DEAD.inc()
    elif job["attempts"] >= rules.push_max_attempts:
        await push.finish(services.db, job["id"], "dead", error)
        DEAD.inc()
        log.warning("push %s dead after %d attempts: %s", job["id"], job["attempts"], error)
    else:
        backoff = rules.push_retry_base_s * 2 ** (job["attempts"] - 1) * random.uniform(0.8, 1.2)
        await push.finish(services.db, job["id"], "pending", error, timedelta(seconds=max(backoff, wait)))
