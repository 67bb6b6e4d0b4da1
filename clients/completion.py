"""The console's Tab completion: operation names, the JSON keys of the operation's request Struct,
then values: the choices a field's type declares (a state, a role), the brands, SKUs and service
types of `catalog.list`, and the order ids seen in recent replies and events."""

import re
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from protocol.frames import Request
from protocol.messages import REQUESTS, operation

COMMANDS = (":help", ":quit", ":exit", ":watch", ":unwatch", ":json", ":tables", ":full", ":short")
JSON_KEY = re.compile(r'(^|[{,])\s*("?[\w.-]*)$')  # the JSON key being typed, after `{` or `,`
JSON_VALUE = re.compile(r'"([\w.-]+)"\s*:\s*(\[\s*(?:"[^"]*"\s*,\s*)*)?("?[^",\]\s]*)$')  # a value after `"key": `
RECENT_ORDERS = 30


def summary(request: type[Request] | None) -> str:
    """The first sentence of the request's docstring."""
    paragraph = " ".join((request.__doc__ or "").strip().split("\n\n")[0].split()) if request else ""
    return re.split(r"(?<=\.)(?<!e\.g\.)\s+(?=[A-Z`])", paragraph)[0]


def declared_choices(kind: msgspec.inspect.Type) -> list[str]:
    """The strings a field's type allows (a Literal, also inside an Optional or a list)."""
    if isinstance(kind, msgspec.inspect.LiteralType):
        return [v for v in kind.values if isinstance(v, str)]
    if isinstance(kind, msgspec.inspect.UnionType):
        return [v for t in kind.types for v in declared_choices(t)]
    if isinstance(kind, msgspec.inspect.ListType | msgspec.inspect.SetType):
        return declared_choices(kind.item_type)
    return []


class Values:
    """What the console has learnt to complete values with, by field name."""

    def __init__(self) -> None:
        self.brands: dict[str, str] = {}  # id -> name
        self.skus: dict[str, tuple[str, str]] = {}  # id -> (brand, name)
        self.service_types: dict[str, str] = {}
        self.orders: deque[tuple[str, str]] = deque(maxlen=RECENT_ORDERS)  # (id, what), newest last
        self.conversations: deque[tuple[str, str]] = deque(maxlen=RECENT_ORDERS)  # AI conversations, alike

    def catalog(self, reply: dict[str, Any]) -> None:
        """Learn a `catalog.list` reply."""
        self.brands = {b["id"]: b.get("name", "") for b in reply.get("brands", [])}
        self.skus = {s["id"]: (s.get("brand", ""), s.get("name", "")) for s in reply.get("skus", [])}
        self.service_types = {t["id"]: t.get("name", "") for t in reply.get("service_types", [])}

    def seen(self, frame: dict[str, Any]) -> None:
        """Remember the order ids in a reply or an event (`order`, `orders`, `order_id`), and the AI
        conversations' (`conversation_id`, `conversation`, `conversations`)."""
        self._conversations(frame)
        found: list[tuple[str, str]] = []
        order = frame.get("order")
        if isinstance(order, dict) and isinstance(order.get("id"), str):
            found.append((order["id"], f"{order.get('state', '')} {order.get('brand', '')} {order.get('sku', '')}"))
        for row in frame.get("orders") or []:
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                found.append((row["id"], f"{row.get('state', '')} {row.get('brand', '')} {row.get('sku', '')}"))
        if isinstance(frame.get("order_id"), str):
            found.append((frame["order_id"], str(frame.get("state") or frame.get("type") or "")))
        for order_id, what in found:
            for i, (known, _) in enumerate(self.orders):
                if known == order_id:
                    del self.orders[i]
                    break
            self.orders.append((order_id, what.strip()))

    def _conversations(self, frame: dict[str, Any]) -> None:
        found = [(row["id"], f"{row.get('state', '')} {row.get('brand', '')} {row.get('sku', '')}")
                 for row in [frame.get("conversation"), *(frame.get("conversations") or [])]
                 if isinstance(row, dict) and isinstance(row.get("id"), str)]
        if isinstance(frame.get("conversation_id"), str):
            found.append((frame["conversation_id"], f"turn {frame.get('turn', '')}"))
        for conversation_id, what in found:
            known = [entry for entry in self.conversations if entry[0] == conversation_id]
            for entry in known:
                self.conversations.remove(entry)
            self.conversations.append((conversation_id, what.strip()))

    def of(self, field: str, line: str) -> list[tuple[str, str]]:
        """(value, description) for a field; SKUs of the brand the line names, when it names one."""
        if field in ("brand", "brands"):
            return list(self.brands.items())
        if field in ("sku", "skus"):
            brand = re.search(r'"brand"\s*:\s*"([^"]*)"', line)
            return [(sku, f"{b} {name}") for sku, (b, name) in self.skus.items() if brand is None or b == brand[1]]
        if field in ("service_type", "service_types"):
            return list(self.service_types.items())
        if field in ("order_id", "order_ids"):
            return list(reversed(self.orders))
        if field == "conversation_id":
            return list(reversed(self.conversations))
        return []


class FrameCompleter(Completer):
    """Completes operation names, then the JSON keys of that operation's request Struct, then
    the values of a key (see `Values`)."""

    def __init__(self, requests: Iterable[type[Request]] = REQUESTS, values: Values | None = None) -> None:
        self.requests = {operation(r): r for r in requests}
        self.values = values or Values()

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor.lstrip()
        head = re.match(r"(\S+)\s+(.*)$", text, re.DOTALL)
        if head is None:  # still typing the operation (or a :command)
            for name in COMMANDS if text.startswith(":") else self.requests:
                if name.startswith(text):
                    yield Completion(name, -len(text), display_meta=summary(self.requests.get(name)))
            return
        if head[1] == ":help":
            for name in self.requests:
                if name.startswith(head[2]):
                    yield Completion(name, -len(head[2]), display_meta=summary(self.requests[name]))
            return
        request, rest = self.requests.get(head[1]), head[2]
        if request is None:
            return
        value = JSON_VALUE.search(rest)
        if value is not None and not rest[:value.start(3)].count('"') % 2:
            yield from self._values(request, value[1], value[3], rest)
            return
        key = JSON_KEY.search(rest)
        if key is None or rest[:key.start(2)].count('"') % 2:  # inside a string value
            return
        opener, typed = ("" if key[1] else "{"), key[2]
        if opener and typed:  # a key needs the `{` first
            return
        for field in msgspec.structs.fields(request):
            quoted = f'"{field.encode_name}"'
            if field.name == "id" or quoted in rest or not field.encode_name.startswith(typed.lstrip('"')):
                continue
            yield Completion(f"{opener}{quoted}: ", -len(typed), display=quoted,
                             display_meta="required" if field.required else "optional")

    def _values(self, request: type[Request], key: str, typed: str, line: str) -> Iterable[Completion]:
        info = msgspec.inspect.type_info(request)
        assert isinstance(info, msgspec.inspect.StructType)
        field = next((f for f in info.fields if f.encode_name == key), None)
        if field is None:
            return
        choices = [(c, "") for c in declared_choices(field.type)] + self.values.of(key, line)
        partial = typed.lstrip('"')
        for choice, what in dict(choices).items():
            if choice.startswith(partial):
                yield Completion(f'"{choice}"', -len(typed), display=choice, display_meta=what)
