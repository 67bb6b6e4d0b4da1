"""Moderation by admins: cancel an order with the refund the payment rules give (previewed first),
reassign it to a technician or back to the pool, hide a chat message, retry a failed money job.
Each goes through its domain's own path (transitions, chat, money jobs); the audit-log wrapper
records every call."""

import asyncpg

from handlers.admin import feed
from handlers.chat.rooms import post_system
from handlers.chat.writer import members_of as members
from handlers.chat.writer import message as render
from handlers.context import Context
from handlers.errors import N_, BadRequest, Conflict, NotFound
from handlers.money.cancellation import terms
from handlers.money.payments import job_view
from handlers.orders import jobs
from handlers.orders.orders import tell_parties
from handlers.orders.pool import announce, withdraw
from handlers.orders.views import parse_id, state_conflict, view
from handlers.routing import Router
from protocol.moderation import (
    Cancel,
    Cancelled,
    CancelPreview,
    CancelPreviewed,
    Candidate,
    Candidates,
    ChatHiddenEvent,
    JobRetried,
    JobRetry,
    MessageHidden,
    MessageHide,
    Reassign,
    ReassignCandidates,
    Reassigned,
)
from storage import chat, geo, orders, payments, suspensions

router = Router()


async def _order(ctx: Context, order_id: str) -> asyncpg.Record:
    row = await orders.get(ctx.services.db, parse_id(order_id))
    if row is None:
        raise NotFound(N_("No such order."))
    return row


# -- cancel ---------------------------------------------------------------------------------
@router.route(CancelPreview, roles=["admin"])
async def cancel_preview(ctx: Context, req: CancelPreview) -> CancelPreviewed:
    row = await _order(ctx, req.order_id)
    if row["state"] not in jobs.TRANSITIONS["cancel_by_admin"].from_states:
        raise state_conflict(row)
    return CancelPreviewed(terms=await terms(ctx, row))


@router.route(Cancel, roles=["admin"])
async def cancel(ctx: Context, req: Cancel) -> Cancelled:
    row = await jobs.cancel_order(ctx, req.order_id, req.reason)
    applied = await terms(ctx, row, row["previous_state"])  # before its jobs exist: what they will ask for
    await jobs.after_cancel(ctx, row)
    return Cancelled(order=await view(ctx, row), terms=applied)


# -- reassign -------------------------------------------------------------------------------
@router.route(Reassign, roles=["admin"])
async def reassign(ctx: Context, req: Reassign) -> Reassigned:
    db = ctx.services.db
    details = {"reason": req.reason} if req.reason else {}
    technician = req.technician_id
    if technician is None:
        row = await jobs.apply(ctx, req.order_id, "reassign_to_pool", sets=", technician_id = NULL",
                               details=details | {"to_pool": True})
    else:
        on_duty = await orders.known_duty(db, technician)
        if on_duty is None:
            raise NotFound(N_("No such technician."))
        if not on_duty or await suspensions.in_force(db, technician):  # suspended: off duty, or about to be
            raise Conflict(N_("That technician is off duty."), current_state="off_duty")
        current = await _order(ctx, req.order_id)
        if current["technician_id"] == technician:
            raise Conflict(N_("The order is that technician's already."), current_state=current["state"])
        row = await jobs.apply(ctx, current["id"], "reassign", sets=", technician_id = $7::text", args=(technician,),
                               details=details | {"technician_id": technician})
    previous = row["previous_technician_id"]
    if row["previous_state"] == "open":
        await withdraw(ctx, row)
    await tell_parties(ctx, row, previous)  # the consumer, the new technician and the previous one
    if row["previous_state"] == row["state"]:  # accepted to accepted: the feed still hears of it
        await feed.publish(ctx, "order.state", brand=row["brand_id"], order_id=str(row["id"]), state=row["state"],
                           previous_state=row["previous_state"], user_id=technician, detail="reassigned")
    await post_system(ctx, row, "reassigned" if technician else "returned")
    if technician is None:  # like a release: to the technicians around it, but the one it was taken from
        await announce(ctx, row, frozenset({previous} - {None}) | await orders.decliners(db, row["id"]))
    return Reassigned(order=await view(ctx, row), previous_technician_id=previous)


@router.route(ReassignCandidates, roles=["admin"])
async def candidates(ctx: Context, req: ReassignCandidates) -> Candidates:
    services = ctx.services
    row = await _order(ctx, req.order_id)
    nearby = [(t, d) for t, d in await geo.technicians_within(services.redis, row["lng"], row["lat"],
                                                              services.order_rules.radius_mi)
              if t != row["technician_id"]]
    nearby = sorted(nearby, key=lambda found: found[1])[:req.limit]
    filters = await geo.filters_of(services.redis, [t for t, _ in nearby])
    declined = await orders.decliners(services.db, row["id"])
    listed = []
    for technician, distance in nearby:
        brands, kinds = filters.get(technician, (set(), set()))
        fits = (not brands or row["brand_id"] in brands) and (not kinds or row["service_type"] in kinds)
        listed.append(Candidate(technician_id=technician, distance_mi=round(distance, 2), fits=fits,
                                declined=technician in declined))
    return Candidates(order_id=str(row["id"]), technicians=listed)


# -- hide a chat message --------------------------------------------------------------------
@router.route(MessageHide, roles=["admin"])
async def hide(ctx: Context, req: MessageHide) -> MessageHidden:
    assert ctx.identity is not None
    order = await _order(ctx, req.order_id)
    found = await chat.hide(ctx.services.db, order["id"], req.seq, ctx.identity.user_id, req.reason)
    if found is None:
        raise NotFound(N_("No such message."))
    row, fresh = found
    if row["kind"] == "system":
        raise BadRequest(N_("Only a person's message can be hidden."))
    if fresh and members(order):
        await ctx.deliver_many([(list(members(order)), ChatHiddenEvent(order_id=str(order["id"]), seq=row["seq"]))])
    return MessageHidden(message=await render(ctx.services, row, ctx.identity.locale, reveal=True))


# -- retry a failed money job ---------------------------------------------------------------
# Stripe keeps an idempotency key at least 24 hours: a replay within 20 hours of the first call is
# the same call (Stripe answers with what it did); later, a call that went through unseen (a
# timeout after Stripe acted) could be made again.
IDEMPOTENCY_KEY_LIFE_S = 20 * 3600.0
@router.route(JobRetry, roles=["admin"])
async def retry(ctx: Context, req: JobRetry) -> JobRetried:
    db = ctx.services.db
    job_id = int(req.job_id)
    row = await payments.retry_job(db, job_id, IDEMPOTENCY_KEY_LIFE_S)
    if row is None:
        current = await payments.job(db, job_id)
        if current is None:
            raise NotFound(N_("No such money job."))
        if current["state"] == "failed":  # its request is too old to replay safely
            raise Conflict(N_("This job's request to Stripe was made too long ago to repeat safely: check the "
                              "payment at Stripe and refund or pay by hand."), current_state="expired")
        raise Conflict(N_("Only a failed money job can be retried; this one is {state}."),
                       current_state=current["state"], state=current["state"])
    return JobRetried(order_id=str(row["order_id"]), job=job_view(row))

