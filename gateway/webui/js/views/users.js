// Users (admins): a user by e-mail or id (admin.user; the read is logged), their orders (as
// consumer and as technician), suspend and unsuspend with a reason; the suspensions in force.
import { errorText } from "../app.js";
import { badge, clear, confirmDialog, h, table } from "../dom.js";
import { fmt, stateLabel, t } from "../i18n.js";

export function usersView(app, main, [initial]) {
  const status = h("p", { class: "status", role: "status" });
  const who = h("input", { type: "search", id: "user-id", required: true, placeholder: t("E-mail or user id"),
    value: initial || "" });
  const found = h("div", { id: "user" });
  const inForce = h("div", { id: "suspensions" });
  clear(main, h("h1", {}, t("Users")),
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); show(who.value.trim()); } },
      h("label", {}, t("E-mail or user id"), who), h("button", { type: "submit" }, t("Find"))),
    status, found, h("h2", {}, t("Suspensions in force")), inForce);

  const orderColumns = [
    { key: "id", label: t("Order"), render: (o) => h("a", { href: `#/order/${o.id}` }, o.id.slice(0, 8)) },
    { key: "state", label: t("State"), render: (o) => badge(o.state, stateLabel(o.state)) },
    { key: "brand", label: t("Brand") }, { key: "sku", label: t("SKU") },
    { key: "price", label: t("Price"), render: (o) => fmt.money(o.price_cents, o.currency) },
    { key: "created_at", label: t("Created"), render: (o) => fmt.when(o.created_at) },
  ];

  async function show(wanted) {
    if (!wanted) return;
    try {
      const { user } = await app.client.request("admin.user", wanted.includes("@") ? { email: wanted } : { user_id: wanted });
      const userId = user.user_id;
      const [asConsumer, asTechnician, suspensions] = await Promise.all([
        app.client.request("admin.orders", { consumer_id: userId, limit: 50 }),
        app.client.request("admin.orders", { technician_id: userId, limit: 50 }),
        app.client.request("admin.suspensions", { user_id: userId, in_force: true })]);
      const suspended = suspensions.suspensions.length > 0;
      const reason = h("input", { type: "text", id: "suspend-reason", placeholder: t("Reason"), required: true });
      const action = suspended
        ? h("button", { type: "button", id: "unsuspend", onclick: () => change("admin.unsuspend", { user_id: userId }) },
          t("Lift the suspension"))
        : h("form", { class: "filters", onsubmit: (e) => { e.preventDefault();
          change("admin.suspend", { user_id: userId, reason: reason.value }); } },
        h("label", {}, t("Reason"), reason), h("button", { type: "submit", class: "danger", id: "suspend" }, t("Suspend")));
      clear(found, h("h2", {}, user.name || userId),
        h("dl", { class: "facts" }, h("dt", {}, t("User id")), h("dd", { id: "found-id" }, userId),
          h("dt", {}, t("Role")), h("dd", {}, t(user.role)), h("dt", {}, t("E-mail")), h("dd", {}, user.email || "—"),
          h("dt", {}, t("Created")), h("dd", {}, fmt.when(user.created_at)),
          user.invited ? [h("dt", {}, t("Account")), h("dd", {}, t("invited, not claimed yet"))] : null,
          user.brands.length ? [h("dt", {}, t("Brands")), h("dd", {}, user.brands.join(", "))] : null),
        h("p", { id: "suspension" }, suspended ? t("Suspended: {reason}", {
        reason: suspensions.suspensions[0].reason }) : t("Not suspended.")), action,
      h("h3", {}, t("Orders as customer ({n})", { n: fmt.number(asConsumer.total) })), table(orderColumns, asConsumer.orders),
      h("h3", {}, t("Orders as technician ({n})", { n: fmt.number(asTechnician.total) })), table(orderColumns, asTechnician.orders));
      status.textContent = "";
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  async function change(type, fields) {
    if (!(await confirmDialog(type === "admin.suspend" ? t("Suspend this user?") : t("Lift the suspension?"),
      [fields.user_id], t("Confirm"), t("Keep it")))) return;
    try {
      await app.client.request(type, fields);
      await Promise.all([show(fields.user_id), loadSuspensions()]);
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  async function loadSuspensions() {
    try {
      const { suspensions } = await app.client.request("admin.suspensions", { in_force: true, limit: 100 });
      clear(inForce, suspensions.length ? table([
        { key: "user_id", label: t("User"), render: (s) => h("a", { href: `#/users/${s.user_id}` }, s.user_id) },
        { key: "reason", label: t("Reason") },
        { key: "suspended_at", label: t("Since"), render: (s) => fmt.when(s.suspended_at) },
      ], suspensions) : h("p", {}, t("None.")));
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  const ready = Promise.all([loadSuspensions(), initial ? show(initial) : null]);
  return { ready, reload: () => Promise.all([loadSuspensions(), who.value ? show(who.value.trim()) : null]) };
}
