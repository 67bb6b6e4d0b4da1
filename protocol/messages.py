"""The closed sets of frames: every request the server accepts and every event it pushes.

Adding an operation: declare its Struct in the domain's module and list it here.
"""

from typing import Union

from protocol import (
    admin,
    ai,
    audits,
    auth,
    catalog,
    chat,
    location,
    moderation,
    orders,
    oversight,
    payments,
    push,
    summary,
    suspension,
    uploads,
)
from protocol.frames import Event, Request

REQUESTS: tuple[type[Request], ...] = (
    auth.Auth,
    auth.Ping,
    auth.Register,
    auth.Login,
    auth.Refresh,
    auth.Logout,
    auth.Claim,
    location.LocationUpdate,
    location.Duty,
    location.TechStats,
    orders.OrderCreate,
    orders.OrderGet,
    orders.OrderList,
    orders.OrderTimeline,
    orders.OrderNearby,
    orders.OrderAccept,
    orders.OrderDecline,
    orders.OrderRelease,
    orders.OrderDepart,
    orders.OrderStart,
    orders.OrderComplete,
    orders.OrderCancel,
    orders.OrderRate,
    uploads.UploadBegin,
    uploads.UploadChunk,
    uploads.UploadEnd,
    chat.ChatSend,
    chat.ChatHistory,
    chat.ChatSync,
    chat.ChatRead,
    chat.ChatRooms,
    chat.ChatTyping,
    push.PushRegister,
    push.PushUnregister,
    payments.PaymentSetup,
    payments.PaymentMethods,
    payments.PaymentMethodRemove,
    payments.PaymentPay,
    payments.PaymentGet,
    payments.PaymentRefund,
    payments.PaymentAudit,
    payments.PayoutOnboard,
    payments.PayoutStatus,
    admin.Notify,
    admin.LogList,
    admin.Watch,
    admin.Unwatch,
    audits.AuditStart,
    audits.AuditList,
    summary.SummaryGet,
    catalog.CatalogList,
    catalog.GuideList,
    catalog.HistoryList,
    catalog.BrandSave,
    catalog.CategorySave,
    catalog.SkuSave,
    catalog.PriceSave,
    catalog.GuideSave,
    catalog.Retire,
    catalog.MerchantBrandsSet,
    moderation.CancelPreview,
    moderation.Cancel,
    moderation.Reassign,
    moderation.ReassignCandidates,
    moderation.MessageHide,
    moderation.JobRetry,
    suspension.Suspend,
    suspension.Unsuspend,
    suspension.SuspensionList,
    oversight.AdminOrders,
    oversight.AdminOrder,
    oversight.AdminMap,
    admin.UserGet,
    ai.AiStart,
    ai.AiReply,
    ai.AiEnd,
    ai.AiGet,
    ai.AiList,
)

EVENTS: tuple[type[Event], ...] = (
    orders.OrderAvailable,
    orders.OrderUnavailable,
    orders.OrderStatus,
    chat.ChatMessageEvent,
    chat.ChatReadEvent,
    chat.ChatTypingEvent,
    payments.PaymentStatus,
    admin.Notice,
    admin.Activity,
    admin.Unwatched,
    moderation.ChatHiddenEvent,
    ai.AiDelta,
    ai.AiAnswered,
)

AnyRequest = Union[REQUESTS]  # type: ignore[valid-type]  # noqa: UP007
AnyEvent = Union[EVENTS]  # type: ignore[valid-type]  # noqa: UP007

BY_TYPE: dict[str, type[Request]] = {r.__struct_config__.tag: r for r in REQUESTS}  # type: ignore[misc]


def operation(request: type[Request]) -> str:
    tag = request.__struct_config__.tag
    assert isinstance(tag, str)
    return tag
