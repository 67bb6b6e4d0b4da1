"""What an order's people are told when it moves on: chat system messages and push texts."""

from handlers.errors import N_

STATE_TEXT = {  # an order reached this state: what its people are told
    "accepted": N_("A technician accepted the order."),
    "open": N_("The technician gave the order back; it is open again."),
    "en_route": N_("The technician is on the way."),
    "in_service": N_("The technician has started the work."),
    "completed": N_("The job is complete."),
    "cancelled": N_("The order was cancelled."),
}
# What staff did to the order (admin.reassign), told in its chat like a state change.
MODERATION_TEXT = {
    "reassigned": N_("Staff assigned the order to a technician."),
    "returned": N_("Staff put the order back in the pool; it is open again."),
}
SYSTEM_TEXT = STATE_TEXT | MODERATION_TEXT  # a system chat message's text, by its code
# The push for an order's new state, where the state alone does not say what happened.
PAID_TEXT = N_("Your payment went through: the order is open for technicians.")
PLACED_TEXT = N_("A new order was placed for you.")
ORDER_UPDATE = N_("Order update")


def status_text(previous: str | None, state: str) -> str | None:
    """What an order's people are told of its move from `previous` to `state` (None: nothing)."""
    if state == "open" and previous in (None, "awaiting_payment"):
        return PLACED_TEXT if previous is None else PAID_TEXT
    return STATE_TEXT.get(state)
