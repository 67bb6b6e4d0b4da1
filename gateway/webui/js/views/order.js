// One order whole (admin.order): facts, the timeline, chat system events, payment, payout and
// money jobs, completion photos (thumbnails opening full size), the AI conversation and the chat
// transcript for admins; actions with a confirmation: cancel (the refund shown first), refund,
// reassign to a nearby technician or back to the pool, retry a failed money job, hide a message.
import { errorText } from "../app.js";
import { badge, clear, confirmDialog, h, table } from "../dom.js";
import { fmt, stateLabel, t } from "../i18n.js";
import { onActivity } from "./feed.js";

const FINAL = ["completed", "cancelled"];

export function orderView(app, main, [orderId]) {
  const status = h("p", { class: "status", role: "status", id: "order-status" });
  const blobs = [];

  async function photo(p) {
    const img = h("img", { alt: t("Completion photo"), class: "thumb" });
    const link = h("a", { href: "#", class: "photo", onclick: (e) => { e.preventDefault(); openFull(img.src); } }, img);
    try {
      const response = await fetch(p.url, { headers: { Authorization: `Bearer ${app.client.tokens.token}` } });
      if (!response.ok) throw new Error(String(response.status));
      const url = URL.createObjectURL(await response.blob());
      blobs.push(url);
      img.src = url;
    } catch {
      link.replaceChildren(t("photo unavailable"));
    }
    return link;
  }

  function openFull(src) {
    const dialog = h("dialog", { class: "full", "aria-label": t("Completion photo") },
      h("form", { method: "dialog" }, h("button", { type: "submit" }, t("Close"))),
      h("img", { src, alt: t("Completion photo") }));
    dialog.addEventListener("close", () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
  }

  async function act(fn) {
    try {
      await fn();
      await load();
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  async function cancel(order) {
    const { terms } = await app.client.request("admin.cancel.preview", { order_id: order.id });
    const lines = [
      t("Refund to the customer: {amount}", { amount: fmt.money(terms.refund_cents, terms.currency) }),
      t("Kept as cancellation fee: {amount}", { amount: fmt.money(terms.fee_cents, terms.currency) }),
      t("Authorization released: {amount}", { amount: fmt.money(terms.released_cents, terms.currency) }),
    ];
    if (await confirmDialog(t("Cancel this order?"), lines, t("Cancel the order"), t("Keep it"))) {
      await app.client.request("admin.cancel", { order_id: order.id, reason: "back office" });
      status.textContent = t("Cancelled; refund {amount}.", { amount: fmt.money(terms.refund_cents, terms.currency) });
    }
  }

  async function refund(file) {
    const left = file.payment.captured_cents - file.payment.refunded_cents;
    if (await confirmDialog(t("Refund this order?"), [t("Refund {amount} in full.", {
      amount: fmt.money(left, file.payment.currency) })], t("Refund"), t("Keep it"))) {
      await app.client.request("payment.refund", { order_id: file.order.id });
    }
  }

  async function reassign(order, target) {
    const { technicians } = await app.client.request("admin.reassign.candidates", { order_id: order.id });
    const picker = h("select", { id: "candidate", "aria-label": t("Technician") },
      h("option", { value: "" }, t("Back to the pool")),
      technicians.map((c) => h("option", { value: c.technician_id },
        `${c.technician_id.slice(0, 8)} · ${fmt.number(Math.round(c.distance_mi * 10) / 10)} mi`
        + (c.fits ? "" : ` · ${t("filters exclude")}`) + (c.declined ? ` · ${t("declined")}` : ""))));
    const go = h("button", { type: "button", onclick: () => act(async () => {
      const technician = picker.value || null;
      const label = technician ? technician.slice(0, 8) : t("Back to the pool");
      if (await confirmDialog(t("Reassign this order?"), [label], t("Reassign"), t("Keep it"))) {
        await app.client.request("admin.reassign", { order_id: order.id, technician_id: technician });
      }
    }) }, t("Reassign"));
    clear(target, h("label", {}, t("Technician"), picker), go);
  }

  async function hide(m) {
    if (await confirmDialog(t("Hide this message?"), [m.text || ""], t("Hide"), t("Keep it"))) {
      await app.client.request("admin.message.hide", { order_id: m.order_id, seq: m.seq, reason: "back office" });
    }
  }

  async function draw(file) {
    const o = file.order;
    const admin = app.role === "admin";
    const reassignBox = h("div", { class: "reassign" });
    const actions = h("div", { class: "actions" },
      !FINAL.includes(o.state) && admin ? h("button", { type: "button", id: "cancel", class: "danger",
        onclick: () => act(() => cancel(o)) }, t("Cancel with refund…")) : null,
      admin && file.payment && file.payment.captured_cents > file.payment.refunded_cents && o.state === "completed"
        ? h("button", { type: "button", id: "refund", onclick: () => act(() => refund(file)) }, t("Refund…")) : null,
      admin && ["open", "accepted", "en_route"].includes(o.state)
        ? h("button", { type: "button", id: "reassign", onclick: () => reassign(o, reassignBox).catch((e) => {
          status.textContent = errorText(e);
        }) }, t("Reassign…")) : null,
      reassignBox);
    const facts = h("dl", { class: "facts" },
      h("dt", {}, t("State")), h("dd", { id: "state" }, badge(o.state, stateLabel(o.state)), " ", fmt.ago(file.state_since)),
      h("dt", {}, t("Brand")), h("dd", {}, `${o.brand} · ${o.sku} · ${t(o.service_type)}`),
      h("dt", {}, t("Price")), h("dd", {}, fmt.money(o.price_cents, o.currency)),
      h("dt", {}, t("Created")), h("dd", {}, fmt.when(o.created_at)),
      h("dt", {}, t("Technician")), h("dd", {}, o.technician_id || "—"),
      h("dt", {}, t("Description")), h("dd", {}, o.description),
      o.address ? [h("dt", {}, t("Address")), h("dd", {}, o.address)] : null,
      h("dt", {}, t("Payout")), h("dd", {}, t(file.payout_state)));
    const timeline = table([
      { key: "at", label: t("When"), render: (e) => fmt.when(e.at) },
      { key: "from_state", label: t("From"), render: (e) => (e.from_state ? stateLabel(e.from_state) : "—") },
      { key: "to_state", label: t("To"), render: (e) => badge(e.to_state, stateLabel(e.to_state)) },
      { key: "actor_role", label: t("By"), render: (e) => `${t(e.actor_role)} ${e.actor_id.slice(0, 8)}` },
    ], file.timeline);
    timeline.id = "timeline";
    const events = h("ul", { class: "events" }, file.chat_events.map((e) =>
      h("li", {}, h("time", {}, fmt.when(e.sent_at)), " ", e.text || e.code || "")));
    const payment = file.payment ? h("dl", { class: "facts", id: "payment" },
      h("dt", {}, t("Payment")), h("dd", {}, t(o.payment_state || "none"), " · ", t(file.payment.policy)),
      h("dt", {}, t("Amount")), h("dd", {}, fmt.money(file.payment.amount_cents, file.payment.currency)),
      h("dt", {}, t("Captured")), h("dd", {}, fmt.money(file.payment.captured_cents, file.payment.currency)),
      h("dt", {}, t("Refunded")), h("dd", { id: "refunded" }, fmt.money(file.payment.refunded_cents, file.payment.currency)),
      file.payment.last_error ? [h("dt", {}, t("Last error")), h("dd", {}, file.payment.last_error)] : null,
    ) : h("p", {}, t("No payment was started."));
    const transfer = file.transfer ? h("p", {}, t("Transferred {amount} to {who}, {reversed} reversed.", {
      amount: fmt.money(file.transfer.amount_cents, file.transfer.currency), who: file.transfer.technician_id.slice(0, 8),
      reversed: fmt.money(file.transfer.reversed_cents, file.transfer.currency) })) : null;
    const jobs = file.money_jobs.length ? table([
      { key: "kind", label: t("Job"), render: (j) => t(j.kind) },
      { key: "state", label: t("State"), render: (j) => badge(j.state, t(j.state)) },
      { key: "amount_cents", label: t("Amount"), render: (j) => fmt.money(j.amount_cents, o.currency) },
      { key: "attempts", label: t("Attempts"), render: (j) => fmt.number(j.attempts) },
      { key: "last_error", label: t("Last error"), render: (j) => j.last_error || "" },
      { key: "due_at", label: t("Due"), render: (j) => fmt.when(j.due_at) },
      { key: "retry", label: "", render: (j) => (j.state === "failed" && admin ? h("button", { type: "button",
        onclick: () => act(async () => {
          if (await confirmDialog(t("Retry this money job?"), [t(j.kind)], t("Retry"), t("Keep it"))) {
            await app.client.request("admin.job.retry", { job_id: j.id });
          }
        }) }, t("Retry")) : "") },
    ], file.money_jobs) : h("p", {}, t("No money jobs."));
    const photos = h("div", { class: "photos", id: "photos" }, await Promise.all(file.completion_photos.map(photo)));
    const transcript = file.transcript ? h("ol", { class: "transcript", id: "transcript" }, file.transcript.map((m) =>
      h("li", { class: m.hidden ? "hidden" : "" }, h("time", {}, fmt.when(m.sent_at)), " ",
        h("strong", {}, `${t(m.sender_role)} ${m.sender_id.slice(0, 8)}`), ": ", m.text || "",
        m.hidden ? ` (${t("hidden")})` : "",
        m.kind === "text" && !m.hidden ? h("button", { type: "button", class: "small",
          onclick: () => act(() => hide(m)) }, t("Hide")) : null))) : null;
    const ai = file.ai ? h("section", { id: "ai" }, h("h2", {}, t("AI conversation")),
      h("p", {}, `${t(file.ai.state)} · ${file.ai.engine || ""} · ${fmt.number(file.ai.prompt_tokens
        + file.ai.completion_tokens)} tokens`),
      h("ol", {}, (file.ai.turns || []).map((turn) => h("li", {}, h("p", {}, h("strong", {}, t("Customer")), ": ", turn.text),
        turn.answer ? h("pre", { class: "answer" }, JSON.stringify(turn.answer, null, 2)) : null)))) : null;
    clear(main,
      h("p", {}, h("a", { href: "#/orders" }, "← ", t("Orders"))),
      h("h1", {}, t("Order {id}", { id: o.id.slice(0, 8) })), status, actions, facts,
      h("h2", {}, t("Timeline")), timeline,
      h("h2", {}, t("Chat events")), events,
      h("h2", {}, t("Money")), payment, transfer, jobs,
      h("h2", {}, t("Completion photos")), file.completion_photos.length ? photos : h("p", {}, t("No photos.")),
      ai,
      transcript ? [h("h2", {}, t("Chat transcript")), h("p", { class: "note" }, t("Reading it is written to the audit log.")),
        transcript] : null);
  }

  async function load() {
    try {
      const file = await app.client.request("admin.order", { order_id: orderId });
      if (file.ai && file.ai.id && !(file.ai.turns || []).length) {
        file.ai = (await app.client.request("ai.get", { conversation_id: file.ai.id })).conversation;
      }
      await draw(file);
    } catch (error) {
      if (error.code === "not_found" || error.code === "bad_request") {
        clear(main, h("h1", {}, t("Order not found")), h("p", { class: "error", id: "not-found" },
          t("No such order, or it is not one of your brands'.")), h("a", { href: "#/orders" }, t("Orders")));
      } else {
        status.textContent = errorText(error);
        if (!main.contains(status)) main.append(status);
      }
    }
  }

  const stop = onActivity(app, (a) => { if (a.order_id === orderId) load(); });
  return {
    ready: load(), reload: load,
    stop: () => { stop(); for (const url of blobs) URL.revokeObjectURL(url); },
  };
}
