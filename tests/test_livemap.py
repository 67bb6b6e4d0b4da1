"""`admin.map`, what the back office's live map draws: admins see on-duty technicians and every
brand's orders in progress; merchants their brands' orders and only the technicians on them."""

from protocol.catalog import MerchantBrandsSet
from protocol.orders import OrderAccept, OrderCancel
from protocol.oversight import AdminMap
from tests.world import brand_with_sku, order_at, refused, spot, technician


async def test_admins_see_technicians_and_orders_in_progress_merchants_only_theirs(signed_in):
    admin, _ = await signed_in("admin")
    mine, sku = await brand_with_sku(admin)
    theirs, their_sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[mine]))
    place = spot()
    working, working_id = await technician(signed_in, place)
    _, idle_id = await technician(signed_in, place)
    consumer, _ = await signed_in("consumer")
    taken = (await consumer.request(order_at(place, brand=mine, sku=sku))).order
    waiting = (await consumer.request(order_at(place, brand=mine, sku=sku))).order
    dropped = (await consumer.request(order_at(place, brand=mine, sku=sku))).order
    other = (await consumer.request(order_at(place, brand=theirs, sku=their_sku))).order
    await working.request(OrderAccept(order_id=taken.id))
    await consumer.request(OrderCancel(order_id=dropped.id))

    seen = await admin.request(AdminMap(limit=2000))
    assert {working_id, idle_id} <= {t.id for t in seen.technicians}
    [where] = [t for t in seen.technicians if t.id == working_id]
    assert (round(where.lat, 4), round(where.lng, 4)) == (round(place[0], 4), round(place[1], 4))
    ids = {o.id for o in seen.orders}
    assert {taken.id, waiting.id, other.id} <= ids and dropped.id not in ids  # cancelled: off the map
    [row] = [o for o in seen.orders if o.id == taken.id]
    assert (row.state, row.brand, row.technician_id) == ("accepted", mine, working_id)
    assert seen.radius_mi == 50.0 and seen.stale_after_s > 0

    theirs_seen = await merchant.request(AdminMap())
    assert {o.id for o in theirs_seen.orders} == {taken.id, waiting.id}
    assert [t.id for t in theirs_seen.technicians] == [working_id]  # the idle one is not theirs to see
    assert (await refused(merchant, AdminMap(brand=theirs))).code == "not_found"
    one = await admin.request(AdminMap(brand=theirs))
    assert [o.id for o in one.orders] == [other.id] and one.technicians == []


async def test_the_newest_are_kept_within_the_limit(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    consumer, _ = await signed_in("consumer")
    made = [(await consumer.request(order_at(spot(), brand=brand, sku=sku))).order for _ in range(3)]
    page = await admin.request(AdminMap(brand=brand, limit=2))
    assert [o.id for o in page.orders] == [made[2].id, made[1].id] and page.more is True
    assert (await refused(admin, AdminMap(limit=0))).code == "bad_request"
