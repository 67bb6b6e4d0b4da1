"""Order chat rooms: one per order, its consumer and assigned technician as members."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocol.bounds import INT64_MAX, LINE, TEXT
from protocol.frames import Event, Reply, Request
from protocol.orders import AttachmentIds, OrderId, OrderState

Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]


class ChatMessage(msgspec.Struct, kw_only=True):
    """`seq` is the room's gap-free, strictly increasing position. System messages (order events)
    have `kind: "system"`, `sender_role: "system"` and `text` in the reader's language. A message
    staff hid has `hidden: true` (and for members no text, no attachments)."""

    order_id: str
    seq: int
    sender_id: str
    sender_role: str
    kind: Literal["text", "system"]
    text: str | None = None
    attachments: list[str] = []
    client_id: str | None = None
    sent_at: datetime
    # Hidden by staff (admin.message.hide): members get no text and no attachments; admins the kept ones.
    hidden: bool = False


class ChatSent(Reply):
    message: ChatMessage
    duplicate: bool  # true when `client_id` was seen before: the original is returned, nothing stored


class ChatSend(Request, tag="chat.send"):
    """Post text and/or attachments. Stored before the reply; sending the same `client_id` again
    (a retry after a lost reply) returns the original message."""

    order_id: OrderId
    client_id: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
    text: Annotated[str, TEXT, msgspec.Meta(max_length=4000)] | None = None
    attachments: AttachmentIds = []
    reply = ChatSent


class ChatPage(Reply):
    order_id: str
    messages: list[ChatMessage]
    has_more: bool


class ChatHistory(Request, tag="chat.history"):
    """A page of the room: the newest messages, or those before `before_seq` (paging back), or
    after `after_seq` (paging forward), in sequence order."""

    order_id: OrderId
    before_seq: Seq | None = None
    after_seq: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    reply = ChatPage


class RoomSync(msgspec.Struct, kw_only=True):
    order_id: str
    messages: list[ChatMessage]
    has_more: bool  # more than `limit` were missed: continue with `chat.history` after the last seq


class ChatSynced(Reply):
    rooms: list[RoomSync]


class ChatSync(Request, tag="chat.sync"):
    """After a reconnect: for each of the caller's rooms, the messages after the last `seq` the app
    has (`positions`, by order id; absent rooms count from 0). Only rooms with news are returned."""

    positions: Annotated[dict[OrderId, Seq], msgspec.Meta(max_length=500)] = {}
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    reply = ChatSynced


class ChatRead(Request, tag="chat.read"):
    """Mark the room read up to `seq`; the other member receives `chat.read`."""

    order_id: OrderId
    seq: Seq


class Room(msgspec.Struct, kw_only=True):
    order_id: str
    state: OrderState
    last_message: ChatMessage | None
    unread: int
    read_seq: int


class Rooms(Reply):
    rooms: list[Room]


class ChatRooms(Request, tag="chat.rooms"):
    """The caller's rooms, the most recently active first, with the last message and unread count."""

    reply = Rooms


class ChatTyping(Request, tag="chat.typing"):
    """The other member sees `chat.typing`; not stored, at most one every 2 s per room."""

    order_id: OrderId
    silent_without_id = True


class ChatMessageEvent(Event, tag="chat.message"):
    message: ChatMessage


class ChatReadEvent(Event, tag="chat.read"):
    order_id: str
    user_id: str
    seq: int


class ChatTypingEvent(Event, tag="chat.typing"):
    order_id: str
    user_id: str
