// Forms that change something: one Idempotency-Key per intended action (kept while the user retries the
// same values, renewed when a value changes or after success), fields the API names marked invalid.
import { ApiError, newKey } from "./api.js";
import { t } from "./i18n.js";
import { el, problemNode, toSignIn } from "./ui.js";

export function intField(input) {
  const text = input.value.trim();
  if (text === "") return undefined;
  const value = Number(text);
  return Number.isInteger(value) ? value : text;  // the API refuses what is not whole, in its own words
}

function clearInvalid(form) {
  for (const node of form.querySelectorAll("[aria-invalid]")) {
    node.removeAttribute("aria-invalid");
    node.removeAttribute("aria-describedby");
  }
}

/** `build(form)` → body; `submit(body, key)` → answer; `done(answer)` → message text. */
export function wireForm(form, region, { build, submit, done }) {
  let key = null;
  form.querySelector("button[type=submit]").disabled = false;
  form.addEventListener("input", () => { key = null; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearInvalid(form);
    region.replaceChildren();
    const button = form.querySelector("button[type=submit]");
    if (button.disabled) return;
    const body = build(form);
    const missing = [...form.querySelectorAll("[required]")].filter((n) => !n.value.trim());
    if (missing.length) {
      for (const node of missing) {
        node.setAttribute("aria-invalid", "true");
        node.setAttribute("aria-describedby", region.id);
      }
      region.replaceChildren(el("div", { class: "error", role: "alert" }, el("p", { text: t("form.missing") })));
      missing[0].focus();
      return;
    }
    key = key || newKey();
    button.disabled = true;
    try {
      const answer = await submit(body, key);
      key = null;
      region.replaceChildren(el("p", { class: "ok", text: done(answer) }));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return toSignIn();
      region.replaceChildren(el("div", { class: "error", role: "alert" }, problemNode(error)));
      const fields = error instanceof ApiError && error.problem ? (error.problem.errors || []).map((e) => e.field) : [];
      let first = null;
      for (const name of fields) {
        const node = name && form.elements.namedItem(String(name).split(".")[0]);
        if (node && node.setAttribute) {
          node.setAttribute("aria-invalid", "true");
          node.setAttribute("aria-describedby", region.id);
          first = first || node;
        }
      }
      if (first) first.focus();
    } finally {
      button.disabled = false;
    }
  });
}
