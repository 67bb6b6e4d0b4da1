"""A Stripe API on localhost for the tests, so the real `stripe` SDK runs unchanged against it: localstripe
(imported, never copied: it is GPL) plus what it lacks, added in this process only: ordered and signed
webhooks, idempotency keys, Connect accounts and transfers, stricter refunds, fault injection.

    python -m tests.stripe_server --port 8420     # or StripeServer() / the `stripe_server` fixture below
"""

import argparse
import asyncio
import contextvars
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from localstripe import resources
from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Event,
    List,
    PaymentIntent,
    PaymentMethod,
    Refund,
    SetupIntent,
    StripeObject,
    store,
    try_convert_to_bool,
    try_convert_to_int,
)
from localstripe.webhooks import _webhooks

from tests.doubles import serve

with warnings.catch_warnings():  # localstripe's routes are plain functions, which aiohttp deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import server as ls

API_VERSION = "2026-10-28.endive"  # events say this unless the request that caused them sent Stripe-Version
HOLD_S = 7 * 86_400  # how long a card authorization lasts (`payment_method_details.card.capture_before`)
ROOT = Path(__file__).resolve().parent.parent


def invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> UserError:
    return UserError(status, message, {key: value for key, value in (("param", param), ("code", code)) if value})


def reject_unknown(params: dict[str, Any]) -> None:
    if params:
        name = next(iter(params))
        raise invalid(f"Received unknown parameter: {name}", name)


# --- What this process adds to localstripe's store. Module-level because localstripe's store is too. ---

@dataclass
class Rule:
    path_prefix: str
    method: str | None = None  # None: any method
    times: int = 1
    status: int = 500
    seconds: float = 0.0


@dataclass
class Replay:
    fingerprint: bytes
    done: asyncio.Event = field(default_factory=asyncio.Event)
    response: tuple[int, Any] | None = None  # status, body


@dataclass
class Fake:
    webhook_delay: float = 0.05
    queue: "asyncio.Queue[tuple[float, Event]]" = field(default_factory=asyncio.Queue)
    dropped: set[str] = field(default_factory=set)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    replays: dict[tuple[str | None, str], Replay] = field(default_factory=dict)
    fails: list[Rule] = field(default_factory=list)
    stalls: list[Rule] = field(default_factory=list)

    def reset(self) -> None:
        for kept in (self.dropped, self.deliveries, self.requests, self.replays, self.fails, self.stalls):
            kept.clear()


fake = Fake()
serving: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("serving", default=None)


# --- Webhooks: one queue and one sender, so endpoints get events in the order they were created. ---

def schedule_webhook(event: Event) -> None:
    entry = serving.get() or {}
    event.api_version = entry.get("stripe_version") or API_VERSION
    event.request = {"id": entry.get("id"), "idempotency_key": entry.get("idempotency_key")}
    event._dropped = event.type in fake.dropped
    event.pending_webhooks = 0 if event._dropped else sum(wants(hook, event) for hook in _webhooks.values())
    fake.queue.put_nowait((time.monotonic() + fake.webhook_delay, event))


def wants(hook: Any, event: Event) -> bool:
    return hook.events is None or event.type in hook.events


async def deliver(session: aiohttp.ClientSession, hook: Any, event: Event) -> None:
    record: dict[str, Any] = {"id": event.id, "type": event.type, "url": hook.url, "status": None,
                              "dropped": event._dropped}
    fake.deliveries.append(record)
    if event._dropped:
        return
    payload, timestamp = json.dumps(event._export()), int(time.time())
    signature = hmac.new(hook.secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={timestamp},v1={signature}"}
    try:
        async with session.post(hook.url, data=payload.encode(), headers=headers) as response:
            record["status"] = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        record["error"] = repr(exc)
    if record["status"] is not None and 200 <= record["status"] < 300:
        event.pending_webhooks -= 1


async def webhook_sender(app: web.Application) -> AsyncIterator[None]:
    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                due, event = await fake.queue.get()
                await asyncio.sleep(due - time.monotonic())
                for hook in [hook for hook in _webhooks.values() if wants(hook, event)]:
                    await deliver(session, hook, event)

    task = asyncio.create_task(run())
    yield
    task.cancel()


# --- Connect: accounts, hosted onboarding, transfers and their reversals. ---

class Account(StripeObject):
    object = "account"
    _id_prefix = "acct_"

    def __init__(self, type: str | None = None, country: str | None = None, email: str | None = None,
                 capabilities: dict[str, Any] | None = None, metadata: dict[str, str] | None = None,
                 business_type: str | None = None, **unknown: Any) -> None:
        reject_unknown(unknown)
        if type not in ("express", "standard", "custom"):
            raise invalid("Invalid type: must be one of express, standard, or custom", "type")
        super().__init__()
        self.type, self.country, self.email, self.business_type = type, country or "US", email, business_type
        self.metadata = metadata or {}
        self.capabilities = {name: "inactive" for name, asked in (capabilities or {}).items()
                             if try_convert_to_bool(asked.get("requested")) is True}
        self.charges_enabled = self.payouts_enabled = self.details_submitted = False
        due = ["business_type", "external_account", "tos_acceptance.date", "tos_acceptance.ip"]
        self.requirements: dict[str, Any] = {"currently_due": due, "eventually_due": due, "past_due": [],
                             "disabled_reason": "requirements.past_due"}
        self._return_url: str | None = None

    def _onboard(self) -> None:
        """What a person finishing Stripe's hosted onboarding causes."""
        self.charges_enabled = self.payouts_enabled = self.details_submitted = True
        self.capabilities = {**{name: "active" for name in self.capabilities}, "transfers": "active"}
        self.requirements = {"currently_due": [], "eventually_due": [], "past_due": [], "disabled_reason": None}
        event = Event("account.updated", self)
        event.account = self.id
        schedule_webhook(event)


class Transfer(StripeObject):
    object = "transfer"
    _id_prefix = "tr_"

    def __init__(self, amount: Any = None, currency: str | None = None, destination: str | None = None,
                 source_transaction: str | None = None, transfer_group: str | None = None,
                 metadata: dict[str, str] | None = None, description: str | None = None, **unknown: Any) -> None:
        reject_unknown(unknown)
        amount = try_convert_to_int(amount)
        for name, value in (("amount", amount), ("currency", currency), ("destination", destination)):
            if value is None:
                raise invalid(f"Missing required param: {name}.", name, "parameter_missing")
        if not isinstance(amount, int) or amount < 1:
            raise invalid("This value must be greater than or equal to 1.", "amount", "parameter_invalid_integer")
        account = store.get(f"account:{destination}")
        if account is None:
            raise invalid(f"No such destination: '{destination}'", "destination", "resource_missing")
        if account.capabilities.get("transfers") != "active":
            raise invalid("Your destination account needs to have at least one of the following capabilities "
                          "enabled: transfers, crypto_transfers, legacy_payments", "destination",
                          "insufficient_capabilities_for_transfer")
        if source_transaction is not None:
            self._check_source(store.get(f"charge:{source_transaction}"), source_transaction, amount, str(currency))
        super().__init__()
        self.amount, self.currency, self.destination = amount, str(currency).lower(), destination
        self.source_transaction, self.transfer_group = source_transaction, transfer_group
        self.metadata, self.description = metadata or {}, description
        schedule_webhook(Event("transfer.created", self))

    @staticmethod
    def _check_source(charge: Charge | None, charge_id: str, amount: int, currency: str) -> None:
        if charge is None:
            raise invalid(f"No such charge: '{charge_id}'", "source_transaction", "resource_missing")
        if charge.status != "succeeded" or not charge.captured:
            raise invalid(f"The source_transaction {charge_id} must be a succeeded and captured charge.",
                          "source_transaction")
        if charge.currency != currency.lower():
            raise invalid(f"The currency of source_transaction ({charge.currency}) must be the same as the transfer "
                          f"currency ({currency.lower()}).", "currency")
        transferred = sum(t.amount - t.amount_reversed for t in list(store.values())
                          if isinstance(t, Transfer) and t.source_transaction == charge_id)
        available = charge.amount - charge.amount_refunded - transferred
        if amount > available:
            raise invalid(f"Transfer amount ({amount}) is greater than the amount available for transfer from "
                          f"charge {charge_id} ({available}).", "amount", "amount_too_large")

    @property
    def reversals(self) -> List:
        page = List(f"/v1/transfers/{self.id}/reversals")
        page._list = [r for r in list(store.values()) if isinstance(r, TransferReversal) and r.transfer == self.id]
        return page

    @property
    def amount_reversed(self) -> int:
        return sum(reversal.amount for reversal in self.reversals._list)

    @property
    def reversed(self) -> bool:
        return self.amount_reversed >= self.amount

    @classmethod
    def _api_list_all(cls, url: str, destination: str | None = None, transfer_group: str | None = None,
                      limit: Any = None, starting_after: str | None = None, **unknown: Any) -> List:
        reject_unknown(unknown)
        page = super()._api_list_all(url, limit=limit, starting_after=starting_after)
        page._list = [t for t in reversed(page._list) if destination in (None, t.destination)
                      and transfer_group in (None, t.transfer_group)]
        return page


class TransferReversal(StripeObject):
    object = "transfer_reversal"
    _id_prefix = "trr_"

    def __init__(self, transfer: Transfer, amount: int, metadata: dict[str, str] | None) -> None:
        super().__init__()
        self.transfer, self.amount, self.currency = transfer.id, amount, transfer.currency
        self.metadata = metadata or {}


def reverse_transfer(id: str, amount: Any = None, metadata: dict[str, str] | None = None,
                     **unknown: Any) -> TransferReversal:
    reject_unknown(unknown)
    transfer = Transfer._api_retrieve(id)
    left = transfer.amount - transfer.amount_reversed
    amount = left if amount is None else try_convert_to_int(amount)
    if left == 0:
        raise invalid(f"Transfer {id} has already been reversed.", None, "transfer_already_reversed")
    if not isinstance(amount, int) or amount < 1:
        raise invalid("This value must be greater than or equal to 1.", "amount", "parameter_invalid_integer")
    if amount > left:
        raise invalid(f"Reversal amount ({amount}) is greater than unreversed amount on transfer ({left}).", "amount",
                      "amount_too_large")
    reversal = TransferReversal(transfer, amount, metadata)
    schedule_webhook(Event("transfer.reversed", transfer))
    return reversal


async def create_account_link(request: web.Request) -> web.Response:
    params = await ls.get_post_data(request) or {}
    account = store.get(f"account:{params.get('account')}")
    if account is None:
        raise invalid(f"No such account: '{params.get('account')}'", "account", "resource_missing")
    if params.get("type") not in ("account_onboarding", "account_update"):
        raise invalid("Invalid type: must be one of account_onboarding or account_update", "type")
    account._return_url = params.get("return_url")
    now = int(time.time())
    return ls.json_response({"object": "account_link", "created": now, "expires_at": now + 300,
                             "url": f"{request.url.origin()}/connect/onboarding/{account.id}"})


async def hosted_onboarding(request: web.Request) -> web.Response:
    account = Account._api_retrieve(request.match_info["id"])
    account._onboard()
    if account._return_url:
        raise web.HTTPFound(account._return_url)
    return web.Response(text="Onboarding complete.")


# --- Changes to localstripe's own resources. ---

def install() -> None:
    """Patch localstripe in this process (its package stays untouched)."""
    resources.Store.dump_to_disk = lambda self: None  # parallel runs share nothing
    resources.schedule_webhook = schedule_webhook
    intent_init, intent_export = PaymentIntent.__init__, PaymentIntent._export
    intent_charge, refund_init = PaymentIntent._create_charge, Refund.__init__
    setup_attach, list_events = SetupIntent._attach_pm, Event._api_list_all.__func__
    charge_export = Charge._export

    def init_intent(self: PaymentIntent, *args: Any, transfer_group: str | None = None,
                    description: str | None = None, **params: Any) -> None:
        intent_init(self, *args, **params)
        self.transfer_group, self.description = transfer_group, description

    def export_intent(self: PaymentIntent, expand: list[str] | None = None) -> dict[str, Any]:
        out = intent_export(self, expand)
        if self.latest_charge is not None and "latest_charge" not in [path.split(".")[0] for path in expand or []]:
            out["latest_charge"] = self.latest_charge.id
        out["amount_capturable"] = self.amount if out["status"] == "requires_capture" else 0
        out["amount_received"] = self.amount if out["status"] == "succeeded" else 0
        return out

    def create_charge(self: PaymentIntent, on_failure_now: Any) -> None:
        intent_charge(self, on_failure_now)
        if self.status == "requires_capture":
            schedule_webhook(Event("payment_intent.amount_capturable_updated", self))

    def init_refund(self: Refund, charge: str | None = None, payment_intent: str | None = None, amount: Any = None,
                    reason: str | None = None, **params: Any) -> None:
        intent = store.get(f"payment_intent:{payment_intent}")
        target = intent.latest_charge if intent is not None else store.get(f"charge:{charge}")
        if target is not None and target.status == "succeeded":
            if not target.captured:
                raise invalid(f"This uncaptured Charge was created by a PaymentIntent ({target.payment_intent}). You "
                              "must cancel the PaymentIntent to reverse the authorization instead of refunding the "
                              "Charge directly." if target.payment_intent else
                              f"Charge {target.id} has not been captured.")
            left = target.amount - target.amount_refunded
            amount = left if amount is None else try_convert_to_int(amount)
            if left <= 0:
                raise invalid(f"Charge {target.id} has already been refunded.", None, "charge_already_refunded")
            if isinstance(amount, int) and amount > left:
                raise invalid(f"Refund amount ({money(amount, target.currency)}) is greater than unrefunded amount "
                              f"on charge ({money(left, target.currency)})", "amount", "amount_too_large")
        refund_init(self, charge=charge, payment_intent=payment_intent, amount=amount, **params)
        self.reason = reason
        schedule_webhook(Event("charge.refunded", Charge._api_retrieve(self.charge)))

    def attach_to_setup(self: SetupIntent, method: PaymentMethod) -> None:
        setup_attach(self, method)
        if self.status == "succeeded" and self.customer:
            method.customer = self.customer  # as Stripe does: the card is now the customer's
            schedule_webhook(Event("payment_method.attached", method))
        if self.status == "succeeded":
            schedule_webhook(Event("setup_intent.succeeded", self))

    def list_newest_first(cls: type[Event], /, url: str, **params: Any) -> List:
        page = list_events(cls, url, **params)
        page._list.reverse()
        return page

    def export_charge(self: Charge, expand: list[str] | None = None) -> dict[str, Any]:
        out = charge_export(self, expand)
        method = store.get(f"payment_method:{self.payment_method}")
        if method is not None and method.type == "card":  # as Stripe does; a hold lasts 7 days unless set
            card: dict[str, Any] = {"brand": method.card["brand"], "last4": method.card["last4"]}
            if not self.captured and self.status == "succeeded":
                card["capture_before"] = getattr(self, "_capture_before", None) or self.created + HOLD_S
            out["payment_method_details"] = {"type": "card", "card": card}
        return out

    Charge._export = export_charge
    PaymentIntent.__init__, PaymentIntent._export = init_intent, export_intent
    PaymentIntent._create_charge, Refund.__init__ = create_charge, init_refund
    SetupIntent._attach_pm, Event._api_list_all = attach_to_setup, classmethod(list_newest_first)


def money(cents: int, currency: str) -> str:
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency)
    return f"{symbol}{cents / 100:.2f}" if symbol else f"{cents / 100:.2f} {currency.upper()}"


def confirm_intent(id: str, payment_method: str | None = None, **params: Any) -> PaymentIntent:
    if payment_method is not None:  # localstripe answers 500 "Not implemented" to this
        intent = PaymentIntent._api_retrieve(id)
        intent.payment_method = PaymentMethod._api_retrieve(payment_method).id
        if intent.latest_charge is not None and intent.latest_charge.status == "failed":
            intent.latest_charge = None  # another card after a decline
    return PaymentIntent._api_confirm(id, **params)


def cancel_intent(id: str, cancellation_reason: str | None = None, **params: Any) -> PaymentIntent:
    intent = PaymentIntent._api_cancel(id, **params)
    intent.cancellation_reason, intent.canceled_at = cancellation_reason, int(time.time())
    schedule_webhook(Event("payment_intent.canceled", intent))
    return intent


# --- Middlewares: request log, injected faults, idempotency keys. ---

@web.middleware
async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_config/"):
        return await handler(request)
    entry: dict[str, Any] = {"id": f"req_{uuid.uuid4().hex[:14]}", "method": request.method, "path": request.path,
             "idempotency_key": request.headers.get("Idempotency-Key"), "replayed": False, "status": None,
             "stripe_version": request.headers.get("Stripe-Version")}
    fake.requests.append(entry)
    serving.set(entry)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    entry["status"] = response.status
    return response


def take(rules: list[Rule], request: web.Request) -> Rule | None:
    for rule in rules:
        if rule.times > 0 and request.path.startswith(rule.path_prefix) and rule.method in (None, request.method):
            rule.times -= 1
            return rule
    return None


@web.middleware
async def faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/_config/"):
        return await handler(request)
    if failure := take(fake.fails, request):  # before doing anything: nothing happened, nothing to replay
        return web.json_response({"error": {"type": "api_error", "message": "An unknown error occurred (injected "
                                            f"by the test server) on {request.method} {request.path}."}},
                                 status=failure.status)
    stall = take(fake.stalls, request)
    response = await handler(request)
    if stall:  # the work is done (and an idempotency key remembers it); the answer comes late
        await asyncio.sleep(stall.seconds)
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/connect/"):  # a browser on Stripe's hosted pages
        return await handler(request)
    return await ls.auth_middleware(request, handler)


@web.middleware
async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key or not request.path.startswith("/v1/"):
        return await handler(request)
    scope, fingerprint = (ls.get_api_key(request), key), request.path.encode() + b"?" + await request.read()
    replay = fake.replays.get(scope)
    if replay is None:
        replay = fake.replays[scope] = Replay(fingerprint)
        try:
            response = await handler(request)
        except BaseException:
            fake.replays.pop(scope, None)
            raise
        finally:
            replay.done.set()
        replay.response = (response.status, response.body if isinstance(response, web.Response) else b"")
        return response
    if replay.fingerprint != fingerprint:
        return web.json_response({"error": {"type": "idempotency_error", "message": (
            "Keys for idempotent requests can only be used with the same parameters they were first used with. "
            f"Try using a key other than '{key}' if you meant to execute a different request.")}}, status=400)
    await replay.done.wait()  # a concurrent request with this key finishes first
    if replay.response is None:
        return await idempotency(request, handler)
    if entry := serving.get():
        entry["replayed"] = True
    status, body = replay.response
    return web.Response(status=status, body=body, content_type="application/json",
                        headers={"Idempotent-Replayed": "true", "Idempotency-Key": key})


# --- Control endpoints for the tests. ---

async def set_drop(request: web.Request) -> web.Response:
    fake.dropped = set((await request.json())["types"])
    return web.json_response({"types": sorted(fake.dropped)})


async def add_rule(request: web.Request) -> web.Response:
    body = await request.json()
    rule = Rule(body["path_prefix"], (body.get("method") or "").upper() or None, int(body.get("times", 1)),
                int(body.get("status", 500)), float(body.get("seconds", 0)))
    (fake.stalls if request.path.endswith("/stall") else fake.fails).append(rule)
    return web.json_response({})


async def set_capture_before(request: web.Request) -> web.Response:
    """Move the deadline of a PaymentIntent's uncaptured authorization (a card network's shorter hold)."""
    body = await request.json()
    intent = PaymentIntent._api_retrieve(body["payment_intent"])
    if intent.latest_charge is None:
        raise web.HTTPBadRequest(text="the PaymentIntent has no charge")
    intent.latest_charge._capture_before = int(body["capture_before"])
    return web.json_response({"charge": intent.latest_charge.id})


async def show_log(request: web.Request) -> web.Response:
    return web.json_response(fake.deliveries if request.path.endswith("/deliveries") else fake.requests)


async def remove_webhook(request: web.Request) -> web.Response:
    _webhooks.pop(request.match_info["id"], None)
    return web.json_response({})


async def flush(request: web.Request) -> web.Response:
    store.clear()
    fake.reset()
    return web.json_response({})


def build_app(webhook_delay: float = 0.05) -> web.Application:
    install()
    fake.webhook_delay = webhook_delay
    app = web.Application(middlewares=[record, ls.error_middleware, faults, authenticate, idempotency,
                                       ls.error_middleware])  # the inner one: replays include errors
    app.cleanup_ctx.append(webhook_sender)
    routes: list[tuple[str, str, Any]] = [
        ("POST", "/_config/drop", set_drop),
        ("POST", "/_config/fail", add_rule),
        ("POST", "/_config/stall", add_rule),
        ("GET", "/_config/deliveries", show_log),
        ("GET", "/_config/requests", show_log),
        ("DELETE", "/_config/webhooks/{id}", remove_webhook),
        ("DELETE", "/_config/data", flush),
        ("POST", "/_config/capture_before", set_capture_before),
        ("POST", "/v1/payment_intents/{id}/confirm", ls.api_extra(confirm_intent, "")),
        ("POST", "/v1/payment_intents/{id}/cancel", ls.api_extra(cancel_intent, "")),
        ("POST", "/v1/account_links", create_account_link),
        ("GET", "/connect/onboarding/{id}", hosted_onboarding),
        ("POST", "/v1/transfers/{id}/reversals", ls.api_extra(reverse_transfer, "")),
        ("GET", "/v1/transfers/{id}/reversals", ls.api_extra(lambda id, **_: Transfer._api_retrieve(id).reversals, "")),
    ]
    for cls in (Account, Transfer):
        url = f"/v1/{cls.object}s"
        routes += [("POST", url, ls.api_create(cls, url)), ("GET", url + "/{id}", ls.api_retrieve(cls, url)),
                   ("POST", url + "/{id}", ls.api_update(cls, url)), ("GET", url, ls.api_list_all(cls, url))]
    mine = {(method, path) for method, path, _ in routes}
    routes += [(route.method, route.resource.canonical, route.handler) for route in ls.app.router.routes()
               if route.resource is not None and (route.method, route.resource.canonical) not in mine]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420, help="0: any free port (the ready line says which)")
    parser.add_argument("--webhook-delay", type=float, default=0.05, help="seconds between an event and its sending")
    args = parser.parse_args()
    asyncio.run(serve(build_app(args.webhook_delay), args.host, args.port))


# --- The test side: a subprocess per StripeServer, driven with plain synchronous calls. ---

class StripeServer:
    """`with StripeServer() as fake:` the server on a free port, with its own data; `fake.url` is its address."""

    def __init__(self, webhook_delay: float = 0.05) -> None:
        self.webhook_delay = webhook_delay
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> "StripeServer":
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.stripe_server", "--port", "0", "--webhook-delay", str(self.webhook_delay)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready = self._process.stdout.readline()
        if not ready.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"the Stripe test server did not start: {ready!r}")
        self.url = ready.split()[-1]
        self.requests()  # it answers
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=5)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.url + path, json=body, timeout=5)
        response.raise_for_status()
        return response.json() if response.content else None

    def add_webhook(self, name: str, url: str, secret: str, events: list[str] | None = None) -> None:
        self._call("POST", f"/_config/webhooks/{name}", {"url": url, "secret": secret, "events": events})

    def remove_webhook(self, name: str) -> None:
        self._call("DELETE", f"/_config/webhooks/{name}")

    def drop(self, *types: str) -> None:
        """Events of these types are created but never sent, from now on; `drop()` sends everything again."""
        self._call("POST", "/_config/drop", {"types": list(types)})

    def fail(self, path_prefix: str, method: str | None = "POST", times: int = 1, status: int = 500) -> None:
        """The next `times` matching requests fail with a Stripe `api_error` before doing anything."""
        self._call("POST", "/_config/fail", {"path_prefix": path_prefix, "method": method, "times": times,
                                             "status": status})

    def stall(self, path_prefix: str, seconds: float, method: str | None = None, times: int = 1) -> None:
        """The next `times` matching requests do their work, then wait `seconds` before answering."""
        self._call("POST", "/_config/stall", {"path_prefix": path_prefix, "method": method, "times": times,
                                              "seconds": seconds})

    def expire_hold(self, intent_id: str, capture_before: int) -> None:
        """The intent's authorization must be captured before this Unix time (its charge says so)."""
        self._call("POST", "/_config/capture_before", {"payment_intent": intent_id, "capture_before": capture_before})

    def deliveries(self) -> list[dict[str, Any]]:
        """Webhook deliveries in order: id, type, url, status (None: unreachable or dropped), dropped."""
        result: list[dict[str, Any]] = self._call("GET", "/_config/deliveries")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """API requests in order: id, method, path, idempotency_key, replayed, status, stripe_version."""
        result: list[dict[str, Any]] = self._call("GET", "/_config/requests")
        return result

    def reset(self) -> None:
        """Forget all objects, events, idempotency keys, rules and logs (registered webhooks stay)."""
        self._call("DELETE", "/_config/data")


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StripeServer]:
    with StripeServer() as server:
        yield server


if __name__ == "__main__":
    main()
