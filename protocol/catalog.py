"""The catalog: brands, categories, SKUs, service types, reference prices and troubleshooting
guides; the back office's changes to it, their history, and merchants' brand memberships."""

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from protocol.bounds import END, LINE, TEXT
from protocol.frames import Reply, Request
from protocol.location import Slug

SkuId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64, description="model number")]
Name = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=200)]
Locale = Literal["en", "es", "zh-Hans"]
# The currencies the payments are set up for; a new one needs its Stripe minimum below too.
Currency = Literal["usd"]
# Stripe's smallest (USD) and largest charge: a price outside them could never be paid.
PriceCents = Annotated[int, msgspec.Meta(ge=50, le=99_999_999)]
GuideId = Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
HistoryKind = Literal["brand", "category", "sku", "price", "guide", "merchant_brands"]


class Names(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A name in the other shipped languages (`name` itself is English); absent: unchanged."""

    es: Name | None = None
    zh_hans: Name | None = msgspec.field(default=None, name="zh-Hans")


# -- what catalog.list returns ----------------------------------------------------------------
class Brand(msgspec.Struct, kw_only=True):
    id: str
    name: str  # in the session's language, English where no translation is stored
    names: dict[str, str]  # every stored language: "en", "es", "zh-Hans"
    retired: bool


class Category(msgspec.Struct, kw_only=True):
    id: str
    name: str
    names: dict[str, str]


class ServiceType(msgspec.Struct, kw_only=True):
    id: str
    name: str
    names: dict[str, str]


class Price(msgspec.Struct, kw_only=True):
    service_type: str
    price_cents: int
    currency: str
    retired: bool


class Sku(msgspec.Struct, kw_only=True):
    id: str
    brand: str
    category: str
    name: str
    names: dict[str, str]
    retired: bool  # the SKU itself; it cannot be ordered either when its brand or the price is retired
    prices: list[Price]


class Catalog(Reply):
    version: int  # bumped by every change
    brands: list[Brand]
    categories: list[Category]
    service_types: list[ServiceType]
    skus: list[Sku]


class CatalogList(Request, tag="catalog.list"):
    """The whole catalog, retired entries included (flagged), names in the session's language."""

    reply = Catalog


# -- changes ------------------------------------------------------------------------------------
class Saved(Reply):
    """What was saved, as stored (the row's columns), and the catalog version it made."""

    version: int
    after: dict[str, Any]


class BrandSave(Request, tag="catalog.brand.save"):
    """Create a brand (admins) or rename one (admins; merchants their own)."""

    brand: Slug
    name: Name
    names: Names | None = None
    reply = Saved


class CategorySave(Request, tag="catalog.category.save"):
    """Create or rename a category (admins: categories are shared by every brand)."""

    category: Slug
    name: Name
    names: Names | None = None
    reply = Saved


class SkuSave(Request, tag="catalog.sku.save"):
    """Create or change a SKU of a brand; a SKU never moves to another brand."""

    sku: SkuId
    brand: Slug
    category: Slug
    name: Name
    names: Names | None = None
    reply = Saved


class PriceSave(Request, tag="catalog.price.save"):
    """Set the reference price of a SKU for a service type (what new orders are charged)."""

    sku: SkuId
    service_type: Slug
    price_cents: PriceCents
    currency: Currency = "usd"
    reply = Saved


GuideText = Annotated[str, TEXT, msgspec.Meta(max_length=2000)]
CheckSafety = Literal["safe", "caution", "technician"]  # technician: never offered to the consumer as a step
Urgency = Literal["low", "normal", "high", "emergency"]


class GuideCheck(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One check of a guide, in the order the assistant offers them."""

    text: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=1000)]
    look_for: Annotated[str, TEXT, msgspec.Meta(max_length=1000)] = ""
    safety: CheckSafety = "safe"


class GuideSave(Request, tag="catalog.guide.save"):
    """Create a troubleshooting guide (no `guide_id`) or replace one, for a brand, one of its
    categories (`category`) or one of its SKUs; with no brand, for a category across every brand
    (admins only). The structured fields are what the AI assistant's offline engine reads; a guide
    without `checks` is shown but never offered as steps."""

    title: Name
    body: Annotated[str, TEXT, msgspec.Meta(min_length=1, max_length=16000, description="markdown")]
    brand: Slug | None = None  # null: a category-wide guide (give `category`)
    guide_id: GuideId | None = None
    sku: SkuId | None = None
    locale: Locale = "en"
    category: Slug | None = None
    symptoms: GuideText = ""  # the consumer's words the guide is for (full-text searched)
    checks: Annotated[list[GuideCheck], msgspec.Meta(max_length=30)] = []
    call_when: GuideText = ""  # what, once reported, means a technician must come
    likely_parts: Annotated[list[Name], msgspec.Meta(max_length=30)] = []
    urgency: Urgency = "normal"
    reply = Saved


class Guide(msgspec.Struct, kw_only=True):
    id: str
    brand: str | None  # null: the category's guide for every brand
    sku: str | None
    locale: str
    title: str
    body: str
    updated_at: datetime
    category: str | None = None
    symptoms: str = ""
    checks: list[GuideCheck] = []
    call_when: str = ""
    likely_parts: list[str] = []
    urgency: str = "normal"


class Guides(Reply):
    guides: list[Guide]
    next_after: str | None = None  # pass as `after` for the next page; null: no more


Cursor = Annotated[str, msgspec.Meta(min_length=1, max_length=600, pattern=r"^[A-Za-z0-9_-]+={0,2}" + END)]


class GuideList(Request, tag="catalog.guides"):
    """The troubleshooting guides of a brand (all its SKUs', or one SKU's and the brand-wide ones), or
    with no brand the category-wide ones (every brand's SKUs of the category read them)."""

    brand: Slug | None = None
    category: Slug | None = None
    sku: SkuId | None = None
    locale: Locale | None = None
    after: Cursor | None = None  # a page's `next_after`
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    reply = Guides


class Retire(Request, tag="catalog.retire"):
    """Retire a brand, a SKU or a price (`retired: false` brings it back). Retired entries stay in
    the catalog, flagged, and cannot be ordered; existing orders keep their price."""

    kind: Literal["brand", "sku", "price"]
    brand: Slug | None = None  # kind brand
    sku: SkuId | None = None  # kinds sku and price
    service_type: Slug | None = None  # kind price
    retired: bool = True
    reply = Saved


class Change(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor_id: str
    actor_role: str
    kind: HistoryKind
    key: str
    brand: str | None
    before: dict[str, Any] | None
    after: dict[str, Any]


class History(Reply):
    changes: list[Change]
    next_cursor: int | None  # pass as `before` for the next (older) page


class HistoryList(Request, tag="catalog.history"):
    """Changes newest first; merchants see their brands' only."""

    brand: Slug | None = None
    kind: HistoryKind | None = None
    key: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=200)] | None = None
    before: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    reply = History


# -- memberships --------------------------------------------------------------------------------
class MerchantBrands(Reply):
    merchant_id: str
    brands: list[str]


class MerchantBrandsSet(Request, tag="admin.merchant.brands"):
    """Set a merchant user's brands (replaces the set; an empty list removes every membership)."""

    merchant_id: Annotated[str, LINE, msgspec.Meta(min_length=1, max_length=64)]
    brands: Annotated[list[Slug], msgspec.Meta(max_length=100)]
    reply = MerchantBrands
