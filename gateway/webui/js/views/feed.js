// The live activity panel: `admin.watch`, then one line per `admin.activity` event, newest first.
import { h } from "../dom.js";
import { fmt, stateLabel, t } from "../i18n.js";

const KEEP = 100;

export function kindLabel(kind) {
  return ({
    "order.created": t("order created"), "order.state": t("order moved"), payment: t("payment"), payout: t("payout"),
    "catalog.changed": t("catalog changed"), "ai.conversation": t("AI conversation"),
    "audit.anomaly": t("audit anomaly"), "user.suspended": t("user suspended"),
    "user.unsuspended": t("suspension lifted"),
  })[kind] || kind;
}

export function feedPanel(app) {
  const list = h("ol", { class: "feed", id: "feed" });
  const el = h("aside", { class: "side", "aria-label": t("Live activity") }, h("h2", {}, t("Live activity")), list);
  app.client.addEventListener("admin.activity", (e) => {
    const a = e.detail;
    const what = a.state ? `${kindLabel(a.kind)} · ${stateLabel(a.state)}` : kindLabel(a.kind);
    const target = a.order_id ? h("a", { href: `#/order/${a.order_id}` }, a.order_id.slice(0, 8)) : a.detail || "";
    list.prepend(h("li", { dataset: { kind: a.kind } }, h("time", { datetime: a.at }, fmt.when(a.at)), " ",
      h("strong", {}, what), " ", a.brand || "", " ", target,
      a.amount_cents !== null && a.amount_cents !== undefined ? ` ${fmt.money(a.amount_cents)}` : ""));
    while (list.children.length > KEEP) list.lastChild.remove();
  });
  // The reply names a merchant's brands (null for admins): the views show those only.
  const watch = () => app.client.request("admin.watch").then((w) => { app.brands = w.brands; }).catch(() => {});
  app.watched = watch();
  return { el, watch };
}

// For views that follow the feed: call `fn` at most every `ms` while events arrive.
export function onActivity(app, fn, ms = 300) {
  let timer = null;
  const listener = (e) => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(e.detail); }, ms);
  };
  app.client.addEventListener("admin.activity", listener);
  return () => { clearTimeout(timer); app.client.removeEventListener("admin.activity", listener); };
}
