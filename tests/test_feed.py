"""The back office's live feed: admins see every brand's activity, merchants their brands', on
whichever gateway process the watching session is; `admin.unwatch` ends it."""

from protocol.admin import Unwatch, Watch
from protocol.ai import AiReply, AiStart
from protocol.catalog import MerchantBrandsSet, PriceSave
from protocol.orders import OrderAccept, OrderCancel, OrderCreate
from tests.test_ai import answer_of, ask
from tests.world import brand_with_sku, events, order_at, quiet, refused, spot, technician


async def test_admins_see_every_brand_and_merchants_their_own_across_processes(make_gateway, signed_in):
    async with make_gateway() as other:
        admin, _ = await signed_in("admin", gw=other)
        brand, sku = await brand_with_sku(admin)
        other_brand, other_sku = await brand_with_sku(admin)
        merchant, merchant_id = await signed_in("merchant")
        await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
        assert (await admin.request(Watch())).brands is None
        assert (await merchant.request(Watch())).brands == [brand]

        consumer, consumer_id = await signed_in("consumer")
        place = spot()
        tech, tech_id = await technician(signed_in, place)
        mine = (await consumer.request(order_at(place, brand=brand, sku=sku))).order
        theirs = (await consumer.request(order_at(place, brand=other_brand, sku=other_sku))).order

        created = await events(admin, "admin.activity", 2)
        assert {(a.kind, a.order_id, a.brand) for a in created} == {
            ("order.created", mine.id, brand), ("order.created", theirs.id, other_brand)}
        [seen] = await events(merchant, "admin.activity")
        assert (seen.kind, seen.order_id, seen.state, seen.user_id) == ("order.created", mine.id, "open", consumer_id)
        assert await quiet(merchant, "admin.activity")  # the other brand's order never reaches them

        await tech.request(OrderAccept(order_id=mine.id))
        [moved] = await events(merchant, "admin.activity")
        assert (moved.kind, moved.previous_state, moved.state, moved.user_id) == (
            "order.state", "open", "accepted", tech_id)

        await merchant.request(Unwatch())
        await consumer.request(OrderCancel(order_id=theirs.id))
        await events(admin, "admin.activity", 2)  # the accept, then the cancel
        assert await quiet(merchant, "admin.activity")


async def test_catalog_changes_reach_the_brands_merchants(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    await merchant.request(Watch())
    await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=12345))
    await brand_with_sku(admin)  # another brand's
    [changed] = await events(merchant, "admin.activity")
    assert (changed.kind, changed.brand, changed.detail) == ("catalog.changed", brand, f"price {sku}/repair")
    assert await quiet(merchant, "admin.activity")


async def test_a_merchant_losing_a_brand_stops_hearing_of_it_on_every_process(make_gateway, signed_in):
    async with make_gateway() as other:
        admin, _ = await signed_in("admin", gw=other)
        brand, sku = await brand_with_sku(admin)
        kept, kept_sku = await brand_with_sku(admin)
        merchant, merchant_id = await signed_in("merchant")
        await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand, kept]))
        assert (await merchant.request(Watch())).brands == sorted([brand, kept])
        await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[kept]))  # on the other process
        [stopped] = await events(merchant, "admin.unwatched")
        assert stopped.reason == "memberships"
        consumer, _ = await signed_in("consumer")
        await consumer.request(order_at(spot(), brand=brand, sku=sku))
        assert await quiet(merchant, "admin.activity")
        assert (await merchant.request(Watch())).brands == [kept]  # watching again: the brands they have now
        order = (await consumer.request(order_at(spot(), brand=kept, sku=kept_sku))).order
        [seen] = await events(merchant, "admin.activity")
        assert (seen.kind, seen.order_id) == ("order.created", order.id)


async def test_apps_cannot_watch(signed_in):
    for role in ("consumer", "technician"):
        client, _ = await signed_in(role)
        assert (await refused(client, Watch())).code == "forbidden"


async def test_ai_conversations_reach_the_feed_without_their_words(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    await merchant.request(Watch())
    consumer, consumer_id = await signed_in("consumer")
    conversation_id, _, _ = await ask(consumer, AiStart(brand=brand, sku=sku, description="The washer will not drain"))
    await consumer.request(AiReply(conversation_id=conversation_id, text="Still full of water", wants_technician=True))
    _, escalated = await answer_of(consumer, conversation_id, 2)
    place = spot()
    order = (await consumer.request(OrderCreate(draft_id=escalated.draft_id, description="Washer", address="1 Lane",
                                                lat=place[0], lng=place[1]))).order
    seen = await events(merchant, "admin.activity", 5)
    assert [(a.kind, a.state) for a in seen] == [
        ("ai.conversation", "active"), ("ai.conversation", "continue"), ("ai.conversation", "technician_needed"),
        ("order.created", order.state), ("ai.conversation", "ordered")]
    assert all((a.brand, a.user_id) == (brand, consumer_id) for a in seen)
    assert {a.conversation_id for a in seen if a.kind == "ai.conversation"} == {conversation_id}
    assert seen[-1].order_id == order.id
    assert not any("drain" in (a.detail or "") or "water" in (a.detail or "") for a in seen)
