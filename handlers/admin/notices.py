"""Back-office operations for admins."""

from handlers.context import Context
from handlers.errors import N_, BadRequest
from handlers.routing import Router
from protocol.admin import Notice, Notified, Notify

router = Router()


@router.route(Notify, roles=["admin"])
async def notify(ctx: Context, req: Notify) -> Notified:
    if (req.user_id is None) == (req.group is None):
        raise BadRequest(N_("Give exactly one of user_id and group."))
    assert ctx.identity is not None
    notice = Notice(text=req.text, sender=ctx.identity.user_id)
    if req.user_id is not None:
        return Notified(sessions=await ctx.deliver_to_user(req.user_id, notice))
    assert req.group is not None
    return Notified(sessions=await ctx.deliver_to_group(req.group, notice))
