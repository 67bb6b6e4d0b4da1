"""The route table: which function handles an operation and which roles may call it."""

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from handlers.context import ROLES, Context, Role
from protocol.frames import Reply, Request
from protocol.messages import operation

R = TypeVar("R", bound=Request)
Handler = Callable[[Context, Any], Awaitable[Reply | None]]
TypedHandler = Callable[[Context, R], Awaitable[Reply | None]]

ANY_ROLE: frozenset[Role] = frozenset(ROLES)


@dataclass(frozen=True, slots=True)
class Route:
    request: type[Request]
    handler: Handler
    # None: callable before `auth` (public); otherwise the roles allowed.
    roles: frozenset[Role] | None
    operation: str  # the request's `type`
    # Whether a merchant's or an admin's call is written to the audit log (handlers.admin.log).
    logged: bool = True


class Router:
    def __init__(self) -> None:
        self.routes: dict[type[Request], Route] = {}

    def route(self, request: type[R], *, roles: Iterable[Role] | None,
              logged: bool = True) -> Callable[[TypedHandler[R]], TypedHandler[R]]:
        """Register the decorated function for `request`; `roles=None` makes it public. Staff calls
        are audit-logged unless `logged=False` (reads of public data, the log itself)."""

        def register(fn: TypedHandler[R]) -> TypedHandler[R]:
            assert request not in self.routes, f"{request.__name__} routed twice"
            self.routes[request] = Route(request, fn, None if roles is None else frozenset(roles),
                                         operation(request), logged)
            return fn

        return register


def merge(*routers: Router) -> dict[type[Request], Route]:
    table: dict[type[Request], Route] = {}
    for router in routers:
        for request, route in router.routes.items():
            assert request not in table, f"{request.__name__} routed twice"
            table[request] = route
    return table
