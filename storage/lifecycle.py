"""Stopping background loops reliably.

Client libraries may turn a cancellation that lands mid-request into their own connection error
(redis-py does); a loop that retries on such errors would then swallow its own cancellation and
run on. Loops check `cancelling()` before retrying, and `stop()` never waits forever."""

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


def cancelling() -> bool:
    """True when the current task has been asked to stop (even if the CancelledError was lost)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop(tasks: Iterable["asyncio.Task[object]"], timeout: float = 5.0) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        log.warning("background task %s did not stop within %.0f s", task.get_name(), timeout)
