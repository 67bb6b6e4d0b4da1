"""Message catalogs (gettext .po files read with Babel) and locale negotiation: the language of
error messages, system messages and push texts."""

from importlib import resources
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po

DEFAULT = "en"
SUPPORTED = ("en", "es", "zh-Hans")


def negotiate(tag: str | None) -> str:
    """The supported locale closest to a BCP 47 tag (`es-MX` -> `es`, `zh-CN` -> `zh-Hans`)."""
    if not tag:
        return DEFAULT
    try:
        locale = Locale.parse(tag.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return DEFAULT
    if locale.language == "zh":
        return "zh-Hans"  # the one Chinese script we ship; closer than English for Traditional readers
    return locale.language if locale.language in SUPPORTED else DEFAULT


class Catalogs:
    def __init__(self) -> None:
        self._messages: dict[str, dict[str, str]] = {DEFAULT: {}}
        root = resources.files("handlers") / "locales"
        for locale in SUPPORTED[1:]:
            po = root / locale.replace("-", "_") / "LC_MESSAGES" / "messages.po"
            with po.open("rb") as f:
                catalog = read_po(f)
            self._messages[locale] = {
                str(m.id): str(m.string) for m in catalog if m.id and m.string and not m.fuzzy
            }

    def translate(self, locale: str, message: str, **params: Any) -> str:
        text = self._messages.get(locale, {}).get(message, message)
        return text.format(**params) if params else text

    def missing(self, locale: str, messages: list[str]) -> list[str]:
        return [m for m in messages if m not in self._messages[locale]]
