"""What the local stand-ins for outside services (Stripe, OpenAI) share: serving an aiohttp app
by hand (`python -m tests.stripe_server`, `python -m tests.openai_server`)."""

import asyncio

from aiohttp import web


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until killed; the ready line names the port (0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"listening on http://{host}:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()
