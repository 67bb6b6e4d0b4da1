// The live map (admin.map): on-duty technicians (fading as their last position ages) and the
// orders in progress, read again when the feed reports an order event and every few seconds for
// positions. Selecting an order draws its announcement circle and marks the technicians in it.
// Without MAP_TILES_URL the map has no tile layer: points on a plain background, with a scale.
import * as L from "../../vendor/leaflet-1.9.4/leaflet-src.esm.js";
import { errorText } from "../app.js";
import { badge, clear, h } from "../dom.js";
import { fmt, stateLabel, t } from "../i18n.js";
import { onActivity } from "./feed.js";

const METERS_PER_MILE = 1609.344;
const POSITIONS_EVERY_MS = 10_000;
const STATE_COLORS = { awaiting_payment: "#8a6d00", open: "#c0392b", accepted: "#1f6feb", en_route: "#6f42c1",
  in_service: "#0e8a16" };

export function mapView(app, main) {
  const status = h("p", { class: "status", role: "status", id: "map-status" });
  const box = h("div", { id: "map", class: "map", role: "application", "aria-label": t("Live map") });
  const details = h("div", { class: "map-details", id: "map-details" });
  clear(main, h("h1", {}, t("Live map")), status, h("div", { class: "map-wrap" }, box, details));
  const map = L.map(box, { worldCopyJump: true, preferCanvas: false }).setView([39.5, -98.35], 4);
  if (app.config.map_tiles_url) {
    L.tileLayer(app.config.map_tiles_url, { maxZoom: 19, attribution: "" }).addTo(map);
  }
  L.control.scale({ imperial: true, metric: true }).addTo(map);
  const techLayer = L.layerGroup().addTo(map);
  const orderLayer = L.layerGroup().addTo(map);
  const circleLayer = L.layerGroup().addTo(map);
  let data = null;
  let selected = null;
  let fitted = false;

  function opacity(tech) {
    const age = (Date.now() - Date.parse(tech.seen_at)) / 1000;
    return Math.max(0.15, 1 - age / data.stale_after_s);
  }

  function draw() {
    techLayer.clearLayers();
    orderLayer.clearLayers();
    circleLayer.clearLayers();
    const order = selected && data.orders.find((o) => o.id === selected);
    const inCircle = new Set();
    if (order) {
      const center = L.latLng(order.lat, order.lng);
      L.circle(center, { radius: data.radius_mi * METERS_PER_MILE, color: "#c0392b", weight: 1, fillOpacity: 0.05 })
        .addTo(circleLayer);
      for (const tech of data.technicians) {
        if (center.distanceTo([tech.lat, tech.lng]) <= data.radius_mi * METERS_PER_MILE) inCircle.add(tech.id);
      }
    }
    for (const tech of data.technicians) {
      const alpha = opacity(tech);
      L.circleMarker([tech.lat, tech.lng], { radius: 6, color: inCircle.has(tech.id) ? "#e67e22" : "#1f6feb",
        opacity: alpha, fillOpacity: alpha * 0.8, className: "tech-marker" })
        .bindTooltip(`${t("Technician")} ${tech.id.slice(0, 8)} · ${fmt.ago(tech.seen_at)}`)
        .addTo(techLayer);
    }
    for (const o of data.orders) {
      L.circleMarker([o.lat, o.lng], { radius: o.id === selected ? 10 : 8, color: STATE_COLORS[o.state] || "#555",
        weight: 3, fillOpacity: 0.6, className: `order-marker order-${o.id}` })
        .bindTooltip(`${o.brand} · ${o.sku} · ${stateLabel(o.state)}`)
        .on("click", () => { selected = o.id; draw(); })
        .addTo(orderLayer);
    }
    status.textContent = t("{t} technicians on duty, {o} orders in progress", {
      t: fmt.number(data.technicians.length), o: fmt.number(data.orders.length) }) + (data.more ? ` (${t("newest shown")})` : "");
    clear(details, order ? [
      h("h2", {}, badge(order.state, stateLabel(order.state)), " ", h("a", { href: `#/order/${order.id}` }, order.id.slice(0, 8))),
      h("p", {}, `${order.brand} · ${order.sku} · ${fmt.when(order.created_at)}`),
      h("p", {}, t("{n} on-duty technicians within {mi} miles (announced to them when it opened, if on duty then):", {
        n: fmt.number(inCircle.size), mi: fmt.number(data.radius_mi) })),
      h("ul", { id: "in-circle" }, [...inCircle].map((id) => h("li", {}, id.slice(0, 8)))),
    ] : h("p", {}, t("Select an order to see its circle.")),
    h("h2", {}, t("Orders in progress")),
    h("ul", { class: "map-orders", id: "map-orders" }, data.orders.map((o) => h("li", { dataset: { order: o.id } },
      h("button", { type: "button", class: "link", onclick: () => { selected = o.id; map.panTo([o.lat, o.lng]); draw(); } },
        badge(o.state, stateLabel(o.state)), " ", `${o.brand} ${o.sku} ${o.id.slice(0, 8)}`)))));
    if (!fitted) {
      const points = [...data.orders, ...data.technicians].map((p) => [p.lat, p.lng]);
      if (points.length) {
        map.fitBounds(L.latLngBounds(points).pad(0.3), { maxZoom: 11 });
        fitted = true;
      }
    }
  }

  async function load() {
    try {
      data = await app.client.request("admin.map", {});
      draw();
    } catch (error) {
      status.textContent = errorText(error);
    }
  }

  const stopFeed = onActivity(app, (a) => { if (a.kind.startsWith("order.")) load(); });
  const timer = setInterval(load, POSITIONS_EVERY_MS);
  setTimeout(() => map.invalidateSize(), 0);
  return { ready: load(), reload: load, stop: () => { stopFeed(); clearInterval(timer); map.remove(); } };
}
