"""Finding a user for the back office's Users view (`admin.user`, admins): by id or by e-mail
(the blind index, like log-in), with their role, name and e-mail, whether they are suspended,
and a merchant's brands. Reading the name and e-mail is logged like every read of personal data."""

from handlers.admin.log import record_read
from handlers.context import Context
from handlers.errors import N_, BadRequest, NotFound
from handlers.routing import Router
from protocol.admin import Account, UserFound, UserGet
from storage import catalog, users

router = Router()


@router.route(UserGet, roles=["admin"])
async def find(ctx: Context, req: UserGet) -> UserFound:
    if (req.user_id is None) == (req.email is None):
        raise BadRequest(N_("Give exactly one of user_id and email."))
    services = ctx.services
    user_id = req.user_id
    if req.email is not None:
        found = await users.user_by_email(services.db, services.cipher, req.email)
        user_id = None if found is None else found.id
    row = None if user_id is None else await users.account(services.db, user_id)
    if row is None:
        raise NotFound(N_("No such user."))
    uid = str(row["id"])
    name = await services.cipher.reveal(row["name_enc"], row["name"], f"users.name:{uid}")
    email = await services.cipher.reveal(row["email_enc"], row["email"], f"users.email:{uid}")
    await record_read(ctx, "user", "user", uid)
    brands = await catalog.merchant_brands(services.db, uid) if row["role"] == "merchant" else []
    return UserFound(user=Account(user_id=uid, role=row["role"], name=name, email=email, locale=row["locale"],
                                  created_at=row["created_at"], invited=row["password_hash"] is None,
                                  suspended=row["suspended"], brands=brands))
