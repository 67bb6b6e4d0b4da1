"""Every user-facing message exists in English, Spanish and Simplified Chinese, and each session
gets its own language."""

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir

from handlers.i18n import SUPPORTED, Catalogs, negotiate
from protocol.auth import Auth

ROOT = Path(__file__).resolve().parent.parent


def source_messages() -> list[str]:
    found = set()
    for package in ("gateway", "handlers", "storage", "protocol"):
        for _, _, message, _, _ in extract_from_dir(ROOT / package, keywords={"N_": None}):
            found.add(message)
    return sorted(found)


def test_every_message_is_translated():
    catalogs, messages = Catalogs(), source_messages()
    assert len(messages) >= 15
    for locale in SUPPORTED[1:]:
        assert catalogs.missing(locale, messages) == [], locale


@pytest.mark.parametrize("tag, expected", [("es-MX", "es"), ("es", "es"), ("zh-CN", "zh-Hans"), ("zh_Hans", "zh-Hans"),
                                           ("zh-TW", "zh-Hans"), ("en-GB", "en"), ("fr", "en"), ("", "en"),
                                           ("!!", "en"), (None, "en")])
def test_locale_negotiation(tag, expected):
    assert negotiate(tag) == expected


async def test_errors_arrive_in_the_session_language(gateway, connect):
    from tests.conftest import mint
    for locale, fragment in (("zh-CN", "未知操作"), ("es-ES", "Operación desconocida"), ("en", "Unknown operation")):
        client = await connect()
        _, token = mint(gateway, "consumer", locale=locale)
        assert (await client.request(Auth(token=token))).locale == negotiate(locale)
        reply, _ = await client.call("order.teleport", {})
        assert reply["code"] == "bad_request" and fragment in reply["message"]
    # the `auth` argument overrides the token's locale
    client = await connect()
    _, token = mint(gateway, "consumer", locale="en")
    await client.request(Auth(token=token, locale="es"))
    reply, _ = await client.call("admin.notify", {"user_id": "x", "text": "hola"})
    assert reply["message"] == "Tu rol no puede usar admin.notify."
