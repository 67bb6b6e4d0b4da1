"""Suspending users over real sessions: a suspended user's sessions close on every gateway process,
their tokens stop working, a technician stops getting orders; unsuspending lets them back in."""

import asyncio
import contextlib
from typing import Any

from protocol.admin import LogList, Watch
from protocol.auth import Auth, Claim, Login, Refresh, Register
from protocol.client import Client, ErrorReply
from protocol.location import Duty, LocationUpdate
from protocol.moderation import Reassign
from protocol.orders import OrderAccept
from protocol.suspension import Suspend, SuspensionList, Unsuspend
from tests.conftest import mint
from tests.test_merchant_orders import PASSWORD, address, customer, merchant_of
from tests.test_uploads import PNG, fetch, upload
from tests.world import events, fresh, order_at, quiet, refused, spot, technician


async def ended(client: Client) -> tuple[dict[str, Any], int | None, str | None]:
    """The frame a session was told before it was closed, and the close code and reason."""
    told = await asyncio.wait_for(client.unmatched.get(), 10)
    await asyncio.wait_for(client.ws.wait_closed(), 10)
    return told, client.ws.close_code, client.ws.close_reason


async def closed(client: Client) -> tuple[int | None, str | None]:
    await asyncio.wait_for(client.ws.wait_closed(), 10)
    return client.ws.close_code, client.ws.close_reason


async def test_a_suspension_closes_sessions_on_every_process_and_refuses_every_way_back_in(
        gateway, make_gateway, connect, signed_in):
    async with make_gateway() as other:
        email, password = f"{fresh('susp')}@example.com", "correct horse"
        tokens = await (await connect()).request(Register(email=email, password=password, role="consumer",
                                                          name="Sam", locale="es"))
        here, there = await connect(), await connect(other)
        await here.request(Auth(token=tokens.token))
        await there.request(Auth(token=tokens.token))
        admin, _ = await signed_in("admin")
        watcher, _ = await signed_in("admin", gw=other)
        await watcher.request(Watch())

        done = await admin.request(Suspend(user_id=tokens.user_id, reason="chargeback fraud"))
        assert (done.suspension.user_id, done.suspension.reason, done.suspension.lifted_at) == (
            tokens.user_id, "chargeback fraud", None)
        assert (done.sessions_closed, done.refresh_tokens_revoked, done.taken_off_duty, done.orders) == (
            1, 1, False, [])
        for session in (here, there):  # told why, in their language, then closed
            told, code, reason = await ended(session)
            assert (told["type"], told["code"], told["id"]) == ("error", "suspended", None)
            assert told["message"] == "Esta cuenta está suspendida. Ponte en contacto con soporte."
            assert (code, reason) == (4003, "suspended")
        [seen] = [a for a in await events(watcher, "admin.activity") if a.kind == "user.suspended"]
        assert (seen.user_id, seen.detail) == (tokens.user_id, "chargeback fraud")

        again = await connect(other)  # the session token is still valid, but not for a suspended user
        assert (await refused(again, Auth(token=tokens.token))).code == "suspended"
        assert await closed(again) == (4003, "suspended")
        door = await connect()
        assert (await refused(door, Refresh(refresh_token=tokens.refresh_token))).code == "suspended"
        assert (await refused(door, Login(email=email, password=password))).code == "suspended"
        assert (await refused(door, Login(email=email, password="wrong password"))).code == "unauthorized"

        lifted = await admin.request(Unsuspend(user_id=tokens.user_id))
        assert lifted.suspension.id == done.suspension.id and lifted.suspension.lifted_at is not None
        [seen] = [a for a in await events(watcher, "admin.activity") if a.kind == "user.unsuspended"]
        assert seen.user_id == tokens.user_id
        back = await connect(other)
        assert (await back.request(Auth(token=tokens.token))).user_id == tokens.user_id
        # The refresh tokens revoked by the suspension stay revoked: logging in gives new ones.
        assert (await refused(door, Refresh(refresh_token=tokens.refresh_token))).code == "unauthorized"
        fresh_tokens = await door.request(Login(email=email, password=password))
        assert (await door.request(Refresh(refresh_token=fresh_tokens.refresh_token))).user_id == tokens.user_id


async def test_a_suspended_technician_is_no_longer_announced_orders(signed_in):
    admin, _ = await signed_in("admin")
    place = spot()
    tech, tech_id = await technician(signed_in, place)
    colleague, _ = await technician(signed_in, place)
    consumer, _ = await signed_in("consumer")
    held = (await consumer.request(order_at(place))).order
    await events(colleague, "order.available")
    await tech.request(OrderAccept(order_id=held.id))

    done = await admin.request(Suspend(user_id=tech_id, reason="no-show"))
    assert done.taken_off_duty
    assert [(o.order_id, o.state, o.role) for o in done.orders] == [(held.id, "accepted", "technician")]
    assert (await ended(tech))[1] == 4003
    opened = (await consumer.request(order_at(place))).order
    [available] = await events(colleague, "order.available")
    assert available.order.id == opened.id

    await admin.request(Unsuspend(user_id=tech_id))
    returned, _ = await signed_in("technician", user_id=tech_id)  # signed in, but off duty until they say so
    await consumer.request(order_at(place))
    await events(colleague, "order.available")
    assert await quiet(returned, "order.available")
    await returned.request(Duty(on_duty=True))
    await returned.request(LocationUpdate(lat=place[0], lng=place[1]))
    announced = (await consumer.request(order_at(place))).order
    assert (await events(returned, "order.available"))[0].order.id == announced.id


async def test_a_consumers_unfinished_orders_are_listed(signed_in):
    admin, _ = await signed_in("admin")
    consumer, consumer_id = await signed_in("consumer")
    order = (await consumer.request(order_at(spot()))).order
    done = await admin.request(Suspend(user_id=consumer_id, reason="abuse"))
    assert [(o.order_id, o.state, o.role) for o in done.orders] == [(order.id, "open", "consumer")]


async def test_only_admins_suspend_and_never_themselves(signed_in):
    _, victim = await signed_in("consumer")
    for role in ("consumer", "technician", "merchant"):
        client, _ = await signed_in(role)
        assert (await refused(client, Suspend(user_id=victim, reason="x"))).code == "forbidden"
        assert (await refused(client, Unsuspend(user_id=victim))).code == "forbidden"
        assert (await refused(client, SuspensionList())).code == "forbidden"
    admin, admin_id = await signed_in("admin")
    assert (await refused(admin, Suspend(user_id=admin_id, reason="oops"))).code == "forbidden"
    assert (await admin.request(SuspensionList(user_id=victim))).suspensions == []


async def test_any_id_can_be_suspended_once_at_a_time_and_the_history_is_kept(gateway, connect, signed_in):
    admin, admin_id = await signed_in("admin")
    stranger = fresh("minted")  # no account: staff tokens are minted for such ids
    first = await admin.request(Suspend(user_id=stranger, reason="leaked token"))
    assert first.refresh_tokens_revoked == 0
    _, token = mint(gateway, "merchant", stranger)
    assert (await refused(await connect(), Auth(token=token))).code == "suspended"

    twice = await refused(admin, Suspend(user_id=stranger, reason="again"))
    assert (twice.code, twice.error.details) == ("conflict", {"current_state": "suspended"})
    await admin.request(Unsuspend(user_id=stranger))
    not_suspended = await refused(admin, Unsuspend(user_id=stranger))
    assert (not_suspended.code, not_suspended.error.details) == ("conflict", {"current_state": "active"})
    second = await admin.request(Suspend(user_id=stranger, reason="token leaked again"))

    listed = await admin.request(SuspensionList(user_id=stranger))
    assert [(s.id, s.reason, s.suspended_by, s.lifted_by is not None) for s in listed.suspensions] == [
        (second.suspension.id, "token leaked again", admin_id, False),
        (first.suspension.id, "leaked token", admin_id, True)]
    in_force = await admin.request(SuspensionList(user_id=stranger, in_force=True, limit=1))
    assert ([s.id for s in in_force.suspensions], in_force.next_before) == ([second.suspension.id], None)
    page = await admin.request(SuspensionList(user_id=stranger, limit=1))
    assert page.next_before == second.suspension.id
    older = await admin.request(SuspensionList(user_id=stranger, before=page.next_before))
    assert [s.id for s in older.suspensions] == [first.suspension.id]

    logged = (await admin.request(LogList(actor_id=admin_id, target_id=stranger))).entries
    assert [(e.action, e.outcome) for e in logged] == [("admin.suspensions", "ok")] * 4 + [
        ("admin.suspend", "ok"), ("admin.unsuspend", "conflict"), ("admin.unsuspend", "ok"),
        ("admin.suspend", "conflict"), ("admin.suspend", "ok")]
    assert logged[-1].request == {"user_id": stranger, "reason": "leaked token"}


async def test_a_suspended_user_cannot_fetch_attachments_with_a_token_still_valid(gateway, signed_in):
    admin, _ = await signed_in("admin")
    consumer, consumer_id = await signed_in("consumer")
    photo = await upload(consumer, PNG, "image/png")
    token = mint(gateway, "consumer", consumer_id)[1]
    await admin.request(Suspend(user_id=consumer_id, reason="scraping"))
    assert (await asyncio.to_thread(fetch, gateway, photo, token))[0] == 403
    await admin.request(Unsuspend(user_id=consumer_id))
    assert await asyncio.to_thread(fetch, gateway, photo, token) == (200, PNG, "image/png")


async def test_sessions_signing_in_as_the_suspension_lands_are_closed_too(gateway, make_gateway, connect, signed_in):
    async with make_gateway() as other:
        admin, _ = await signed_in("admin")
        user_id, token = mint(gateway, "technician")
        clients = [await connect(gw) for gw in (gateway, other) * 10]

        async def sign_in(client: Client) -> None:
            with contextlib.suppress(ErrorReply, ConnectionError):  # refused, or closed before the reply
                await client.request(Auth(token=token))

        await asyncio.gather(*(sign_in(c) for c in clients), admin.request(Suspend(user_id=user_id, reason="race")))
        for client in clients:  # signed in before the suspension (then ended) or refused after it: none stays
            assert await closed(client) == (4003, "suspended")


async def test_an_invited_customer_who_is_suspended_claims_the_account_but_gets_no_tokens(signed_in, connect):
    admin, _ = await signed_in("admin")
    merchant, _, brand, sku = await merchant_of(signed_in, admin)
    email = address()
    invited = await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
    await admin.request(Suspend(user_id=invited.order.consumer_id, reason="disputed every order"))
    app = await connect()
    assert (await refused(app, Claim(code=invited.claim_code, password=PASSWORD))).code == "suspended"
    await admin.request(Unsuspend(user_id=invited.order.consumer_id))
    tokens = await app.request(Login(email=email, password=PASSWORD))  # the claim set the password
    assert tokens.user_id == invited.order.consumer_id


async def test_suspending_again_enforces_it_anew_and_reassign_skips_the_suspended(gateway, signed_in):
    """A first suspension whose clean-up failed half-way (here: a technician put back on duty
    behind its back) is enforced again by a second `admin.suspend`, which still answers
    `conflict`; staff cannot hand an order to a suspended technician."""
    admin, _ = await signed_in("admin")
    place = spot()
    tech, tech_id = await technician(signed_in, place)
    await admin.request(Suspend(user_id=tech_id, reason="fraud check"))
    await closed(tech)
    await gateway.services.db.execute("UPDATE technicians SET on_duty = true WHERE user_id = $1", tech_id)
    again = await refused(admin, Suspend(user_id=tech_id, reason="fraud check"))
    assert (again.code, again.error.details) == ("conflict", {"current_state": "suspended"})
    assert await gateway.services.db.fetchval("SELECT on_duty FROM technicians WHERE user_id = $1", tech_id) is False

    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(place))).order
    await gateway.services.db.execute("UPDATE technicians SET on_duty = true WHERE user_id = $1", tech_id)
    moved = await refused(admin, Reassign(order_id=order.id, technician_id=tech_id))
    assert (moved.code, moved.error.details) == ("conflict", {"current_state": "off_duty"})


async def test_sessions_signing_in_at_once_each_get_their_own_answer(gateway, connect, signed_in):
    """A node taking over a stopped node's sessions reads the suspensions and duty of every sign-in
    of the moment in one query (storage.coalesce): each session still gets its own user's answer."""
    admin, _ = await signed_in("admin")
    techs = [mint(gateway, "technician") for _ in range(40)]
    for _, token in techs[::2]:  # every other one has gone on duty before
        first = await connect()
        await first.request(Auth(token=token))
        await first.request(Duty(on_duty=True))
    banned = techs[1][0]
    await admin.request(Suspend(user_id=banned, reason="chargeback fraud"))
    apps = [await connect() for _ in techs]
    signing_in = [app.request(Auth(token=token)) for app, (_, token) in zip(apps, techs, strict=True)]
    answers = await asyncio.gather(*signing_in, return_exceptions=True)
    assert isinstance(answers[1], ErrorReply) and answers[1].code == "suspended"
    assert [a.user_id for i, a in enumerate(answers) if i != 1] == [u for i, (u, _) in enumerate(techs) if i != 1]
    acks = await asyncio.gather(*(app.request(LocationUpdate(lat=40.0, lng=-74.0))
                                  for i, app in enumerate(apps) if i != 1))
    assert [ack.on_duty for ack in acks] == [i % 2 == 0 for i in range(len(techs)) if i != 1]
