"""The back office in a real browser (chromium via Playwright) against a real gateway, PostgreSQL
and Redis: signing in as admin and as merchant, the board and the map following an app's order
live, the order page with its timeline and photo, cancelling with a refund, a merchant kept to
their brands, the summary chart, the audit page. A screenshot of each main view is kept under
.pytest_cache/screens/."""

import json
import re
import struct
import uuid
import zlib

from protocol.auth import Auth, Register
from protocol.orders import OrderAccept, OrderComplete, OrderDepart, OrderStart
from protocol.oversight import AdminOrder
from tests.browser import Tab, staff
from tests.money import app_stripe, jobs, paid_order, paying_gateway, until
from tests.test_audits import paid
from tests.test_uploads import upload
from tests.world import brand_with_sku, order_at, spot, technician


def png(width: int = 64, height: int = 48) -> bytes:
    """A real picture (a gradient) that a browser decodes: the upload tests' bytes only look like one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, 128)) for x in range(width))
                    for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


async def test_an_admin_signs_in_sees_every_view_and_signs_out(tab: Tab, gateway, servers):
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    nav = tab.page.locator("header nav a")
    assert await nav.all_inner_texts() == ["Live map", "Orders", "Summaries", "Audits", "Catalog", "Users"]
    assert re.search(r"#/orders$", tab.page.url)
    await tab.page.wait_for_selector("#board table, #board .empty")
    await tab.screenshot("orders")
    await tab.open("#/catalog")
    await tab.page.wait_for_selector("#catalog td:text-is('whirlpool')")
    await tab.screenshot("catalog")
    await tab.open("#/users")
    await tab.page.wait_for_selector("#suspensions")
    await tab.page.click("#signout")
    await tab.page.wait_for_selector("form.signin")


async def test_a_wrong_password_is_told_in_the_browsers_language(browser, gateway, servers):
    email, _ = await staff(gateway, servers[0], "admin")
    context = await browser.new_context(locale="es-ES")
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{gateway.http_port}/admin/")
        assert await page.inner_text("form.signin button") == "Iniciar sesión"
        await page.fill("#email", email)
        await page.fill("#password", "not the password")
        await page.click("form.signin button")
        alert = page.locator("form.signin [role=alert]")
        await alert.filter(has_text=re.compile(".+")).wait_for()
        assert "contraseña" in (await alert.inner_text()).lower()
    finally:
        await context.close()


async def test_a_merchant_sees_only_their_brands_and_a_crafted_url_says_not_found(tab: Tab, gateway, servers,
                                                                                  signed_in):
    admin, _ = await signed_in("admin")
    mine, sku = await brand_with_sku(admin)
    theirs, their_sku = await brand_with_sku(admin)
    email, _ = await staff(gateway, servers[0], "merchant", [mine])
    place = spot()
    consumer, _ = await signed_in("consumer")
    own = (await consumer.request(order_at(place, brand=mine, sku=sku))).order
    other = (await consumer.request(order_at(place, brand=theirs, sku=their_sku))).order

    await tab.sign_in(email)
    assert await tab.page.locator("header nav a").all_inner_texts() == ["Live map", "Orders", "Summaries", "Catalog"]
    await tab.page.wait_for_selector(f"#board tr[data-order='{own.id}']")
    assert await tab.page.locator(f"#board tr[data-order='{other.id}']").count() == 0
    await tab.page.fill("#q", other.id)
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_selector("#board .empty")

    await tab.open(f"#/order/{other.id}")
    await tab.page.wait_for_selector("#not-found")
    assert await tab.page.inner_text("main h1") == "Order not found"
    await tab.open(f"#/order/{own.id}")
    await tab.page.wait_for_selector("#timeline")
    assert await tab.page.locator("#transcript").count() == 0  # admins only
    await tab.open("#/catalog")  # their brands' products only
    await tab.page.wait_for_selector(f"#catalog td:text-is('{sku}')")
    assert await tab.page.locator(f"#catalog td:text-is('{their_sku}')").count() == 0
    assert await tab.page.locator("#catalog td:text-is('whirlpool')").count() == 0
    await tab.open("#/audits")  # not offered to merchants: the board instead
    await tab.page.wait_for_selector("#board")


async def test_an_apps_order_appears_on_the_board_and_on_the_map_live(tab: Tab, gateway, servers, signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    place = spot()
    tech, tech_id = await technician(signed_in, place)
    consumer, _ = await signed_in("consumer")
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    await tab.page.fill("#brand", brand)
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_selector("#board .empty")

    first = (await consumer.request(order_at(place, brand=brand, sku=sku))).order
    row = tab.page.locator(f"#board tr[data-order='{first.id}']")
    await row.wait_for()  # no reload: the feed told the board
    assert await row.locator("td[data-col=state] .badge").inner_text() == "open"
    await tech.request(OrderAccept(order_id=first.id))
    await tab.page.wait_for_selector(f"#board tr[data-order='{first.id}'][data-state='accepted']")

    await tab.page.click("header nav a[data-view=map]")
    await tab.page.wait_for_selector(f"#map-orders li[data-order='{first.id}']")
    second = (await consumer.request(order_at(place, brand=brand, sku=sku))).order
    await tab.page.wait_for_selector(f"#map-orders li[data-order='{second.id}']")
    await tab.page.wait_for_selector(f"path.order-{second.id}", state="attached")
    await tab.page.click(f"#map-orders li[data-order='{second.id}'] button")
    await tab.page.wait_for_selector(f"#in-circle li:text-is('{tech_id[:8]}')")  # the technician beside it
    assert await tab.page.locator(".leaflet-control-scale-line").count() == 2  # miles and kilometres
    assert await tab.page.locator(".leaflet-tile").count() == 0  # no MAP_TILES_URL: a plain background
    await tab.screenshot("map")


async def test_the_order_page_shows_the_timeline_and_the_photo_full_size(tab: Tab, gateway, servers, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    tech, _ = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    for step in (OrderAccept, OrderDepart, OrderStart):
        await tech.request(step(order_id=order.id))
    photo = await upload(tech, png(), "image/png")
    await tech.request(OrderComplete(order_id=order.id, attachments=[photo], note="Replaced the sensor"))
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    await tab.open(f"#/order/{order.id}")
    await tab.page.wait_for_selector("#timeline")
    states = await tab.page.locator("#timeline td[data-col=to_state]").all_inner_texts()
    assert states == ["open", "accepted", "en route", "in service", "completed"]
    thumb = tab.page.locator("#photos img.thumb")
    await thumb.wait_for()
    await tab.page.wait_for_function("() => document.querySelector('#photos img.thumb').naturalWidth > 0")
    await thumb.click()
    await tab.page.wait_for_selector("dialog.full img")
    await tab.screenshot("order")
    await tab.page.click("dialog.full button")


async def test_cancel_with_refund_through_the_page_then_the_state_changes(tab: Tab, make_gateway, stripe_server,
                                                                          signed_in, servers):
    async with paying_gateway(make_gateway, stripe_server, payment_policy="pay_at_creation") as gw:
        _, _, order_id, _ = await paid_order(gw, signed_in, app_stripe(stripe_server))
        price = (await (await signed_in("admin", gw=gw))[0].request(AdminOrder(order_id=order_id))).order.price_cents
        tab.gateway = gw
        email, _ = await staff(gw, servers[0], "admin")
        await tab.sign_in(email)
        await tab.open(f"#/order/{order_id}")
        await tab.page.wait_for_selector("#state .badge:text-is('open')")
        await tab.page.click("#cancel")
        dialog = tab.page.locator("dialog.confirm")
        await dialog.wait_for()
        shown = f"${price / 100:,.2f}"
        assert f"Refund to the customer: {shown}" in await dialog.inner_text()
        await dialog.locator("button[value=ok]").click()
        await tab.page.wait_for_selector("#state .badge:text-is('cancelled')")
        assert f"refund {shown}" in await tab.page.inner_text("#order-status")
        await until(lambda: _refunded(gw, order_id))
        await tab.open("#/orders")  # and back: the order read again, with the refund Stripe confirmed
        await tab.page.wait_for_selector("#board")
        await tab.open(f"#/order/{order_id}")
        await tab.page.wait_for_selector(f"#refunded:text-is('{shown}')")
        await tab.leave()


async def _refunded(gw, order_id):
    return [j for j in await jobs(gw, order_id) if j["kind"] == "refund" and j["state"] == "done"]


async def test_the_summary_chart_renders_with_its_series(tab: Tab, gateway, servers, signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    consumer, _ = await signed_in("consumer")
    for _ in range(2):
        await consumer.request(order_at(spot(), brand=brand, sku=sku))
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    await tab.open("#/summary")
    await tab.page.fill("#summary-brand", brand)
    await tab.page.click("form.filters button[type=submit]")
    await tab.page.wait_for_selector("#totals td:text-is('2')")
    chart = tab.page.locator("#chart-orders")
    assert await chart.locator("canvas").count() == 1
    labels = await chart.locator(".u-legend .u-series .u-label").all_inner_texts()
    assert labels[1:] == ["all orders", "open", "accepted", "in service", "completed", "cancelled"]
    assert await tab.page.locator("#chart-money canvas, #chart-times canvas").count() == 2
    # the plotted data: today's bucket holds the two open orders
    assert await tab.page.locator("#totals tr").nth(1).locator("td").nth(2).inner_text() == "2"
    await tab.screenshot("summary")


async def test_the_audit_page_lists_a_planted_anomaly_with_a_link_to_its_order(tab: Tab, gateway, servers,
                                                                               signed_in):
    consumer, _ = await signed_in("consumer")
    order = (await consumer.request(order_at(spot()))).order
    await paid(gateway.services.db, uuid.UUID(order.id))  # completed and captured, no transfer: transfer_missing
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    await tab.open("#/audits")
    await tab.page.click("#run-audit")
    item = tab.page.locator(f"section[data-kind=transfer_missing] li[data-order='{order.id}']")
    await item.wait_for()
    assert "expected_cents" in await item.inner_text()
    await tab.screenshot("audits")
    await item.locator("a").click()
    await tab.page.wait_for_selector("#timeline")


async def test_a_reassignment_picks_a_nearby_technician_on_the_order_page(tab: Tab, gateway, servers, signed_in):
    place = spot()
    consumer, _ = await signed_in("consumer")
    first, _ = await technician(signed_in, place)
    _, second_id = await technician(signed_in, place)
    order = (await consumer.request(order_at(place))).order
    await first.request(OrderAccept(order_id=order.id))
    email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(email)
    await tab.open(f"#/order/{order.id}")
    await tab.page.click("#reassign")
    await tab.page.select_option("#candidate", second_id)
    await tab.page.click(".reassign button")
    await tab.page.locator("dialog.confirm button[value=ok]").click()
    await tab.page.wait_for_selector(f"dl.facts dd:text-is('{second_id}')")
    assert await tab.page.inner_text("#state .badge") == "accepted"


async def test_an_admin_finds_a_user_by_e_mail_and_suspends_them(tab: Tab, gateway, servers, connect):
    app = await connect()
    email = f"ana-{uuid.uuid4().hex[:8]}@example.com"
    made = await app.request(Register(email=email, password="long enough secret", role="consumer", name="Ana Ruiz"))
    await app.request(Auth(token=made.token))
    staff_email, _ = await staff(gateway, servers[0], "admin")
    await tab.sign_in(staff_email)
    await tab.page.click("header nav a[data-view=users]")
    await tab.page.fill("#user-id", email)
    await tab.page.press("#user-id", "Enter")
    await tab.page.wait_for_selector(f"#found-id:text-is('{made.user_id}')")
    assert await tab.page.inner_text("#user h2") == "Ana Ruiz"
    await tab.page.fill("#suspend-reason", "chargeback fraud")
    await tab.page.click("#suspend")
    await tab.page.locator("dialog.confirm button[value=ok]").click()
    await tab.page.wait_for_selector("#suspension:text-is('Suspended: chargeback fraud')")
    await tab.page.wait_for_selector(f"#suspensions a:text-is('{made.user_id}')")
    await until(lambda: _closed(app))  # the app's live session was closed (4003)
    await tab.screenshot("users")


async def _closed(client) -> bool:
    return client.ws.close_code == 4003


async def test_the_page_reconnects_by_itself_and_keeps_following_the_board(tab: Tab, make_gateway, servers,
                                                                          signed_in):
    async with make_gateway(idle_timeout_s=3) as gw:
        opened = []
        tab.page.on("websocket", lambda ws: opened.append(ws))
        tab.gateway = gw
        # the apps use the shared gateway (this one drops idle sessions): the feed crosses processes
        admin, _ = await signed_in("admin")
        brand, sku = await brand_with_sku(admin)
        consumer, _ = await signed_in("consumer")
        email, _ = await staff(gw, servers[0], "admin")
        await tab.sign_in(email)
        await tab.page.fill("#brand", brand)
        await tab.page.click("form.filters button[type=submit]")
        await tab.page.wait_for_selector("#board .empty")
        await until(lambda: _at_least(opened, 2))  # dropped as idle, then opened again by the page
        await tab.page.wait_for_selector("#online:text-is('online')")
        order = (await consumer.request(order_at(spot(), brand=brand, sku=sku))).order
        await tab.page.wait_for_selector(f"#board tr[data-order='{order.id}']")
        assert len(opened) >= 2
        await tab.leave()


async def _at_least(found: list, n: int) -> bool:
    return len(found) >= n


async def test_the_session_token_is_refreshed_before_it_expires(tab: Tab, make_gateway, servers):
    async with make_gateway(token_ttl_s=62) as gw:  # the page refreshes a minute early: after ~2 s
        sent: list[str] = []
        tab.page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(str(payload))))
        tab.gateway = gw
        email, _ = await staff(gw, servers[0], "admin")
        await tab.sign_in(email)
        await until(lambda: _refreshed_and_authenticated(sent))
        await tab.page.click("header nav a[data-view=catalog]")
        await tab.page.wait_for_selector("#catalog td:text-is('whirlpool')")
        await tab.leave()


async def _refreshed_and_authenticated(sent: list[str]) -> bool:
    types = [json.loads(frame)["type"] for frame in sent]
    return "auth.refresh" in types and types[types.index("auth.refresh") + 1:].count("auth") >= 1


async def test_a_tablet_and_the_keyboard_alone_are_enough(browser, gateway, servers):
    email, _ = await staff(gateway, servers[0], "admin")
    context = await browser.new_context(viewport={"width": 768, "height": 1024}, locale="zh-CN")
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{gateway.http_port}/admin/")
        await page.wait_for_selector("#email:focus")  # the e-mail field has the focus
        await page.keyboard.type(email)
        await page.keyboard.press("Tab")
        await page.keyboard.type("correct horse battery")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#signout")
        assert await page.inner_text("header nav a[aria-current]") == "订单"
        await page.wait_for_selector("#board")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 768  # nothing sticks out
        for _ in range(20):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.dataset.view") == "map":
                break
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#map .leaflet-control-scale")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 768
    finally:
        await context.close()


async def test_the_catalog_editor_saves_a_price_retires_a_sku_and_shows_the_history(tab: Tab, gateway, servers,
                                                                                    signed_in):
    admin, _ = await signed_in("admin")
    brand, sku = await brand_with_sku(admin)
    email, _ = await staff(gateway, servers[0], "merchant", [brand])
    await tab.sign_in(email)
    await tab.page.click("header nav a[data-view=catalog]")
    row = tab.page.locator("#catalog tr", has=tab.page.locator(f"td:text-is('{sku}')"))
    await row.wait_for()
    await tab.page.fill("#price-sku", sku)
    await tab.page.fill("#price-service", "maintenance")
    await tab.page.fill("#price-amount", "89.50")
    await tab.page.locator("#price-amount").press("Enter")
    await row.filter(has_text="maintenance $89.50").wait_for()
    await row.locator("td[data-col=act] button").click()  # retire the SKU
    await row.locator("td[data-col=retired]:text-is('yes')").wait_for()
    history = tab.page.locator("#history td[data-col=kind]")
    await history.filter(has_text=f"sku {sku}").first.wait_for()
    assert any(text == f"price {sku}/maintenance" for text in await history.all_inner_texts())
