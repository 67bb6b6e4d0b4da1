// Audits (admins): the latest run's anomalies grouped by kind, each with its evidence and a link
// to its order; run an audit now.
import { errorText } from "../app.js";
import { clear, h } from "../dom.js";
import { fmt, t } from "../i18n.js";

function kindLabel(kind) {
  return ({
    transfer_missing: t("Completed and captured, no transfer"),
    transfer_without_capture: t("Transfer without a captured payment"),
    transfer_amount_mismatch: t("Transfer amount is not the price less the fee"),
    refund_not_reversed: t("Refund not reflected in a reversal"),
    authorization_expiring: t("Authorization expires before its capture"),
    money_job_failed: t("Money job failed"), money_job_stuck: t("Money job stuck"),
    stripe_event_unapplied: t("Stripe event never applied"), order_stuck: t("Order stuck in its state"),
  })[kind] || kind;
}

export function auditsView(app, main) {
  const status = h("p", { class: "status", role: "status" });
  const body = h("div", { id: "audit" });
  const run = h("button", { type: "button", id: "run-audit", onclick: async () => {
    run.disabled = true;
    status.textContent = t("Auditing…");
    try {
      draw(await app.client.request("admin.audit", { limit: 500 }, 120_000));
    } catch (error) {
      status.textContent = errorText(error);
    } finally {
      run.disabled = false;
    }
  } }, t("Run an audit now"));
  clear(main, h("h1", {}, t("Audits")), run, status, body);

  function evidence(value) {
    return h("dl", { class: "evidence" }, Object.entries(value).map(([k, v]) => [h("dt", {}, k),
      h("dd", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))]));
  }

  function draw(audits) {
    const r = audits.run;
    if (!r) {
      clear(body, h("p", {}, t("No audit has run yet.")));
      status.textContent = "";
      return;
    }
    const groups = new Map();
    for (const a of audits.anomalies) {
      if (!groups.has(a.kind)) groups.set(a.kind, []);
      groups.get(a.kind).push(a);
    }
    status.textContent = t("Run {id} of {when}: {n} anomalies", { id: r.id, when: fmt.when(r.started_at),
      n: fmt.number(Object.values(r.counts).reduce((s, n) => s + n, 0)) }) + (r.error ? ` (${r.error})` : "");
    clear(body, groups.size ? [...groups].map(([kind, anomalies]) => h("section", { class: "anomalies", dataset: { kind } },
      h("h2", {}, `${kindLabel(kind)} (${fmt.number(r.counts[kind] ?? anomalies.length)})`),
      h("ul", {}, anomalies.map((a) => h("li", { dataset: { order: a.order_id || "" } },
        a.order_id ? h("a", { href: `#/order/${a.order_id}` }, t("order {id}", { id: a.order_id.slice(0, 8) })) : "",
        a.brand ? ` · ${a.brand}` : "", a.new ? ` · ${t("new")}` : ` · ${t("first seen")} ${fmt.when(a.first_seen_at)}`,
        evidence(a.evidence))))))
      : h("p", {}, t("No anomalies.")));
  }

  async function load() {
    try {
      const { runs } = await app.client.request("admin.audits", { limit: 1 });
      if (!runs.length) return draw({ run: null, anomalies: [] });
      draw(await app.client.request("admin.audits", { run_id: runs[0].id, limit: 500 }));
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  return { ready: load(), reload: load };
}
