// Shared page pieces: building elements safely (text only, never HTML from data), tables, error and
// status messages, the header (language, who is signed in, sign out).
import { ApiError, forget, get, signedIn } from "./api.js";
import { language, loadCatalogue, setLanguage, t, translatePage } from "./i18n.js";

export const OVERSIGHT = ["authority", "authority-readonly", "administrator"];
export const ACTING_OVERSIGHT = ["authority", "administrator"];

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A table with a caption and column headers; `rows` are arrays of cells (text or nodes). */
export function table(caption, headers, rows, { className } = {}) {
  return el("div", { class: "table-wrap" },
    el("table", { class: className },
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((c, i) =>
        i === 0 ? el("th", { scope: "row" }, c) : el("td", {}, c)))))));
}

export function empty(text) {
  return el("p", { class: "empty", text });
}

/** The problem (in the user's language, as the API wrote it) with every field it names. */
export function problemNode(error) {
  if (error instanceof ApiError && error.problem) {
    const p = error.problem;
    const lines = (p.errors || []).filter((e) => e.message && e.message !== p.detail)
      .map((e) => el("li", {}, e.field ? `${e.field}: ${e.message}` : e.message));
    return el("div", { class: "problem" },
      el("p", {}, el("strong", { text: p.title || t("error.generic") }),
        p.detail && p.detail !== p.title ? ` ${p.detail}` : ""),
      lines.length ? el("ul", {}, lines) : null,
      p.code ? el("p", { class: "code" }, `${t("error.code")}: ${p.code}`) : null);
  }
  if (error instanceof ApiError) return el("p", { text: `${t("error.generic")} (HTTP ${error.status})` });
  return el("p", { text: t("error.network") });
}

export function showProblem(region, error) {
  region.replaceChildren(problemNode(error));
}

export function showStatus(region, text) {
  region.replaceChildren(el("p", { text }));
}

/** Whether the API answered that this does not exist (yet): the route or the resource is unknown. */
export function notThere(error) {
  return error instanceof ApiError && error.status === 404;
}

/** A section's body: replaced by `render(data)` when it loads, by the problem when it does not. */
export async function fill(container, load, render) {
  container.setAttribute("aria-busy", "true");
  container.replaceChildren(el("p", { class: "loading", text: t("common.loading") }));
  try {
    const data = await load();
    container.replaceChildren(render(data));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return toSignIn();
    container.replaceChildren(el("div", { class: "error", role: "alert" }, problemNode(error)));
  } finally {
    container.removeAttribute("aria-busy");
  }
}

export function toSignIn() {
  forget();
  window.location.assign("index.html");
}

export function hasAny(user, roles) {
  return (user.roles || []).some((r) => roles.includes(r));
}

/** Loads the language, the header and the signed-in user; refuses pages the user has no business on. */
export async function startPage({ needsUser = true, allow = null } = {}) {
  await loadCatalogue();
  translatePage();
  const select = document.getElementById("language");
  if (select) {
    select.value = language();
    select.addEventListener("change", () => {
      setLanguage(select.value);
      sessionStorage.setItem("registry.focus", "language");
      window.location.reload();
    });
    if (sessionStorage.getItem("registry.focus") === "language") {
      sessionStorage.removeItem("registry.focus");
      select.focus();
    }
  }
  if (!needsUser) return null;
  if (!signedIn()) return toSignIn();
  let user;
  try {
    user = await get("/api/v1/users/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return toSignIn();
    throw error;
  }
  if (allow && !allow(user)) {
    window.location.assign(hasAny(user, OVERSIGHT) ? "dashboard.html" : "portal.html");
    return null;
  }
  const who = document.getElementById("who");
  if (who) who.textContent = t("common.signed_in_as", { name: user.display_name, user: user.username });
  const out = document.getElementById("sign-out");
  if (out) out.addEventListener("click", () => toSignIn());
  return user;
}

/** A button that runs `action` once at a time, saying what happened in `region`. */
export function actionButton(label, action, { region, className = "", describedBy } = {}) {
  const button = el("button", { type: "button", class: className, "aria-describedby": describedBy });
  button.textContent = label;
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return toSignIn();
      if (region) region.replaceChildren(el("div", { class: "error", role: "alert" }, problemNode(error)));
      button.disabled = false;
    } finally {
      button.removeAttribute("aria-busy");
    }
  });
  return button;
}

/** Time left until `deadline` from `now` (both Date), as "2 d 3 h" / "45 min", or null when past. */
export function timeLeft(deadline, now) {
  const ms = deadline.getTime() - now.getTime();
  if (!(ms > 0)) return null;
  const minutes = Math.floor(ms / 60000);
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  if (days > 0) return t("time.days_hours", { days, hours });
  if (hours > 0) return t("time.hours_minutes", { hours, minutes: minutes % 60 });
  return t("time.minutes", { minutes: Math.max(minutes, 1) });
}

/** Programme time now: deadlines run on the programme clock, which the public health report shows for
 * every process (the transfers API's is the one its deadlines use); the browser's clock otherwise. */
export async function programmeNow() {
  let report;
  try {
    report = await get("/api/v1/health");
  } catch (error) {
    report = error instanceof ApiError ? error.problem : null;  // 503 while degraded: the same report
  }
  const clock = report && report.services && report.services.transfers && report.services.transfers.api
    && report.services.transfers.api.clock;
  const at = clock && new Date(clock.programme_now);
  return at && !Number.isNaN(at.getTime()) ? at : new Date();
}

