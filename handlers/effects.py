"""What follows a committed write: the events that tell people, the open-order pool, the feed. The
write is the record and its reply says it happened; should Redis be down meanwhile, what follows is
logged and left to the repairs that run on every process (the pool's, in gateway upkeep), instead of
answering `unavailable` for a write that stands: a client retrying that would order twice."""

import logging
from collections.abc import Awaitable
from typing import Any

from redis import exceptions as redis_errors

log = logging.getLogger(__name__)
DOWN = (OSError, redis_errors.ConnectionError, redis_errors.TimeoutError)


async def after_commit(what: str, step: Awaitable[Any]) -> None:
    try:
        await step
    except DOWN as exc:
        log.warning("%s did not happen after its write committed (Redis unreachable: %r); "
                    "events are at most once, the pool is repaired by upkeep", what, exc)
