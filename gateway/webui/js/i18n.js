// The page's language follows the browser (en, es, zh-Hans); dates, money and numbers go through
// Intl. The catalogs are keyed by the English text, like the gateway's gettext catalogs.
import { es } from "./locales/es.js";
import { zhHans } from "./locales/zh-Hans.js";

const CATALOGS = { es, "zh-Hans": zhHans };

export function pickLanguage(wanted = navigator.languages || [navigator.language]) {
  for (const tag of wanted) {
    const lower = tag.toLowerCase();
    if (lower.startsWith("es")) return "es";
    if (lower.startsWith("zh")) return "zh-Hans";
    if (lower.startsWith("en")) return "en";
  }
  return "en";
}

export const lang = pickLanguage();
document.documentElement.lang = lang;
const catalog = CATALOGS[lang] || {};

export function t(text, vars = {}) {
  const found = catalog[text] || text;
  return found.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

const dateTime = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "medium" });
const dateOnly = new Intl.DateTimeFormat(lang, { dateStyle: "medium" });
const monthDay = new Intl.DateTimeFormat(lang, { month: "short", day: "numeric" });
const numbers = new Intl.NumberFormat(lang);
const relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });

export const fmt = {
  when: (iso) => (iso ? dateTime.format(new Date(iso)) : ""),
  day: (iso) => (iso ? dateOnly.format(new Date(iso)) : ""),
  monthDay: (date) => monthDay.format(date),
  number: (n) => (n === null || n === undefined ? "" : numbers.format(n)),
  money: (cents, currency = "usd") => (cents === null || cents === undefined ? ""
    : new Intl.NumberFormat(lang, { style: "currency", currency: currency.toUpperCase() }).format(cents / 100)),
  ago: (iso) => {
    const s = Math.round((Date.parse(iso) - Date.now()) / 1000);
    if (Math.abs(s) < 60) return relative.format(s, "second");
    if (Math.abs(s) < 3600) return relative.format(Math.round(s / 60), "minute");
    return relative.format(Math.round(s / 3600), "hour");
  },
  seconds: (s) => (s === null || s === undefined ? "" : numbers.format(Math.round(s / 6) / 10) + " min"),
};

export const STATES = ["awaiting_payment", "open", "accepted", "en_route", "in_service", "completed", "cancelled"];
const STATE_LABELS = {
  awaiting_payment: "awaiting payment", open: "open", accepted: "accepted", en_route: "en route",
  in_service: "in service", completed: "completed", cancelled: "cancelled",
};
export const stateLabel = (state) => t(STATE_LABELS[state] || state);
