"""The JSON schema a model must answer in, generated from a msgspec type and made fit for OpenAI's strict
structured output: no `$ref` (definitions inlined), every property required (optional ones nullable, their
nulls dropped again before decoding), `additionalProperties: false`, only keywords strict mode accepts."""

import functools
from typing import Any

import msgspec

# What strict mode accepts; anything else (title, default, minLength, maxLength, uniqueItems, discriminator...)
# is dropped rather than refused by the provider.
KEPT = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf",
                  "description", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                  "multipleOf", "minItems", "maxItems"})
FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
NULL: dict[str, Any] = {"type": "null"}


class SchemaError(ValueError):
    """The type cannot be expressed in strict mode (a recursive type: inlining would never end)."""


def strict_schema(kind: Any) -> dict[str, Any]:
    """`msgspec.json.schema(kind)` as OpenAI's `strict: true` accepts it. The root must be an object."""
    raw = msgspec.json.schema(kind)
    schema = _strict(raw, raw.get("$defs", {}), ())
    if schema.get("type") != "object":
        raise SchemaError(f"strict mode needs an object at the root, not {schema.get('type')!r}")
    return schema


def _strict(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        if name in seen:
            raise SchemaError(f"{name} refers to itself: strict mode needs the schema inlined")
        return _strict(defs[name], defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "oneOf":  # msgspec's unions are anyOf already; a oneOf of disjoint schemas means the same
            key = "anyOf"
        if key not in KEPT or (key == "format" and value not in FORMATS):
            continue
        if key == "properties":
            value = {name: _strict(child, defs, seen) for name, child in value.items()}
        elif key == "items":
            value = _strict(value, defs, seen)
        elif key == "anyOf":
            value = [_strict(option, defs, seen) for option in value]
        out[key] = value
    if "enum" in out and "type" not in out and all(isinstance(item, str) for item in out["enum"]):
        out["type"] = "string"
    if out.get("type") == "object" or "properties" in out:
        properties = out.setdefault("properties", {})
        required = set(out.get("required", ()))
        for name in properties:
            if name not in required:  # optional: always present, null when absent
                properties[name] = nullable(properties[name])
        out["required"] = list(properties)
        out["additionalProperties"] = False
    return out


def nullable(node: dict[str, Any]) -> dict[str, Any]:
    if accepts_null(node):
        return node
    return {"anyOf": [node, NULL]}


def accepts_null(node: dict[str, Any]) -> bool:
    kinds = node.get("type")
    return (kinds == "null" or (isinstance(kinds, list) and "null" in kinds)
            or any(accepts_null(option) for option in node.get("anyOf", ())))


def drop_added_nulls(document: Any, kind: Any) -> Any:
    """The model's document with the nulls strict mode made it write for optional fields that do not take
    null removed, so that msgspec applies their defaults, and texts and lists longer than the type allows cut
    to its limits (strict mode cannot enforce maxLength; a model that writes a little too much still answers).
    Anything else is left as it is, for msgspec to judge."""
    raw = _schema(kind)
    return _prune(document, raw, raw.get("$defs", {}))


@functools.cache
def _schema(kind: Any) -> dict[str, Any]:
    return msgspec.json.schema(kind)


def _prune(document: Any, node: dict[str, Any], defs: dict[str, Any]) -> Any:
    while "$ref" in node:
        node = defs.get(node["$ref"].removeprefix("#/$defs/"), {})
    if isinstance(document, str) and len(document) > node.get("maxLength", len(document)):
        return document[:node["maxLength"] - 1].rstrip() + "…"
    if isinstance(document, list) and len(document) > node.get("maxItems", len(document)):
        document = document[:node["maxItems"]]
    if isinstance(document, dict) and "properties" in node:
        required = set(node.get("required", ()))
        pruned = {}
        for name, value in document.items():
            child = node["properties"].get(name)
            if child is None:
                pruned[name] = value  # unknown: msgspec refuses it
            elif value is None and name not in required and not accepts_null(child):
                continue
            else:
                pruned[name] = _prune(value, child, defs)
        return pruned
    if isinstance(document, list) and isinstance(node.get("items"), dict):
        return [_prune(item, node["items"], defs) for item in document]
    if "anyOf" in node and isinstance(document, (dict, list)):
        for option in node["anyOf"]:
            resolved = option
            while "$ref" in resolved:
                resolved = defs.get(resolved["$ref"].removeprefix("#/$defs/"), {})
            if (isinstance(document, dict) and "properties" in resolved) or (
                    isinstance(document, list) and "items" in resolved):
                return _prune(document, resolved, defs)
    return document
