"""User-facing texts shared by several domains (chat system messages, push notifications)."""

from handlers.errors import N_

STATE_TEXT = {  # an order reached this state: what its people are told
    "accepted": N_("A technician accepted the order."),
    "open": N_("The technician gave the order back; it is open again."),
    "en_route": N_("The technician is on the way."),
    "in_service": N_("The technician has started the work."),
    "completed": N_("The job is complete."),
    "cancelled": N_("The order was cancelled."),
}
NEW_MESSAGE = N_("New message")
ORDER_UPDATE = N_("Order update")
ATTACHMENT = N_("Sent an attachment")
