"""`admin.user`: admins find an account by id or by e-mail, with its name, e-mail, suspension and
a merchant's brands; the read is in the audit log; others are refused, unknown users not found."""

import uuid

from protocol.admin import LogList, UserGet
from protocol.auth import Register
from protocol.catalog import MerchantBrandsSet
from protocol.suspension import Suspend
from tests.browser import staff
from tests.world import brand_with_sku, refused


async def test_an_admin_finds_a_user_by_e_mail_or_id_and_the_read_is_logged(signed_in, connect):
    admin, admin_id = await signed_in("admin")
    email = f"Finder-{uuid.uuid4().hex[:8]}@Example.com"
    app = await connect()
    made = await app.request(Register(email=email, password="long enough secret", role="consumer", name="Ana Ruiz"))
    by_email = (await admin.request(UserGet(email=email.lower()))).user
    assert (by_email.user_id, by_email.role, by_email.name, by_email.email) == (made.user_id, "consumer", "Ana Ruiz",
                                                                                email)
    assert (by_email.suspended, by_email.invited, by_email.brands) == (False, False, [])
    await admin.request(Suspend(user_id=made.user_id, reason="chargeback fraud"))
    by_id = (await admin.request(UserGet(user_id=made.user_id))).user
    assert by_id.suspended is True and by_id.email == email
    reads = (await admin.request(LogList(actor_id=admin_id, action="read.user"))).entries
    assert [(r.target_kind, r.target_id) for r in reads] == [("user", made.user_id)] * 2
    [call] = [e for e in (await admin.request(LogList(actor_id=admin_id, action="admin.user"))).entries
              if e.request.get("email")]
    assert call.request["email"] == "[redacted]"


async def test_a_merchants_brands_are_shown(gateway, servers, signed_in):
    admin, _ = await signed_in("admin")
    brand, _ = await brand_with_sku(admin)
    other, _ = await brand_with_sku(admin)
    email, merchant_id = await staff(gateway, servers[0], "merchant", [brand])
    await admin.request(MerchantBrandsSet(merchant_id=merchant_id, brands=[brand, other]))
    found = (await admin.request(UserGet(email=email))).user
    assert (found.user_id, found.role, found.brands) == (merchant_id, "merchant", sorted([brand, other]))
    _, minted = await signed_in("merchant")  # a minted token's subject has no account: not found
    assert (await refused(admin, UserGet(user_id=minted))).code == "not_found"


async def test_bad_lookups_are_refused_and_other_roles_forbidden(signed_in):
    admin, _ = await signed_in("admin")
    assert (await refused(admin, UserGet())).code == "bad_request"
    assert (await refused(admin, UserGet(user_id="x", email="a@b.co"))).code == "bad_request"
    missing = await refused(admin, UserGet(email="nobody-here@example.com"))
    assert (missing.code, missing.error.message) == ("not_found", "No such user.")
    merchant, _ = await signed_in("merchant", locale="es")
    assert (await refused(merchant, UserGet(user_id=str(uuid.uuid4())))).code == "forbidden"
    spanish, _ = await signed_in("admin", locale="es")
    assert (await refused(spanish, UserGet(email="nobody-here@example.com"))).error.message == "No existe ese usuario."
