"""The audit log: every call a merchant or an admin makes (actor, operation, target, outcome and
the request with secrets and personal fields redacted), and every read of personal data a
handler declares with `record_read`. Rows are append-only (migration 0009); `admin.log` reads them."""

import functools
import logging
from typing import Any

import msgspec

from handlers.context import Context, Role
from handlers.errors import GatewayError
from handlers.routing import Handler, Route, Router
from protocol.admin import Log, LogEntry, LogList
from protocol.frames import Reply, Request
from storage import admin_log

log = logging.getLogger(__name__)
router = Router()
STAFF: frozenset[Role] = frozenset(("merchant", "admin"))
REDACTED = "[redacted]"
# Never written to the log (its rows can never be erased): credentials, a customer's contact and
# whereabouts, and free text that may hold either.
SECRET = frozenset(("password", "token", "refresh_token", "secret", "client_secret", "card", "code", "phone",
                    "email", "address", "customer", "contact", "lat", "lng", "description", "text", "comment",
                    "name"))
# The request field that names what an operation acts on, most specific first.
TARGETS = (("order_id", "order"), ("job_id", "money_job"), ("message_id", "chat_message"), ("user_id", "user"),
           ("merchant_id", "user"), ("guide_id", "guide"), ("sku", "sku"), ("brand", "brand"))


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET and v is not None else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def target(request: dict[str, Any]) -> tuple[str | None, str | None]:
    for field, kind in TARGETS:
        value = request.get(field)
        if isinstance(value, str):
            return kind, value
    return None, None


async def record(ctx: Context, action: str, request: Request | dict[str, Any], outcome: str = "ok",
                 target_kind: str | None = None, target_id: str | None = None) -> None:
    """Append one row for the caller. `request` is redacted here; the target defaults to the
    request's most specific id field."""
    who = ctx.identity
    assert who is not None
    fields = msgspec.to_builtins(request) if isinstance(request, msgspec.Struct) else dict(request)
    fields.pop("id", None)
    fields.pop("type", None)
    if target_id is None:
        target_kind, target_id = target(fields)
    await admin_log.append(ctx.services.db, actor_id=who.user_id, actor_role=who.role, action=action,
                           target_kind=target_kind, target_id=target_id, outcome=outcome, request=redact(fields))


async def record_read(ctx: Context, what: str, target_kind: str, target_id: str) -> None:
    """A read of personal data (a transcript, a customer's contact): `action` is 'read.<what>'."""
    await record(ctx, "read." + what, {}, target_kind=target_kind, target_id=target_id)


def audited(route: Route) -> Route:
    """The route with its staff calls logged: the outcome is 'ok' or the error code answered.
    A log row that cannot be written is itself logged (the action already happened)."""
    if not route.logged or (route.roles is not None and not route.roles & STAFF):
        return route
    handler = route.handler

    @functools.wraps(handler)
    async def logged(ctx: Context, req: Any) -> Reply | None:
        try:
            reply = await handler(ctx, req)
        except GatewayError as exc:
            if ctx.identity is not None and ctx.identity.role in STAFF:
                await _write(ctx, route, req, exc.code)
            raise
        if ctx.identity is not None and ctx.identity.role in STAFF:  # after `auth`: who signed in
            await _write(ctx, route, req, "ok", reply)
        return reply

    wrapped: Handler = logged
    return Route(route.request, wrapped, route.roles, route.operation, route.logged)


async def _write(ctx: Context, route: Route, req: Request, outcome: str, reply: Reply | None = None) -> None:
    made = getattr(getattr(reply, "order", None), "id", None)  # an order the call created
    try:
        if made is not None and not hasattr(req, "order_id"):
            await record(ctx, route.operation, req, outcome, target_kind="order", target_id=str(made))
        else:
            await record(ctx, route.operation, req, outcome)
    except Exception:
        log.exception("could not write the audit log row for %s by %s", route.operation,
                      ctx.identity.user_id if ctx.identity else None)


@router.route(LogList, roles=["admin"], logged=False)
async def entries(ctx: Context, req: LogList) -> Log:
    rows = await admin_log.entries(ctx.services.db, actor_id=req.actor_id, action=req.action,
                                   target_id=req.target_id, since=req.since, until=req.until, before=req.before,
                                   limit=req.limit + 1)
    page = [LogEntry(id=r["id"], at=r["at"], actor_id=r["actor_id"], actor_role=r["actor_role"], action=r["action"],
                     target_kind=r["target_kind"], target_id=r["target_id"], outcome=r["outcome"],
                     request=msgspec.json.decode(r["request"])) for r in rows[:req.limit]]
    return Log(entries=page, next_before=page[-1].id if len(rows) > req.limit else None)
