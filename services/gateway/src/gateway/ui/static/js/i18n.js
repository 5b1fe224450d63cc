// Language: chosen by the user (Spanish by default), remembered in localStorage; every text on the pages
// comes from i18n/{es,en}.json. The API answers in the same language (Accept-Language).
const STORE = "registry.language";
export const LANGUAGES = ["es", "en"];
let catalogue = {};
let current = "es";

export function language() {
  const chosen = localStorage.getItem(STORE);
  return LANGUAGES.includes(chosen) ? chosen : "es";
}

export function setLanguage(value) {
  if (LANGUAGES.includes(value)) localStorage.setItem(STORE, value);
}

export async function loadCatalogue() {
  current = language();
  const answer = await fetch(`i18n/${current}.json`, { headers: { Accept: "application/json" } });
  catalogue = await answer.json();
  document.documentElement.lang = current;
  return catalogue;
}

/** The text for `key` with `{name}` placeholders filled from `params`; the key itself if missing. */
export function t(key, params = {}) {
  const text = catalogue[key];
  if (typeof text !== "string") return key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Texts of the static markup: data-i18n (text content) and data-i18n-<attribute> (that attribute). */
export function translatePage(root = document) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("*")) {
    for (const name of Object.keys(node.dataset)) {
      if (name.startsWith("i18n") && name !== "i18n") {
        const attribute = name.slice(4).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^-/, "");
        node.setAttribute(attribute, t(node.dataset[name]));
      }
    }
  }
}

export function locale() {
  return current === "en" ? "en-US" : "es-MX";
}

export function number(value) {
  if (value === null || value === undefined || value === "") return "—";
  return new Intl.NumberFormat(locale()).format(value);
}

export function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return new Intl.DateTimeFormat(locale(), {
    dateStyle: "medium", timeStyle: "short", timeZone: "America/Mexico_City",
  }).format(date);
}

/** A translated code (state, unit type, reason...) under `prefix`, or the code itself. */
export function term(prefix, code) {
  if (code === null || code === undefined) return "—";
  const key = `${prefix}.${code}`;
  const text = t(key);
  return text === key ? String(code) : text;
}
