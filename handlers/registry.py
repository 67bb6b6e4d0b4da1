"""Every route of every domain, in one table the gateway dispatches on."""

from handlers.accounts import auth, invites
from handlers.admin import feed, livemap, moderation, notices, oversight, summary, suspension, users
from handlers.admin import log as audit_log
from handlers.ai import flow as ai_flow
from handlers.catalog import catalog, changes, members
from handlers.chat import push, rooms
from handlers.money import audits, payments, payouts
from handlers.orders import jobs, location, orders, pool, uploads
from handlers.routing import Route, merge
from protocol.frames import Request

ROUTES: dict[type[Request], Route] = {request: audit_log.audited(route) for request, route in merge(
    auth.router, location.router, orders.router, jobs.router, pool.router, uploads.router, rooms.router, push.router,
    notices.router, payments.router, payouts.router, catalog.router, changes.router, members.router,
    audit_log.router, feed.router, moderation.router, invites.router, audits.router, suspension.router,
    oversight.router, livemap.router, users.router, summary.router, ai_flow.router).items()}
