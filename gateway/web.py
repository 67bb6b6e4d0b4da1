"""The gateway's plain-HTTP side, on its own port (the websockets server answers GET only, with
whole bodies): attachments streamed out, Stripe's webhooks in, the pages Stripe's hosted
onboarding sends technicians back to, and /healthz and /metrics as on the websocket port."""

import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

import msgspec
import stripe
from aiohttp import web
from cryptography.exceptions import InvalidTag

from gateway.backoffice import BackOffice
from gateway.server import Gateway, RequestContext
from handlers.accounts import auth
from handlers.context import Identity
from handlers.errors import GatewayError
from handlers.money.stripe_events import apply_event
from handlers.orders import uploads

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # Stripe's events are a few KiB
BACK_TO_APP = ("<!doctype html><meta charset=utf-8><title>Dispatch</title>"
               "<p>{text}</p><p>You can close this page and return to the app.</p>\n")


def system_context(gateway: Gateway) -> RequestContext:
    """The identity under which Stripe's events and scheduled jobs act (timeline actor `stripe`)."""
    return RequestContext(gateway, Identity("stripe", "system", "en", datetime.now(UTC) + timedelta(days=36500)))


class WebSide:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.system = system_context(gateway)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/stripe/webhook", self.webhook)
        app.router.add_get("/connect/return", self.onboarding_done)
        app.router.add_get("/connect/refresh", self.onboarding_expired)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.healthz)
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/attachments/{id}", self.attachment, allow_head=False)
        BackOffice(gateway.config, lambda: gateway.port).add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> None:
        c = self.gateway.config
        await self._runner.setup()
        site = web.TCPSite(self._runner, c.host, c.http_port, reuse_port=c.workers > 1 or None)
        await site.start()

    @property
    def port(self) -> int:
        port: int = self._runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        await self._runner.cleanup()

    def caller(self, request: web.Request) -> Identity | None:
        """Who `Authorization: Bearer <session token>` says is asking, if the token is valid."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            return self.gateway.services.tokens.verify(token) if scheme.lower() == "bearer" else None
        except GatewayError:
            return None

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """GET /attachments/<id>: the plaintext written chunk by chunk as it is decrypted, so a
        100 MB video never sits whole in memory. 404 alike for unknown and out of sight."""
        identity = self.caller(request)
        if identity is None:
            return web.Response(status=401, text="a session token is required\n",
                                headers={"WWW-Authenticate": "Bearer"})
        ctx = RequestContext(self.gateway, identity)
        if await auth.suspended(ctx, identity.user_id):
            return web.Response(status=403, text="this account is suspended\n")
        found = await uploads.download(ctx, request.match_info["id"])
        if found is None:
            return web.Response(status=404, text="not found\n")
        response = web.StreamResponse(headers={"Cache-Control": "private", "ETag": f'"{found.attachment_id}"',
                                               "X-Content-Type-Options": "nosniff"})
        response.content_type, response.content_length = found.content_type, found.size
        async with contextlib.aclosing(found.chunks) as chunks:
            await response.prepare(request)
            try:
                async for chunk in chunks:
                    await response.write(chunk)
            except ConnectionError:  # the app went away
                return response
            except (ValueError, InvalidTag):  # altered on disk, found after the status went out
                log.error("attachment %s fails its check on disk; its download was cut off", found.attachment_id)
                if request.transport is not None:
                    request.transport.close()  # short of Content-Length: no client takes it for whole
                return response
        await response.write_eof()
        return response

    async def webhook(self, request: web.Request) -> web.Response:
        """Verify Stripe's signature (and its timestamp's age), store, apply. 400 records nothing;
        503 asks Stripe to deliver again later (the event is stored, the reconciler also retries)."""
        access = self.gateway.services.stripe
        if access is None or not access.settings.webhook_secret:
            return web.Response(status=404, text="payments are not configured\n")
        payload = await request.read()
        try:
            stripe.Webhook.construct_event(payload, request.headers.get("Stripe-Signature"),
                                           access.settings.webhook_secret, access.settings.webhook_tolerance_s)
            event = json.loads(payload)
        except (ValueError, stripe.SignatureVerificationError) as exc:
            log.warning("webhook refused: %s", exc)
            self.gateway.metrics.webhooks.labels("refused").inc()
            return web.Response(status=400, text="invalid signature or payload\n")
        try:
            applied = await apply_event(self.system, event, "webhook")
        except GatewayError as exc:
            log.warning("webhook %s stored, not applied yet: %s", event.get("id"), exc)
            self.gateway.metrics.webhooks.labels("deferred").inc()
            return web.Response(status=503, text="stored; not applied yet\n")
        self.gateway.metrics.webhooks.labels("applied" if applied else "duplicate").inc()
        return web.json_response({"received": True, "duplicate": not applied})

    async def onboarding_done(self, request: web.Request) -> web.Response:
        return web.Response(text=BACK_TO_APP.format(text="Thank you: your payout details were sent to Stripe."),
                            content_type="text/html")

    async def onboarding_expired(self, request: web.Request) -> web.Response:
        return web.Response(text=BACK_TO_APP.format(text="This link expired. Open payouts in the app for a new one."),
                            content_type="text/html")

    async def healthz(self, request: web.Request) -> web.Response:
        return await self._health(ready=True)

    async def livez(self, request: web.Request) -> web.Response:
        return await self._health(ready=False)

    async def _health(self, ready: bool) -> web.Response:
        status, report = await self.gateway.health(ready)  # the same bytes as the websocket port's
        return web.Response(body=msgspec.json.encode(report), status=status, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.gateway.metrics.exposition(),
                            content_type="text/plain", charset="utf-8", headers={"Cache-Control": "no-store"})
