"""Finding the troubleshooting guides for a conversation: the SKU's, its brand's and its
category's, ranked by PostgreSQL full-text search against the consumer's words (storage.ai)."""

from typing import Literal

import msgspec

from handlers.ai.engine import Check, Guide
from handlers.i18n import DEFAULT
from handlers.services import Services
from storage import ai


class StoredCheck(msgspec.Struct):
    text: str
    look_for: str = ""
    safety: str = "safe"


CHECKS = msgspec.json.Decoder(list[StoredCheck])


def safety_of(value: str) -> Literal["safe", "caution", "technician"]:
    """A stored level; an unknown one is the safest reading (never offered)."""
    return "safe" if value == "safe" else "caution" if value == "caution" else "technician"


async def find(services: Services, *, brand: str, sku: str, category: str, locale: str, words: list[str],
               limit: int = 3) -> tuple[Guide, ...]:
    """The best guides for the consumer's words (all of them; the latest is `words[-1]`), in the
    conversation's language, else in English."""
    text, latest = " ".join(words), words[-1] if len(words) > 1 else ""
    rows = []
    for language in dict.fromkeys((locale, DEFAULT)):
        rows = await ai.guides(services.db, brand=brand, sku=sku, category=category, locale=language, words=text,
                               latest=latest, limit=limit)
        if rows:
            break
    return tuple(Guide(title=r["title"], symptoms=r["symptoms"],
                       checks=tuple(Check(text=c.text, look_for=c.look_for, safety=safety_of(c.safety))
                                    for c in CHECKS.decode(r["checks"])),
                       call_when=r["call_when"], likely_parts=tuple(r["likely_parts"]), urgency=r["urgency"],
                       rank=float(r["rank"]), shared=r["shared"]) for r in rows)
