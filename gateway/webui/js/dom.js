// Building the page without innerHTML: every text goes in as a text node, so nothing a user or
// the gateway wrote can ever become markup (and the CSP allows no inline script anyway).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function badge(state, label) {
  return h("span", { class: `badge state-${state}` }, label);
}

export function table(columns, rows, { onSort, sorted, rowAttrs } = {}) {
  // columns: [{key, label, render?(row), sortable?}]
  const head = h("tr", {}, columns.map((c) => {
    const th = h("th", { scope: "col", "aria-sort": sorted && sorted.key === c.key
      ? (sorted.descending ? "descending" : "ascending") : null });
    if (c.sortable && onSort) {
      th.append(h("button", { type: "button", class: "sort", onclick: () => onSort(c.key) }, c.label,
        sorted && sorted.key === c.key ? (sorted.descending ? " ▼" : " ▲") : ""));
    } else th.append(c.label);
    return th;
  }));
  const body = rows.map((row) => h("tr", rowAttrs ? rowAttrs(row) : {},
    columns.map((c) => h("td", { "data-col": c.key }, c.render ? c.render(row) : row[c.key] ?? ""))));
  return h("table", { class: "grid" }, h("thead", {}, head), h("tbody", {}, body));
}

export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function csv(header, rows) {
  const cell = (v) => {
    let s = v === null || v === undefined ? "" : String(v);
    if (/^[=+\-@\t\r]/.test(s)) s = "'" + s; // what spreadsheets would evaluate
    return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return [header, ...rows].map((r) => r.map(cell).join(",")).join("\r\n") + "\r\n";
}

export function confirmDialog(title, lines, confirmLabel, cancelLabel) {
  // A modal <dialog>: resolves true when confirmed. Focus goes to the dialog (keyboard: Esc cancels).
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-label": title },
      h("h2", {}, title), lines.map((l) => (l instanceof Node ? l : h("p", {}, l))),
      h("form", { method: "dialog" },
        h("button", { value: "cancel", type: "submit" }, cancelLabel),
        h("button", { value: "ok", type: "submit", class: "danger" }, confirmLabel)));
    dialog.addEventListener("close", () => { resolve(dialog.returnValue === "ok"); dialog.remove(); });
    document.body.append(dialog);
    dialog.showModal();
  });
}
