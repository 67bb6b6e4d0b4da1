"""Every route of every domain, in one table the gateway dispatches on."""

from handlers import admin, auth
from handlers.routing import Route, merge
from protocol.frames import Request

ROUTES: dict[type[Request], Route] = merge(auth.router, admin.router)
