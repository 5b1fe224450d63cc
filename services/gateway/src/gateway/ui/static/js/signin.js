// Sign-in: POST /api/v1/auth/token, then the page the user's roles lead to.
import { signIn } from "./api.js";
import { t } from "./i18n.js";
import { el, hasAny, OVERSIGHT, problemNode, startPage } from "./ui.js";

await startPage({ needsUser: false });
const form = document.getElementById("signin");
const message = document.getElementById("signin-message");
document.getElementById("signin-submit").disabled = false;
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    message.replaceChildren(el("p", { text: t("signin.missing") }));
    (username ? form.password : form.username).focus();
    return;
  }
  const button = document.getElementById("signin-submit");
  button.disabled = true;
  message.replaceChildren();
  try {
    const user = await signIn(username, password);
    window.location.assign(hasAny(user, OVERSIGHT) ? "dashboard.html" : "portal.html");
  } catch (error) {
    message.replaceChildren(el("div", { class: "error" }, problemNode(error)));
    form.password.value = "";
    form.password.focus();
    button.disabled = false;
  }
});
document.body.dataset.ready = "signin";
