// The back office's shell: sign-in, navigation between views (the URL's hash names the view, so
// links and the back button work), the live activity panel, and the connection's state.
import { Client, ProtocolError } from "./client.js";
import { clear, h } from "./dom.js";
import { lang, t } from "./i18n.js";
import { auditsView } from "./views/audits.js";
import { boardView } from "./views/board.js";
import { catalogView } from "./views/catalog.js";
import { feedPanel } from "./views/feed.js";
import { mapView } from "./views/map.js";
import { orderView } from "./views/order.js";
import { summaryView } from "./views/summary.js";
import { usersView } from "./views/users.js";

const VIEWS = [
  { path: "map", label: "Live map", view: mapView },
  { path: "orders", label: "Orders", view: boardView },
  { path: "summary", label: "Summaries", view: summaryView },
  { path: "audits", label: "Audits", view: auditsView, admin: true },
  { path: "catalog", label: "Catalog", view: catalogView },
  { path: "users", label: "Users", view: usersView, admin: true },
];

const root = document.getElementById("app");
const config = await (await fetch("config.json", { cache: "no-store" })).json();
const client = new Client(config.ws_url, lang);
const app = { client, config, role: null, userId: null, go, current: null };

export function errorText(error) {
  if (error instanceof ProtocolError) return error.message;
  return t("The gateway cannot be reached. Trying again…");
}

function go(path) {
  if (location.hash !== `#/${path}`) location.hash = `#/${path}`;
  else route();
}

function signInPage(message) {
  const email = h("input", { type: "email", name: "email", id: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", id: "password",
    autocomplete: "current-password", required: true });
  const status = h("p", { class: "error", role: "alert" }, message || "");
  const form = h("form", { class: "signin", onsubmit: async (event) => {
    event.preventDefault();
    status.textContent = "";
    try {
      const session = await client.signIn(email.value.trim(), password.value);
      if (!["admin", "merchant"].includes(session.role)) {
        await client.signOut();
        status.textContent = t("This account is not a staff or merchant account.");
        return;
      }
      started(session);
    } catch (error) {
      // auth.login answers before the session has a language: its code is translated here
      status.textContent = error instanceof ProtocolError && error.code === "unauthorized"
        ? t("Wrong e-mail or password.") : errorText(error);
    }
  } },
  h("h1", {}, t("Dispatch back office")),
  h("label", { for: "email" }, t("E-mail")), email,
  h("label", { for: "password" }, t("Password")), password,
  h("button", { type: "submit" }, t("Sign in")), status);
  clear(root, form);
  email.focus();
}

let shell = null;

function started(session) {
  app.role = session.role;
  app.userId = session.user_id;
  const nav = h("nav", { "aria-label": t("Back office") },
    VIEWS.filter((v) => !v.admin || app.role === "admin").map((v) =>
      h("a", { href: `#/${v.path}`, dataset: { view: v.path } }, t(v.label))));
  const online = h("span", { class: "online", id: "online" }, t("online"));
  const who = h("span", { class: "who" }, `${t(session.role)} · ${session.user_id.slice(0, 8)}`);
  const out = h("button", { type: "button", id: "signout", onclick: async () => {
    await client.signOut().catch(() => {});
    shell = null;
    signInPage();
  } }, t("Sign out"));
  const main = h("main", { id: "view", tabindex: "-1" });
  const feed = feedPanel(app);
  shell = { main, nav, feed };
  clear(root, h("header", {}, h("strong", {}, t("Dispatch back office")), nav, who, online, out),
    h("div", { class: "layout" }, main, feed.el));
  client.addEventListener("connection", (e) => {
    online.textContent = e.detail.online ? t("online") : t("offline, reconnecting…");
    online.classList.toggle("down", !e.detail.online);
  });
  if (!location.hash || location.hash === "#/") location.hash = "#/orders";
  else route();
}

async function route() {
  if (!shell) return;
  const [path, ...rest] = location.hash.replace(/^#\//, "").split("/");
  const entry = path === "order" ? { path: "orders", view: orderView }
    : VIEWS.find((v) => v.path === path && (!v.admin || app.role === "admin")) || VIEWS[1];
  for (const link of shell.nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", link.dataset.view === entry.path);
  }
  if (app.current && app.current.stop) app.current.stop();
  clear(shell.main);
  app.current = entry.view(app, shell.main, rest.map(decodeURIComponent));
  await app.current.ready;
}

window.addEventListener("hashchange", route);
client.addEventListener("signedout", (e) => {
  shell = null;
  signInPage(e.detail.reason === "suspended" ? t("This account is suspended.") : t("Please sign in again."));
});
client.addEventListener("resumed", () => {
  if (shell) shell.feed.watch();
  if (app.current && app.current.reload) app.current.reload();
});
signInPage();
