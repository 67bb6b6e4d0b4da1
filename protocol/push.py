"""Devices that receive push notifications while the app has no live session."""

from typing import Annotated, Literal

import msgspec

from protocol.bounds import LINE
from protocol.frames import Request

FcmToken = Annotated[str, LINE, msgspec.Meta(min_length=16, max_length=4096, description="FCM registration token")]


class PushRegister(Request, tag="push.register"):
    """Register this app install's FCM token (a user may have several devices)."""

    token: FcmToken
    platform: Literal["android", "ios", "web"] = "android"


class PushUnregister(Request, tag="push.unregister"):
    token: FcmToken
