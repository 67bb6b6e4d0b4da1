"""The component schemas of the AsyncAPI document: msgspec's JSON Schema of the protocol types,
made into what code generators (Modelina, quicktype) turn into named, typed models.

msgspec describes the wire exactly; generators need more: a title on every schema (else
`AnonymousSchema_N`), each enum as its own named schema, `type` tags as constants, `X | None`
as a nullable type rather than a union with `null` (which Dart generators turn into `Object?`).
"""

import inspect
import re
import sys
import types
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

import msgspec

SCHEMA_REF = "#/components/schemas/{name}"
ERROR_CODE = "ErrorCode"
# Fields of the server's frames that always hold a UUID (orders, AI conversations and drafts).
UUID_FIELDS = frozenset({"order_id", "conversation_id", "draft_id"})
UUID_IDS = frozenset({"Order", "OrderRow", "OrderFile", "AiConversation", "AiDraft"})  # their `id` is one too


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)


def literal_names(modules: Iterable[types.ModuleType]) -> dict[tuple[Any, ...], str]:
    """The names the protocol gives its Literal types (`OrderState = Literal[...]`), by sorted
    values: the enums' names in the document. The first module to name a set wins."""
    names: dict[tuple[Any, ...], str] = {}
    for module in modules:
        for name, value in vars(module).items():
            if get_origin(value) is Literal and name[:1].isupper():
                names.setdefault(tuple(sorted(get_args(value), key=str)), name)
    return names


def protocol_literals() -> dict[tuple[Any, ...], str]:
    return literal_names(module for name, module in sorted(sys.modules.items())
                         if name.startswith("protocol.") and module is not None)


class _Components:
    def __init__(self, schemas: dict[str, Any], literals: dict[tuple[Any, ...], str]) -> None:
        self.schemas = schemas
        self.literals = literals
        self.enums: dict[str, list[Any]] = {}

    def enum_ref(self, values: list[Any], owner: str, field: str) -> dict[str, str]:
        key = tuple(sorted(values, key=str))
        name = self.literals.get(key) or f"{owner}{_pascal(field)}"
        while name in self.schemas or (name in self.enums and tuple(sorted(self.enums[name], key=str)) != key):
            name += "Value"  # an inline Literal named like another enum or a Struct
        self.enums[name] = values
        return {"$ref": SCHEMA_REF.format(name=name)}

    def value(self, node: dict[str, Any], owner: str, field: str) -> dict[str, Any]:
        """One property's schema (or an item of it), rewritten."""
        if "enum" in node and "type" not in node:
            return self.enum_ref(node["enum"], owner, field) | {
                key: value for key, value in node.items() if key not in ("enum",)}
        if "anyOf" in node:
            options = [self.value(option, owner, field) for option in node["anyOf"]]
            rest = {key: value for key, value in node.items() if key != "anyOf"}
            nulls = [option for option in options if option == {"type": "null"}]
            others = [option for option in options if option != {"type": "null"}]
            if nulls and len(others) == 1 and isinstance(others[0].get("type"), str):
                # `string | null` with the string's bounds: one nullable type, not a union
                return {**others[0], "type": [others[0]["type"], "null"], **rest}
            return {"anyOf": options, **rest}
        node = dict(node)
        if isinstance(node.get("items"), dict):
            node["items"] = self.value(node["items"], owner, field)
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = self.value(node["additionalProperties"], owner, field)
        return node


def build(schemas: dict[str, Any], kinds: dict[str, type[msgspec.Struct]], *, requests: set[str],
          codes: Iterable[str]) -> dict[str, Any]:
    """The component schemas, sorted by name. `schemas`: msgspec's components, named as `kinds`
    says (their Struct's own names); `requests`: the components that are requests, whose fields
    are never UUID-formatted (they accept what a person types, e.g. an order id's first characters)."""
    components = _Components(schemas, protocol_literals())
    out: dict[str, Any] = {}
    for name, schema in schemas.items():
        schema = dict(schema)
        if "description" in schema:  # msgspec copies docstrings verbatim, indentation included
            schema["description"] = inspect.cleandoc(schema["description"])
        kind = kinds.get(name)
        tag_field = kind.__struct_config__.tag_field if kind is not None else None
        moments = _datetime_fields(kind) if kind is not None else set()
        properties: dict[str, Any] = {}
        for field, node in schema.get("properties", {}).items():
            if field == tag_field and "enum" in node and len(node["enum"]) == 1:
                properties[field] = {"type": "string", "const": node["enum"][0]}
                continue
            value = components.value(node, name, field)
            if name not in requests and (field in UUID_FIELDS or (field == "id" and name in UUID_IDS)):
                value = _formatted(value, "uuid")
            if field in moments:
                value = _formatted(value, "date-time")
            properties[field] = value
        if name == "Error":
            properties["code"] = {"$ref": SCHEMA_REF.format(name=ERROR_CODE)} | {
                key: value for key, value in properties["code"].items() if key != "type"}
        if "properties" in schema:
            schema["properties"] = properties
        if kind is not None and kind.__struct_config__.forbid_unknown_fields:
            schema["additionalProperties"] = False
        schema.pop("title", None)  # msgspec's is the bare class name, even for a renamed one
        out[name] = {"title": name, **schema}
    for name, values in components.enums.items():
        out[name] = {"title": name, "type": "string", "enum": values}
    out[ERROR_CODE] = {"title": ERROR_CODE, "type": "string", "enum": sorted(codes),
                       "description": "The stable, machine-readable codes of `error` frames."}
    return dict(sorted(out.items()))


def _formatted(node: dict[str, Any], format: str) -> dict[str, Any]:
    """A string's schema (nullable or not) with its format; an array's items."""
    kind = node.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if "string" in kinds:
        return {**node, "format": format}
    if "array" in kinds:
        return {**node, "items": _formatted(node["items"], format)}
    return node


def _datetime_fields(kind: type[msgspec.Struct]) -> set[str]:
    """The fields holding datetimes. msgspec says `date-time` only of those declared with a time
    zone (`tz=True`, RFC 3339's form); the gateway's are always aware, since timestamptz."""
    def holds(info: Any) -> bool:
        if isinstance(info, msgspec.inspect.DateTimeType):
            return True
        if isinstance(info, msgspec.inspect.Metadata):
            return holds(info.type)
        if isinstance(info, msgspec.inspect.UnionType):
            return any(holds(item) for item in info.types)
        return isinstance(info, msgspec.inspect.ListType) and holds(info.item_type)

    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    return {field.encode_name for field in info.fields if holds(field.type)}
