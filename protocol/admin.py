"""Back-office operations available to admins from the debug console."""

from typing import Annotated

import msgspec

from protocol.bounds import END, LINE, TEXT
from protocol.frames import Event, Reply, Request

GroupName = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[a-z0-9_.:-]+" + END)]


class Notice(Event, tag="notice"):
    """A message from staff, shown to the user as a banner."""

    text: str
    sender: str


class Notified(Reply):
    sessions: int = msgspec.field(default=0)


class Notify(Request, tag="admin.notify"):
    """Push a `notice` to one user (all their sessions) or a group (e.g. `role:technician`),
    on whichever gateway process holds the sessions. `sessions` counts this process's only."""

    text: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=1000)]
    user_id: Annotated[str, LINE, msgspec.Meta(max_length=64)] | None = None
    group: GroupName | None = None
    reply = Notified
