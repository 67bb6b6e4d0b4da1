"""Every route of every domain, in one table the gateway dispatches on."""

from handlers import admin, auth, chat, jobs, location, orders, payments, payouts, pool, push, uploads
from handlers.routing import Route, merge
from protocol.frames import Request

ROUTES: dict[type[Request], Route] = merge(auth.router, location.router, orders.router, jobs.router, pool.router,
                                           uploads.router, chat.router, push.router, admin.router, payments.router,
                                           payouts.router)
