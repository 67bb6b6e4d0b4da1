// The order board: admin.orders with its filters and search, keyset pages with the total, the
// three time columns sorted by the gateway, CSV export, states as badges, live updates.
import { errorText } from "../app.js";
import { badge, clear, download, h, table } from "../dom.js";
import { fmt, STATES, stateLabel, t } from "../i18n.js";
import { onActivity } from "./feed.js";

const SERVER_SORTS = ["created_at", "updated_at", "state_since"];

export function boardView(app, main) {
  const filters = { sort: "-created_at" };
  const cursors = [null]; // the cursor of each page seen, for "previous"
  let page = 0;
  const q = h("input", { type: "search", name: "q", id: "q", placeholder: t("Order id or SKU") });
  const state = h("select", { name: "state", id: "state" }, h("option", { value: "" }, t("Any state")),
    STATES.map((s) => h("option", { value: s }, stateLabel(s))));
  const brand = h("input", { type: "text", name: "brand", id: "brand", placeholder: t("Brand") });
  const stuck = h("input", { type: "number", name: "stuck", id: "stuck", min: 1, placeholder: t("Stuck minutes") });
  const from = h("input", { type: "date", name: "from", id: "from", "aria-label": t("Created from") });
  const to = h("input", { type: "date", name: "to", id: "to", "aria-label": t("Created until") });
  const status = h("p", { class: "status", role: "status" });
  const result = h("div", { id: "board" });
  const pager = h("div", { class: "pager" });

  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); restart(); } },
    h("label", {}, t("Search"), q), h("label", {}, t("State"), state), h("label", {}, t("Brand"), brand),
    h("label", {}, t("Stuck over (min)"), stuck), h("label", {}, t("Created from"), from),
    h("label", {}, t("Created until"), to),
    h("button", { type: "submit" }, t("Apply")),
    h("button", { type: "button", id: "export", onclick: exportCsv }, t("Export CSV")));
  clear(main, h("h1", {}, t("Orders")), form, status, result, pager);

  function request() {
    const r = { sort: filters.sort, limit: 50 };
    if (q.value.trim()) r.q = q.value.trim();
    if (state.value) r.state = [state.value];
    if (brand.value.trim()) r.brand = brand.value.trim();
    if (stuck.value) r.stuck_minutes = Number(stuck.value);
    if (from.value) r.created_from = new Date(from.value).toISOString();
    if (to.value) r.created_to = new Date(new Date(to.value).getTime() + 86_400_000).toISOString();
    return r;
  }

  function sortBy(key) {
    if (SERVER_SORTS.includes(key)) {
      filters.sort = filters.sort === `-${key}` ? key : `-${key}`;
      filters.local = null;
      restart();
    } else {
      filters.local = filters.local && filters.local.key === key && !filters.local.descending
        ? { key, descending: true } : { key, descending: false };
      draw(last);
    }
  }

  const columns = [
    { key: "id", label: t("Order"), render: (o) => h("a", { href: `#/order/${o.id}` }, o.id.slice(0, 8)), sortable: true },
    { key: "state", label: t("State"), render: (o) => badge(o.state, stateLabel(o.state)), sortable: true },
    { key: "brand", label: t("Brand"), sortable: true },
    { key: "sku", label: t("SKU"), sortable: true },
    { key: "service_type", label: t("Service") },
    { key: "price_cents", label: t("Price"), render: (o) => fmt.money(o.price_cents, o.currency), sortable: true },
    { key: "payment_state", label: t("Payment"), render: (o) => (o.payment_state ? t(o.payment_state) : "—") },
    { key: "payout_state", label: t("Payout"), render: (o) => t(o.payout_state) },
    { key: "technician_id", label: t("Technician"), render: (o) => (o.technician_id || "").slice(0, 8) },
    { key: "created_at", label: t("Created"), render: (o) => fmt.when(o.created_at), sortable: true },
    { key: "updated_at", label: t("Updated"), render: (o) => fmt.when(o.updated_at), sortable: true },
    { key: "state_since", label: t("In state since"), render: (o) => fmt.ago(o.state_since), sortable: true },
  ];

  let last = null;
  function draw(board) {
    if (!board) return;
    let rows = board.orders;
    if (filters.local) {
      const { key, descending } = filters.local;
      rows = [...rows].sort((a, b) => (a[key] > b[key] ? 1 : a[key] < b[key] ? -1 : 0) * (descending ? -1 : 1));
    }
    const key = filters.sort.replace("-", "");
    const sorted = filters.local || { key, descending: filters.sort.startsWith("-") };
    clear(result, rows.length ? table(columns, rows, { onSort: sortBy, sorted,
      rowAttrs: (o) => ({ dataset: { order: o.id, state: o.state } }) })
      : h("p", { class: "empty" }, t("No orders match.")));
    status.textContent = t("{total} orders", { total: fmt.number(board.total) });
    clear(pager,
      h("button", { type: "button", disabled: page === 0, onclick: () => { page -= 1; load(); } }, t("Previous")),
      h("span", {}, t("Page {n}", { n: page + 1 })),
      h("button", { type: "button", id: "next", disabled: !board.next_cursor, onclick: () => {
        cursors[page + 1] = board.next_cursor; page += 1; load();
      } }, t("Next")));
  }

  async function load() {
    try {
      const r = request();
      if (cursors[page]) r.cursor = cursors[page];
      last = await app.client.request("admin.orders", r);
      draw(last);
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  function restart() {
    page = 0;
    cursors.length = 1;
    return load();
  }

  async function exportCsv() {
    try {
      const r = { ...request(), format: "csv", limit: 200 };
      if (cursors[page]) r.cursor = cursors[page];
      const board = await app.client.request("admin.orders", r);
      download(`orders-${new Date().toISOString().slice(0, 10)}.csv`, board.csv);
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  // New and changed orders: the current page is read again (the board's sort decides where they go).
  const stop = onActivity(app, (a) => { if (a.kind.startsWith("order.") || a.kind === "payment") load(); });
  return { ready: load(), reload: load, stop };
}
