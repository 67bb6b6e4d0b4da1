"""The chat's own push texts."""

from handlers.errors import N_

NEW_MESSAGE = N_("New message")
ATTACHMENT = N_("Sent an attachment")
