"""The catalog over real sessions: the list every role reads (and every process refreshes), the
back office's changes with their history, merchants kept to their brands, retired products."""

import base64
import json
import uuid

from protocol.ai import AiStart
from protocol.catalog import (
    BrandSave,
    CatalogList,
    CategorySave,
    GuideCheck,
    GuideList,
    GuideSave,
    HistoryList,
    MerchantBrandsSet,
    Names,
    PriceSave,
    Retire,
    SkuSave,
)
from protocol.orders import OrderGet
from tests.test_ai import ask
from tests.world import brand_with_sku, fresh, order_at, refused, spot


async def test_every_role_lists_the_demo_catalog_in_its_language(signed_in):
    for role in ("consumer", "technician", "merchant", "admin"):
        client, _ = await signed_in(role)
        listed = await client.request(CatalogList())
        assert {"whirlpool", "samsung", "lg", "ge", "bosch", "frigidaire", "maytag", "kitchenaid", "carrier",
                "rheem"} <= {b.id for b in listed.brands}
        assert [s.id for s in listed.service_types] == ["installation", "maintenance", "repair"]
        fridge = next(s for s in listed.skus if s.id == "WRF535SWHZ")
        assert (fridge.brand, fridge.category, fridge.retired) == ("whirlpool", "refrigerator", False)
        assert {(p.service_type, p.price_cents, p.currency) for p in fridge.prices} == {
            ("repair", 13900, "usd"), ("installation", 20850, "usd"), ("maintenance", 9730, "usd")}
    spanish, _ = await signed_in("consumer", locale="es")
    listed = await spanish.request(CatalogList())
    repair = next(s for s in listed.service_types if s.id == "repair")
    assert (repair.name, repair.names) == ("Reparación", {"en": "Repair", "es": "Reparación", "zh-Hans": "维修"})
    fridge = next(s for s in listed.skus if s.id == "WRF535SWHZ")
    assert fridge.name == "Whirlpool 33-inch French door refrigerator"  # no Spanish stored: English
    washer = next(c for c in listed.categories if c.id == "washer")
    assert washer.name == "Lavadora"


async def test_anonymous_sessions_must_sign_in_first(connect):
    client = await connect()
    reply, _ = await client.call("catalog.list", {})
    assert reply["code"] == "unauthorized"


async def test_a_change_on_one_process_is_listed_on_another(make_gateway, signed_in):
    async with make_gateway() as other:
        admin, _ = await signed_in("admin")
        reader, _ = await signed_in("consumer", gw=other)
        brand, sku = await brand_with_sku(admin)
        before = await reader.request(CatalogList())  # the other process caches this version
        assert next(s for s in before.skus if s.id == sku).prices[0].price_cents == 20000
        saved = await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=21500))
        after = await reader.request(CatalogList())
        assert after.version >= saved.version > before.version
        assert next(s for s in after.skus if s.id == sku).prices[0].price_cents == 21500
        await admin.request(Retire(kind="brand", brand=brand))
        assert next(b for b in (await reader.request(CatalogList())).brands if b.id == brand).retired


async def test_history_records_who_when_before_and_after_newest_first(signed_in):
    admin, admin_id = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=25000, currency="usd"))
    await admin.request(BrandSave(brand=brand, name="Renamed", names=Names(es="Renombrada")))
    page = await admin.request(HistoryList(brand=brand, limit=2))
    assert [(c.kind, c.key) for c in page.changes] == [("brand", brand), ("price", f"{sku}/repair")]
    renamed, repriced = page.changes
    assert renamed.actor_id == admin_id and renamed.actor_role == "admin" and renamed.brand == brand
    assert renamed.before is not None and renamed.before["name"] == "Test brand"
    assert (renamed.after["name"], renamed.after["names"]) == ("Renamed", {"es": "Renombrada"})
    assert repriced.before is not None and (repriced.before["price_cents"], repriced.after["price_cents"]) == (
        20000, 25000)
    assert page.next_cursor is not None
    rest = await admin.request(HistoryList(brand=brand, before=page.next_cursor))
    assert [(c.kind, c.before) for c in rest.changes] == [("price", None), ("sku", None), ("brand", None)]
    assert rest.next_cursor is None and rest.changes[0].at <= repriced.at
    prices = await admin.request(HistoryList(kind="price", key=f"{sku}/repair"))
    assert len(prices.changes) == 2


async def test_merchants_change_their_brands_only_and_learn_nothing_of_others(signed_in):
    admin, _ = await signed_in("admin")
    mine, my_sku = await brand_with_sku(admin)
    theirs, their_sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[mine]))

    saved = await merchant.request(PriceSave(sku=my_sku, service_type="repair", price_cents=19900))
    assert saved.after["price_cents"] == 19900
    await merchant.request(SkuSave(sku=fresh("M").upper(), brand=mine, category="dryer", name="Merchant dryer"))
    guide = await merchant.request(GuideSave(brand=mine, sku=my_sku, title="E4 code", body="1. Unplug\n2. Wait"))
    assert guide.after["title"] == "E4 code"

    nowhere = fresh("nobrand")
    for other, unknown in [
        (SkuSave(sku=fresh("X").upper(), brand=theirs, category="washer", name="n"),
         SkuSave(sku=fresh("X").upper(), brand=nowhere, category="washer", name="n")),
        (PriceSave(sku=their_sku, service_type="repair", price_cents=5000),
         PriceSave(sku=fresh("NOSKU"), service_type="repair", price_cents=5000)),
        (BrandSave(brand=theirs, name="Mine now"), BrandSave(brand=nowhere, name="Mine now")),
        (Retire(kind="sku", sku=their_sku), Retire(kind="sku", sku=fresh("NOSKU"))),
        (Retire(kind="brand", brand=theirs), Retire(kind="brand", brand=nowhere)),
        (GuideSave(brand=theirs, title="t", body="b"), GuideSave(brand=nowhere, title="t", body="b")),
        (GuideSave(brand=mine, sku=their_sku, title="t", body="b"),
         GuideSave(brand=mine, sku=fresh("NOSKU"), title="t", body="b")),
        (HistoryList(brand=theirs), HistoryList(brand=nowhere)),
        (GuideList(brand=theirs), GuideList(brand=nowhere)),
    ]:
        a, b = await refused(merchant, other), await refused(merchant, unknown)
        assert (a.code, a.error.message) == (b.code, b.error.message), (other, a, b)
        assert a.code == "not_found", other

    seen = await merchant.request(HistoryList())
    assert seen.changes and {c.brand for c in seen.changes} == {mine}
    assert [g.title for g in (await merchant.request(GuideList(brand=mine))).guides] == ["E4 code"]
    # nothing of theirs changed
    theirs_history = await admin.request(HistoryList(brand=theirs))
    assert {c.actor_role for c in theirs_history.changes} == {"admin"}


async def test_a_retired_sku_cannot_be_ordered_and_orders_keep_their_price(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin, price_cents=30000)
    consumer, _ = await signed_in("consumer")
    place = spot()
    order = (await consumer.request(order_at(place, brand=brand, sku=sku))).order
    assert order.price_cents == 30000
    await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=45000))
    await admin.request(Retire(kind="sku", sku=sku))
    again = await refused(consumer, order_at(place, brand=brand, sku=sku))
    assert (again.code, again.error.details) == ("conflict", {"current_state": "retired"})
    assert "retired" in again.error.message
    kept = (await consumer.request(OrderGet(order_id=order.id))).order
    assert (kept.price_cents, kept.currency) == (30000, "usd")

    await admin.request(Retire(kind="sku", sku=sku, retired=False))  # back on sale, at the new price
    assert (await consumer.request(order_at(place, brand=brand, sku=sku))).order.price_cents == 45000
    await admin.request(Retire(kind="price", sku=sku, service_type="repair"))
    assert (await refused(consumer, order_at(place, brand=brand, sku=sku))).code == "conflict"
    await admin.request(Retire(kind="price", sku=sku, service_type="repair", retired=False))
    await admin.request(Retire(kind="brand", brand=brand))
    assert (await refused(consumer, order_at(place, brand=brand, sku=sku))).code == "conflict"


async def test_a_merchant_given_a_brand_orders_for_it(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    merchant, merchant_id = await signed_in("merchant")
    _, consumer_id = await signed_in("consumer")
    request = order_at(spot(), brand=brand, sku=sku, consumer_id=consumer_id)
    assert (await refused(merchant, request)).code == "forbidden"
    set_ = await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand, "whirlpool", brand]))
    assert set_.brands == sorted([brand, "whirlpool"])
    order = (await merchant.request(request)).order
    assert (order.brand, order.consumer_id, order.price_cents) == (brand, consumer_id, 20000)

    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=["whirlpool"]))  # replaces the set
    assert (await refused(merchant, request)).code == "forbidden"
    changes = (await admin.request(HistoryList(kind="merchant_brands", key=merchant_id))).changes
    assert [(c.before, c.after) for c in changes] == [
        ({"brands": sorted([brand, "whirlpool"])}, {"brands": ["whirlpool"]}),
        ({"brands": []}, {"brands": sorted([brand, "whirlpool"])})]
    assert (await refused(admin, MerchantBrandsSet(merchant_id=merchant_id, brands=[fresh()]))).code == "bad_request"


async def test_guides_are_saved_replaced_and_read(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    first = await admin.request(GuideSave(brand=brand, title="Won't spin", body="Check the lid switch.",
                                          locale="en"))
    await admin.request(GuideSave(brand=brand, sku=sku, title="No enciende", body="Revise el fusible.", locale="es"))
    guide_id = str(first.after["id"])
    replaced = await admin.request(GuideSave(guide_id=guide_id, brand=brand, title="Won't spin",
                                             body="Check the lid switch, then the belt."))
    assert replaced.after["body"].endswith("the belt.")
    technician, _ = await signed_in("technician")
    listed = (await technician.request(GuideList(brand=brand, sku=sku))).guides
    assert [(g.sku, g.locale, g.title) for g in listed] == [(None, "en", "Won't spin"), (sku, "es", "No enciende")]
    assert [g.locale for g in (await technician.request(GuideList(brand=brand, locale="es"))).guides] == ["es"]
    other_brand, _ = await brand_with_sku(admin)
    moved = await refused(admin, GuideSave(guide_id=guide_id, brand=other_brand, title="t", body="b"))
    assert moved.code == "not_found"
    history = (await admin.request(HistoryList(kind="guide", key=guide_id))).changes
    assert history[0].before is not None and history[0].before["body"] == "Check the lid switch."


async def test_guides_page_brand_wide_first_then_by_sku(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    for title in ("Reset", "Filter", "Noise"):
        await admin.request(GuideSave(brand=brand, sku=sku, locale="en", title=title, body="1. Do this."))
    await admin.request(GuideSave(brand=brand, locale="en", title="Any model", body="1. Unplug."))
    seen, after = [], None
    while True:
        page = await admin.request(GuideList(brand=brand, limit=2, after=after))
        seen += [(g.sku, g.title) for g in page.guides]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [(None, "Any model"), (sku, "Filter"), (sku, "Noise"), (sku, "Reset")]
    assert (await refused(admin, GuideList(brand=brand, after="bm90LWEtY3Vyc29y"))).code == "bad_request"
    forged = base64.urlsafe_b64encode(json.dumps(["\u0000", "en", "t", str(uuid.uuid4())]).encode()).decode()
    assert (await refused(admin, GuideList(brand=brand, after=forged))).code == "bad_request"  # not internal


async def test_a_sku_stays_with_its_brand_and_needs_a_known_category(signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    other, _ = await brand_with_sku(admin)
    version = (await admin.request(CatalogList())).version
    moved = await refused(admin, SkuSave(sku=sku, brand=other, category="washer", name="n"))
    assert moved.code == "conflict"
    odd = await refused(admin, SkuSave(sku=fresh("S"), brand=brand, category="spaceship", name="n"))
    assert odd.code == "bad_request"
    assert (await admin.request(CatalogList())).version == version  # refusals change nothing
    assert [c.kind for c in (await admin.request(HistoryList(brand=brand))).changes] == ["price", "sku", "brand"]


async def test_admins_add_categories_that_skus_may_then_use(signed_in):
    admin, _ = await signed_in("admin")
    brand, _ = await brand_with_sku(admin)
    category = fresh("cat")
    sku = fresh("C").upper()
    assert (await refused(admin, SkuSave(sku=sku, brand=brand, category=category, name="n"))).code == "bad_request"
    saved = await admin.request(CategorySave(category=category, name="Freezer", names=Names(es="Congelador")))
    assert saved.after == {"id": category, "name": "Freezer", "names": {"es": "Congelador"}}
    await admin.request(SkuSave(sku=sku, brand=brand, category=category, name="Chest freezer"))
    spanish, spanish_id = await signed_in("merchant", locale="es")
    listed = await spanish.request(CatalogList())
    assert next(c for c in listed.categories if c.id == category).name == "Congelador"
    assert next(s for s in listed.skus if s.id == sku).category == category
    [created] = (await admin.request(HistoryList(kind="category", key=category))).changes
    assert (created.before, created.brand) == (None, None)
    # A category has no brand, so its history is for admins only, not for a merchant with brands.
    await admin.request(MerchantBrandsSet(merchant_id=spanish_id, brands=[brand]))
    await admin.request(BrandSave(brand=brand, name="Renamed for history"))
    theirs = (await spanish.request(HistoryList())).changes
    assert any(c.kind == "brand" and c.key == brand for c in theirs)
    assert not any(c.kind == "category" for c in theirs)


async def test_staff_edit_a_whole_categorys_guide_and_the_assistant_follows_it(signed_in):
    admin, _ = await signed_in("admin")
    merchant, _ = await signed_in("merchant")
    consumer, _ = await signed_in("consumer")
    category = fresh("cat")
    await admin.request(CategorySave(category=category, name="Ice makers"))
    brand, sku = fresh("brand"), fresh("SKU").upper()
    await admin.request(BrandSave(brand=brand, name="Test brand"))
    await admin.request(SkuSave(sku=sku, brand=brand, category=category, name="Ice maker"))
    await admin.request(PriceSave(sku=sku, service_type="repair", price_cents=9000))
    guide = {"title": "No ice", "body": "Check the water.", "category": category, "symptoms": "no ice cubes made"}
    saved = await admin.request(GuideSave(**guide, checks=[GuideCheck(text="Open the water valve under the sink")]))
    assert saved.after["brand_id"] is None
    _, _, first = await ask(consumer, AiStart(brand=brand, sku=sku, description="It makes no ice cubes"))
    assert first.answer.steps[0].instruction == "Open the water valve under the sink"

    await admin.request(GuideSave(**guide, guide_id=saved.after["id"],
                                  checks=[GuideCheck(text="Make sure the ice bin is pushed all the way in")]))
    _, _, second = await ask(consumer, AiStart(brand=brand, sku=sku, description="It makes no ice cubes"))
    assert second.answer.steps[0].instruction == "Make sure the ice bin is pushed all the way in"
    listed = (await merchant.request(GuideList(category=category))).guides
    assert [(g.brand, g.title, g.checks[0].text) for g in listed] == [
        (None, "No ice", "Make sure the ice bin is pushed all the way in")]

    assert (await refused(merchant, GuideSave(**guide))).code == "forbidden"
    assert (await refused(merchant, GuideSave(**guide, guide_id=saved.after["id"]))).code == "forbidden"
    assert (await refused(admin, GuideSave(title="t", body="b"))).code == "bad_request"  # no brand, no category
    moved = await refused(admin, GuideSave(**{**guide, "brand": brand}, guide_id=saved.after["id"]))
    assert moved.code == "not_found"  # a category's guide does not become a brand's
    history = (await admin.request(HistoryList(kind="guide", key=str(saved.after["id"])))).changes
    assert len(history) == 2 and history[0].before is not None
