"""The audit log: staff actions and their outcomes, secrets and personal fields redacted, rows
that no one can change, and `admin.log` for admins only."""

import asyncpg
import pytest

from protocol.admin import LogList
from protocol.catalog import CatalogList, MerchantBrandsSet, SkuSave
from tests.world import brand_with_sku, fresh, order_at, refused, spot


async def test_staff_actions_are_logged_with_their_outcome_and_target(signed_in):
    admin, admin_id = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    await merchant.request(SkuSave(sku=sku, brand=brand, category="washer", name="Renamed"))
    other = fresh("brand")
    assert (await refused(merchant, SkuSave(sku=fresh("SKU").upper(), brand=other, category="washer",
                                            name="Not mine"))).code == "not_found"
    await merchant.request(CatalogList())  # a read of public data: not logged

    mine = (await admin.request(LogList(actor_id=merchant_id, action="catalog.sku.save"))).entries
    assert [(e.action, e.target_kind, e.target_id, e.outcome) for e in mine] == [
        ("catalog.sku.save", "sku", mine[0].target_id, "not_found"),
        ("catalog.sku.save", "sku", sku, "ok")]
    assert mine[1].request == {"sku": sku, "brand": brand, "category": "washer", "name": "[redacted]", "names": None}
    assert mine[1].actor_role == "merchant"
    by_admin = (await admin.request(LogList(actor_id=admin_id, action="admin.merchant.brands"))).entries
    assert [(e.target_kind, e.target_id) for e in by_admin] == [("user", merchant_id)]
    about_sku = (await admin.request(LogList(target_id=sku))).entries
    assert {e.actor_id for e in about_sku} == {admin_id, merchant_id}


async def test_consumers_calls_are_not_logged_and_merchants_orders_are(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    consumer, consumer_id = await signed_in("consumer")
    await consumer.request(order_at(spot(), brand=brand, sku=sku))
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand]))
    made = (await merchant.request(order_at(spot(), brand=brand, sku=sku, consumer_id=consumer_id))).order
    assert (await admin.request(LogList(actor_id=consumer_id))).entries == []  # not even its auth
    [entry] = (await admin.request(LogList(actor_id=merchant_id, action="order.create"))).entries
    # personal fields, whereabouts and free text never reach the log (its rows are never erased)
    assert {k: entry.request[k] for k in ("address", "lat", "lng", "description")} == dict.fromkeys(
        ("address", "lat", "lng", "description"), "[redacted]")
    assert entry.request["brand"] == brand
    assert (entry.target_kind, entry.target_id) == ("order", made.id)  # the order the call created


async def test_staff_sign_ins_are_logged_without_their_token(signed_in):
    admin, admin_id = await signed_in("admin")
    [entry] = (await admin.request(LogList(actor_id=admin_id, action="auth"))).entries
    assert (entry.outcome, entry.request["token"]) == ("ok", "[redacted]")


async def test_the_log_is_append_only_and_for_admins(gateway, signed_in):
    admin, admin_id = await signed_in("admin")
    await brand_with_sku(admin)
    db = gateway.services.db
    for statement in ("UPDATE admin_log SET outcome = 'ok' WHERE actor_id = $1",
                      "DELETE FROM admin_log WHERE actor_id = $1"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await db.execute(statement, admin_id)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("TRUNCATE admin_log")
    assert len((await admin.request(LogList(actor_id=admin_id))).entries) == 4  # auth and three saves
    merchant, _ = await signed_in("merchant")
    assert (await refused(merchant, LogList())).code == "forbidden"


async def test_the_log_pages_newest_first(signed_in):
    admin, admin_id = await signed_in("admin")
    for _ in range(3):
        await brand_with_sku(admin)
    first = await admin.request(LogList(actor_id=admin_id, limit=4))
    assert len(first.entries) == 4 and first.next_before == first.entries[-1].id
    rest = await admin.request(LogList(actor_id=admin_id, limit=10, before=first.next_before))
    assert rest.next_before is None and len(rest.entries) == 6  # 1 auth + 9 saves in all
    ids = [e.id for e in first.entries + rest.entries]
    assert ids == sorted(ids, reverse=True)
