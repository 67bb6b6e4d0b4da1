"""Merchants' orders for their customers: the customer linked by e-mail or invited, the claim code
that lets them take the account, the order flowing like any other, and who sees the contact."""

import asyncio
import uuid

from protocol.admin import LogList
from protocol.auth import Auth, Claim, Login, Register
from protocol.catalog import MerchantBrandsSet
from protocol.orders import Customer, OrderAccept, OrderGet, OrderList
from tests.world import brand_with_sku, events, order_at, refused, spot, technician

PASSWORD = "a long claimed password"


def address() -> str:
    return f"Customer.{uuid.uuid4().hex[:10]}@Example.com"


def customer(email: str, name: str = "Rosa Díaz", phone: str = "+1 555 0142") -> Customer:
    return Customer(name=name, phone=phone, email=email)


async def merchant_of(signed_in, admin=None, brand_sku=None):
    """(merchant client, merchant id, brand, sku): a merchant member of a brand of the test's own."""
    admin = admin or (await signed_in("admin"))[0]
    brand, sku = brand_sku or await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    return merchant, merchant_id, brand, sku


async def test_an_invited_customer_claims_the_account_once_and_then_logs_in_to_both_orders(signed_in, connect):
    merchant, _, brand, sku = await merchant_of(signed_in)
    email = address()
    first = await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
    assert first.claim_code and first.claim_expires_at is not None
    assert first.order.customer is not None
    assert (first.order.customer.name, first.order.customer.phone, first.order.customer.email) == (
        "Rosa Díaz", "+1 555 0142", email)
    # the same e-mail, typed otherwise: the same consumer, and a fresh code that replaces the first
    second = await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email.lower())))
    assert second.order.consumer_id == first.order.consumer_id
    assert second.claim_code and second.claim_code != first.claim_code

    app = await connect()
    before = await refused(app, Login(email=email, password=PASSWORD))
    wrong = await refused(app, Login(email=email, password="not the password"))
    assert (before.code, before.error.message) == (wrong.code, wrong.error.message)
    assert before.code == "unauthorized"
    taken = await refused(app, Register(email=email, password=PASSWORD, role="consumer", name="Someone"))
    assert taken.code == "conflict" and "claim code" in taken.error.message
    assert (await refused(app, Claim(code=first.claim_code, password=PASSWORD))).code == "not_found"

    typed = second.claim_code.lower().replace("-", " ")  # read out over the phone
    tokens = await app.request(Claim(code=typed, password=PASSWORD, locale="es-MX"))
    assert (tokens.user_id, tokens.role) == (first.order.consumer_id, "consumer")
    again = await refused(app, Claim(code=second.claim_code, password="another password"))
    assert again.code == "not_found"

    logged_in = await app.request(Login(email=email.upper(), password=PASSWORD))
    session = await app.request(Auth(token=logged_in.token))
    assert (session.user_id, session.locale) == (first.order.consumer_id, "es")
    listed = await app.request(OrderList())
    assert {o.id for o in listed.orders} == {first.order.id, second.order.id}
    assert sorted(o.customer.email for o in listed.orders if o.customer) == sorted([email, email.lower()])
    claimed = await refused(app, Register(email=email, password=PASSWORD, role="consumer", name="Someone"))
    assert claimed.code == "conflict" and "claim code" not in claimed.error.message
    # a claimed account gets no code from later orders
    third = await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
    assert third.order.consumer_id == first.order.consumer_id and third.claim_code is None


async def test_an_expired_code_is_refused_like_an_unknown_one(signed_in, connect, gateway):
    merchant, _, brand, sku = await merchant_of(signed_in)
    created = await merchant.request(order_at(spot(), brand=brand, sku=sku, customer=customer(address())))
    await gateway.services.db.execute("UPDATE users SET claim_expires_at = now() - interval '1 second'"
                                      " WHERE id = $1::uuid", created.order.consumer_id)
    app = await connect()
    expired = await refused(app, Claim(code=created.claim_code, password=PASSWORD))
    unknown = await refused(app, Claim(code="ABCD-EFGH-JKMN-PQRS", password=PASSWORD))
    assert (expired.code, expired.error.message) == (unknown.code, unknown.error.message)
    assert expired.code == "not_found"


async def test_a_registered_consumer_is_linked_by_e_mail_and_gets_no_code(signed_in, connect):
    merchant, _, brand, sku = await merchant_of(signed_in)
    email = address()
    app = await connect()
    registered = await app.request(Register(email=email, password=PASSWORD, role="consumer", name="Kim"))
    created = await merchant.request(order_at(spot(), brand=brand, sku=sku,
                                              customer=customer(email.upper(), name="Kim L.")))
    assert created.order.consumer_id == registered.user_id and created.claim_code is None
    await app.request(Auth(token=registered.token))
    [mine] = (await app.request(OrderList())).orders
    assert mine.id == created.order.id and mine.customer is not None and mine.customer.name == "Kim L."


async def test_the_e_mail_of_a_technician_is_a_conflict_and_nothing_is_ordered(signed_in, connect, gateway):
    merchant, _, brand, sku = await merchant_of(signed_in)
    email = address()
    app = await connect()
    await app.request(Register(email=email, password=PASSWORD, role="technician", name="Tech"))
    answer = await refused(merchant, order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
    assert answer.code == "conflict" and "technician" not in answer.error.message.lower()
    assert (await merchant.request(OrderList())).orders == []


async def test_a_merchant_gives_exactly_one_of_customer_and_consumer_id(signed_in):
    merchant, _, brand, sku = await merchant_of(signed_in)
    both = order_at(spot(), brand=brand, sku=sku, customer=customer(address()), consumer_id=str(uuid.uuid4()))
    assert (await refused(merchant, both)).code == "bad_request"
    assert (await refused(merchant, order_at(spot(), brand=brand, sku=sku))).code == "bad_request"
    consumer, _ = await signed_in("consumer")
    assert (await refused(consumer, order_at(spot(), customer=customer(address())))).code == "bad_request"
    assert (await merchant.request(OrderList())).orders == []


async def test_merchants_inviting_one_e_mail_at_once_make_one_account(signed_in, gateway):
    admin, _ = await signed_in("admin")
    brand_sku = await brand_with_sku(admin)
    merchants = [await merchant_of(signed_in, admin, brand_sku) for _ in range(4)]
    email = address()
    brand, sku = brand_sku
    created = await asyncio.gather(*(m.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
                                     for m, *_ in merchants))
    assert len({c.order.consumer_id for c in created}) == 1
    accounts = await gateway.services.db.fetchval(
        "SELECT count(*) FROM users WHERE email_idx = $1", gateway.services.cipher.email_index(email))
    assert accounts == 1


async def test_a_code_is_not_renewed_for_a_merchant_of_another_brand(signed_in, connect):
    admin, _ = await signed_in("admin")
    ours, _, brand, sku = await merchant_of(signed_in, admin)
    theirs, _, other_brand, other_sku = await merchant_of(signed_in, admin)
    email = address()
    invited = await ours.request(order_at(spot(), brand=brand, sku=sku, customer=customer(email)))
    # a code now would let the other brand's merchant into an account holding our order
    linked = await theirs.request(order_at(spot(), brand=other_brand, sku=other_sku, customer=customer(email)))
    assert linked.order.consumer_id == invited.order.consumer_id and linked.claim_code is None
    assert (await refused(theirs, OrderGet(order_id=invited.order.id))).code == "not_found"
    app = await connect()
    tokens = await app.request(Claim(code=invited.claim_code, password=PASSWORD))  # ours still works
    assert tokens.user_id == invited.order.consumer_id


async def test_the_order_is_dispatched_and_the_technician_sees_name_and_phone_only(signed_in, connect):
    merchant, _, brand, sku = await merchant_of(signed_in)
    place = spot()
    tech, tech_id = await technician(signed_in, place)
    email = address()
    created = await merchant.request(order_at(place, brand=brand, sku=sku, customer=customer(email)))
    app = await connect()  # the customer claims the account and follows the order live
    await app.request(Auth(token=(await app.request(Claim(code=created.claim_code, password=PASSWORD))).token))
    [announced] = await events(tech, "order.available")
    assert announced.order.id == created.order.id
    assert announced.order.customer is None and announced.order.address is None
    accepted = (await tech.request(OrderAccept(order_id=created.order.id))).order
    assert accepted.technician_id == tech_id and accepted.customer is not None
    assert (accepted.customer.name, accepted.customer.phone, accepted.customer.email) == (
        "Rosa Díaz", "+1 555 0142", None)
    [to_consumer] = await events(app, "order.status")
    [to_technician] = await events(tech, "order.status")
    assert to_consumer.order.customer.email == email and to_technician.order.customer.email is None
    assert to_technician.order.customer.phone == "+1 555 0142"
    seen = (await merchant.request(OrderGet(order_id=created.order.id))).order
    assert seen.state == "accepted" and seen.customer is not None and seen.customer.email == email
    stranger, _ = await technician(signed_in, spot())
    other_consumer, _ = await signed_in("consumer")
    for outsider in (stranger, other_consumer):
        assert (await refused(outsider, OrderGet(order_id=created.order.id))).code == "not_found"


async def test_the_contact_is_sealed_in_postgres_and_staff_reads_are_logged(signed_in, gateway):
    admin, _ = await signed_in("admin")
    merchant, merchant_id, brand, sku = await merchant_of(signed_in, admin)
    email, name, phone = address(), f"Zelda {uuid.uuid4().hex[:6]}", "+44 20 7946 0958"
    created = await merchant.request(order_at(spot(), brand=brand, sku=sku,
                                              customer=customer(email, name=name, phone=phone)))
    db = gateway.services.db
    stored = " ".join([
        await db.fetchval("SELECT u::text FROM users u WHERE id = $1::uuid", created.order.consumer_id),
        await db.fetchval("SELECT o::text FROM orders o WHERE id = $1::uuid", created.order.id),
        *[r["request"] for r in await db.fetch("SELECT request::text AS request FROM admin_log"
                                               " WHERE actor_id = $1", merchant_id)]]).lower()
    for secret in (email, name, phone):
        assert secret.lower() not in stored
        assert secret.encode().hex() not in stored and secret.lower().encode().hex() not in stored
    await merchant.request(OrderList())
    reads = (await admin.request(LogList(actor_id=merchant_id, action="read.customer"))).entries
    assert [(e.target_kind, e.target_id) for e in reads] == [("order", created.order.id)]
