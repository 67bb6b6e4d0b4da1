"""What the AI domain keeps per process: the answers being made (tasks that outlive the session
that asked, stopped with the gateway) and the engine, made once (its limits are per process)."""

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from storage import lifecycle

if TYPE_CHECKING:
    from handlers.ai.engine import Engine


class AiRuntime:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.engine: Engine | None = None
        self._slots: asyncio.Semaphore | None = None

    def slots(self, size: int) -> asyncio.Semaphore:
        """The answers being made at once (AiRules.max_answering), made on first use in the running loop."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(size)
        return self._slots

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        await lifecycle.stop(list(self.tasks))
        close = getattr(self.engine, "close", None)  # the OpenAI engine's HTTP client
        if close is not None:
            await close()
