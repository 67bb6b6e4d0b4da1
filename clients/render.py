"""How the console prints frames: lists of objects as tables, an order as one line, an
`admin.activity` event as one line."""

import json
from typing import Any

from rich.table import Table

TABLE_COLUMNS = 10  # a list's first columns shown in a table; `:json` shows everything
CELL_CHARS = 40


def cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= CELL_CHARS else text[:CELL_CHARS - 1] + "…"


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A list of objects as a table: the columns the rows have, in their order, the first few."""
    columns = list(dict.fromkeys(k for row in rows for k in row))[:TABLE_COLUMNS]
    grid = Table(title=f"{title} ({len(rows)})", title_justify="left", header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if row.get(c) is None else cell(row[c]) for c in columns))
    return grid


def money(cents: Any, currency: Any) -> str:
    return f"{cents / 100:.2f} {str(currency or '').upper()}".rstrip() if isinstance(cents, int) else ""


def order_line(order: dict[str, Any], frame: dict[str, Any] | None = None) -> str:
    """An order in one line: id, state (the change, for `order.status`), what, where, price, who;
    the frame's other fields (`distance_mi`, `claim_code`...) after it as key=value."""
    frame = frame or {}
    state = str(order.get("state", ""))
    if frame.get("previous_state"):
        state = f"{frame['previous_state']} -> {state}"
    what = " ".join(str(order[k]) for k in ("brand", "sku", "service_type") if order.get(k))
    parts = [f"order {order.get('id')}", state, what, money(order.get("price_cents"), order.get("currency"))]
    if order.get("address"):
        parts.append(cell(order["address"]))
    for role in ("consumer", "technician"):
        if order.get(f"{role}_id"):
            parts.append(f"{role} {order[f'{role}_id']}")
    if order.get("payment_state"):
        parts.append(f"payment {order['payment_state']}")
    if order.get("rating") is not None:
        parts.append(f"rated {order['rating']}")
    extras = {k: v for k, v in frame.items()
              if k not in ("type", "id", "order", "previous_state") and v is not None}
    parts += [f"{k}={cell(v)}" for k, v in extras.items()]
    return "  ".join(p for p in parts if p)


def activity_line(data: dict[str, Any]) -> str:
    """One `admin.activity` event as one line: time, kind, brand, order, state change, amount."""
    at = str(data.get("at", ""))[11:19]
    change = data.get("state") or ""
    if data.get("previous_state"):
        change = f"{data['previous_state']} -> {change}"
    parts = [at, data.get("kind", ""), data.get("brand") or "-", data.get("order_id") or "", change]
    if data.get("amount_cents") is not None:
        parts.append(f"{data['amount_cents'] / 100:.2f}")
    parts += [data.get(k) or "" for k in ("user_id", "detail")]
    return "  ".join(str(p) for p in parts if p != "")
