// Summaries (admin.summary) per brand and SKU over a range and granularity: charts of orders by
// state, of money, and of times to accept and to complete (uPlot), the per-brand totals as a
// table, and CSV export of every row.
import uPlot from "../../vendor/uplot-1.6.32/uPlot.esm.js";
import { errorText } from "../app.js";
import { clear, csv, download, h, table } from "../dom.js";
import { fmt, stateLabel, t } from "../i18n.js";

const DAY_MS = 86_400_000;
const COUNTED = ["total", "open", "accepted", "in_service", "completed", "cancelled"];
const COLORS = ["#333", "#c0392b", "#1f6feb", "#0e8a16", "#6f42c1", "#8a6d00", "#e67e22"];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export function summaryView(app, main) {
  const now = new Date();
  const since = h("input", { type: "date", id: "since", value: isoDay(new Date(now.getTime() - 29 * DAY_MS)) });
  const until = h("input", { type: "date", id: "until", value: isoDay(now) });
  const granularity = h("select", { id: "granularity" }, ["day", "week", "month"].map((g) =>
    h("option", { value: g }, t(g))));
  const brand = h("input", { type: "text", id: "summary-brand", placeholder: t("Every brand") });
  const bySku = h("input", { type: "checkbox", id: "by-sku" });
  const status = h("p", { class: "status", role: "status" });
  const charts = h("div", { class: "charts", id: "charts" });
  const totals = h("div", { id: "totals" });
  let last = null;
  const plots = [];
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); load(); } },
    h("label", {}, t("From"), since), h("label", {}, t("Until"), until),
    h("label", {}, t("Granularity"), granularity), h("label", {}, t("Brand"), brand),
    h("label", { class: "check" }, bySku, t("per SKU")),
    h("button", { type: "submit" }, t("Show")),
    h("button", { type: "button", id: "summary-csv", onclick: exportCsv }, t("Export CSV")));
  clear(main, h("h1", {}, t("Summaries")), form, status, charts, h("h2", {}, t("Totals")), totals);

  function perBucket(summary) {
    // every row of a bucket together (brands and SKUs), in bucket order
    const xs = summary.buckets.map((b) => Date.parse(b) / 1000);
    const index = new Map(summary.buckets.map((b, i) => [Date.parse(b), i]));
    const zero = () => xs.map(() => 0);
    const sums = { revenue: zero(), refunds: zero(), payouts: zero(), fees: zero(), accepts: zero(),
      acceptWeighted: zero(), completeWeighted: zero(), completes: zero() };
    for (const key of COUNTED) sums[key] = zero();
    for (const row of summary.rows) {
      const i = index.get(Date.parse(row.bucket));
      if (i === undefined) continue;
      for (const key of COUNTED) sums[key][i] += row.orders[key];
      sums.revenue[i] += row.revenue_cents / 100;
      sums.refunds[i] += row.refunds_cents / 100;
      sums.payouts[i] += row.payouts_cents / 100;
      sums.fees[i] += row.fees_cents / 100;
      if (row.accept_p50_s !== null) { sums.acceptWeighted[i] += row.accept_p50_s * row.accepts; sums.accepts[i] += row.accepts; }
      if (row.complete_p50_s !== null) {
        sums.completeWeighted[i] += row.complete_p50_s * row.orders.completed;
        sums.completes[i] += row.orders.completed;
      }
    }
    const minutes = (w, n) => w.map((v, i) => (n[i] ? v / n[i] / 60 : null));
    return { xs, ...sums, accept: minutes(sums.acceptWeighted, sums.accepts),
      complete: minutes(sums.completeWeighted, sums.completes) };
  }

  function chart(title, id, xs, series) {
    const width = Math.max(320, Math.min(main.clientWidth - 40, 900));
    const holder = h("figure", { class: "chart", id }, h("figcaption", {}, title));
    charts.append(holder);
    const plot = new uPlot({
      width, height: 220,
      series: [{ label: t("Date"), value: (u, v) => (v === null ? "" : fmt.day(new Date(v * 1000))) },
        ...series.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2 }))],
      axes: [{ values: (u, ticks) => ticks.map((v) => fmt.monthDay(new Date(v * 1000))), space: 60 }, {}],
      scales: { x: { time: true } },
    }, [xs, ...series.map(([, values]) => values)], holder);
    plots.push(plot);
  }

  function draw(summary) {
    for (const plot of plots.splice(0)) plot.destroy();
    clear(charts);
    const b = perBucket(summary);
    chart(t("Orders by state"), "chart-orders", b.xs, COUNTED.map((k) => [k === "total" ? t("all orders") : stateLabel(k), b[k]]));
    chart(t("Money"), "chart-money", b.xs, [[t("revenue"), b.revenue], [t("refunds"), b.refunds],
      [t("payouts"), b.payouts], [t("fees"), b.fees]]);
    chart(t("Minutes to accept and to complete (median)"), "chart-times", b.xs,
      [[t("to accept"), b.accept], [t("to complete"), b.complete]]);
    clear(totals, table([
      { key: "brand", label: t("Brand"), render: (r) => r.brand || t("all") },
      { key: "sku", label: t("SKU"), render: (r) => r.sku || "" },
      { key: "orders", label: t("Orders"), render: (r) => fmt.number(r.orders.total) },
      { key: "completed", label: stateLabel("completed"), render: (r) => fmt.number(r.orders.completed) },
      { key: "cancelled", label: stateLabel("cancelled"), render: (r) => fmt.number(r.orders.cancelled) },
      { key: "revenue", label: t("revenue"), render: (r) => fmt.money(r.revenue_cents) },
      { key: "refunds", label: t("refunds"), render: (r) => fmt.money(r.refunds_cents) },
      { key: "fees", label: t("fees"), render: (r) => fmt.money(r.fees_cents) },
      { key: "payouts", label: t("payouts"), render: (r) => fmt.money(r.payouts_cents) },
      { key: "rating", label: t("Rating"), render: (r) => (r.avg_rating === null ? "" : fmt.number(Math.round(r.avg_rating * 10) / 10)) },
      { key: "decline", label: t("Decline rate"), render: (r) => (r.decline_rate === null ? "" : `${fmt.number(Math.round(r.decline_rate * 100))} %`) },
      { key: "accept", label: t("to accept p50 / p90"), render: (r) => `${fmt.seconds(r.accept_p50_s)} / ${fmt.seconds(r.accept_p90_s)}` },
      { key: "complete", label: t("to complete p50 / p90"), render: (r) => `${fmt.seconds(r.complete_p50_s)} / ${fmt.seconds(r.complete_p90_s)}` },
    ], [...summary.totals, summary.total]));
    status.textContent = t("{n} orders", { n: fmt.number(summary.total.orders.total) });
  }

  async function load() {
    try {
      const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
      const r = { since: new Date(`${since.value}T00:00:00`).toISOString(),
        until: new Date(new Date(`${until.value}T00:00:00`).getTime() + DAY_MS).toISOString(),
        granularity: granularity.value, tz, group_by_sku: bySku.checked };
      if (brand.value.trim()) r.brand = brand.value.trim();
      last = await app.client.request("admin.summary", r);
      draw(last);
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  function exportCsv() {
    if (!last) return;
    const header = ["bucket", "brand", "sku", ...COUNTED.map((k) => `orders_${k}`), "revenue_cents", "refunds_cents",
      "fees_cents", "payouts_cents", "avg_rating", "decline_rate", "accept_p50_s", "accept_p90_s", "complete_p50_s",
      "complete_p90_s"];
    const rows = [...last.rows, ...last.totals].map((r) => [r.bucket, r.brand, r.sku, ...COUNTED.map((k) => r.orders[k]),
      r.revenue_cents, r.refunds_cents, r.fees_cents, r.payouts_cents, r.avg_rating, r.decline_rate, r.accept_p50_s,
      r.accept_p90_s, r.complete_p50_s, r.complete_p90_s]);
    download(`summary-${since.value}-${until.value}.csv`, csv(header, rows));
  }

  return { ready: load(), reload: load, stop: () => { for (const plot of plots.splice(0)) plot.destroy(); } };
}
