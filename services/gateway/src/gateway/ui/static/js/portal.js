// The participant portal: my accounts and units, transfers to accept, my transfers, a new transfer,
// surrender, my compliance, my notifications and webhooks. Everything shown comes from the API with the
// user's own token: the API decides what a participant may see or do, account by account.
import { api, get, post } from "./api.js";
import { intField, wireForm } from "./forms.js";
import { number, t, term, when } from "./i18n.js";
import {
  actionButton, el, empty, fill, hasAny, notThere, OVERSIGHT, problemNode, programmeNow, showStatus, startPage, table,
  timeLeft,
} from "./ui.js";

const user = await startPage({ allow: (u) => !hasAny(u, OVERSIGHT) });
const FINAL = ["completed", "reversed", "failed"];
let accounts = [];
const periodsSeen = new Set();

function optional(loader) {
  return async () => {
    try {
      return await loader();
    } catch (error) {
      if (notThere(error)) return null;
      throw error;
    }
  };
}
const generation = {};

/** A fresh turn for section `name`: a later reload of the same section makes earlier ones stop adding. */
function turn(name) {
  generation[name] = (generation[name] || 0) + 1;
  const mineTurn = generation[name];
  return () => generation[name] === mineTurn;
}

function accountLabel(account) {
  return `${account.id} — ${account.name} (${term("kind", account.kind)})`;
}

function mine(id) {
  return accounts.some((a) => a.id === id);
}

function options(select, list) {
  select.replaceChildren(...list.map((a) => el("option", { value: a.id, text: accountLabel(a) })));
}

// Holdings ------------------------------------------------------------------------------------------
function blocksList(entry, id) {
  return el("ul", { id, class: "blocks", hidden: true },
    entry.blocks.map((b) => el("li", {},
      t("portal.block", { start: b.start, end: b.end, quantity: number(b.quantity), origin: term("origin", b.origin) }))));
}

function holdingsCard(account, holdings) {
  const rows = holdings.by_type_and_vintage.map((entry, i) => {
    const listId = `blocks-${account.id}-${i}`;
    const list = blocksList(entry, listId);
    const toggle = el("button", { type: "button", class: "link", "aria-expanded": "false", "aria-controls": listId,
                                  text: t("portal.show_blocks", { count: entry.blocks.length }) });
    toggle.addEventListener("click", () => {
      const open = toggle.getAttribute("aria-expanded") === "true";
      toggle.setAttribute("aria-expanded", String(!open));
      toggle.textContent = t(open ? "portal.show_blocks" : "portal.hide_blocks", { count: entry.blocks.length });
      list.hidden = open;
    });
    return [term("unit", entry.unit_type), String(entry.vintage),
            el("span", { class: "num", "data-testid": `qty-${account.id}-${entry.unit_type}-${entry.vintage}`,
                         text: number(entry.quantity) }),
            el("div", {}, toggle, list)];
  });
  return el("article", { class: "card", "aria-labelledby": `acct-${account.id}` },
    el("h3", { id: `acct-${account.id}`, text: accountLabel(account) }),
    el("p", {}, t("portal.total"), " ",
       el("strong", { class: "num", "data-testid": `total-${account.id}`, text: number(holdings.total) }),
       " · ", t("portal.held_outgoing"), " ", el("span", { class: "num", text: number(holdings.held_outgoing) })),
    rows.length
      ? table(t("portal.holdings_caption", { account: account.id }),
              [t("col.unit_type"), t("col.vintage"), t("col.quantity"), t("col.serial_blocks")], rows)
      : empty(t("portal.no_units")));
}

async function loadHoldings() {
  const current = turn("holdings");
  const body = document.getElementById("holdings-body");
  const asked = new URLSearchParams(window.location.search).get("account");
  const shown = asked ? [accounts.find((a) => a.id === asked) || { id: asked, name: "", kind: "" }] : accounts;
  if (!shown.length) return body.replaceChildren(empty(t("portal.no_accounts")));
  body.replaceChildren();
  for (const account of shown) {
    const card = el("div", {});
    if (!current()) return;
    body.append(card);
    await fill(card, () => get(`/api/v1/accounts/${encodeURIComponent(account.id)}/holdings`),
               (holdings) => holdingsCard(account, holdings));
  }
}

// Transfers -----------------------------------------------------------------------------------------
async function untilFinal(transferId, region) {
  const deadline = Date.now() + 60000;
  let delay = 300;
  while (Date.now() < deadline) {
    const transfer = await get(`/api/v1/transfers/${transferId}`);
    if (FINAL.includes(transfer.state)) {
      showStatus(region, t("portal.transfer_final", { id: transferId.slice(0, 8), state: term("state", transfer.state) }));
      return transfer;
    }
    await new Promise((resolve) => { setTimeout(resolve, delay); });
    delay = Math.min(delay * 2, 2000);
  }
  return null;
}

async function act(transfer, action, region) {
  const answer = await post(`/api/v1/transfers/${transfer.id}/${action}`);
  showStatus(region, t(`portal.done_${action}`, { id: transfer.id.slice(0, 8), state: term("state", answer.state) }));
  await Promise.all([loadIncoming(), loadTransfers()]);
  await untilFinal(transfer.id, region);
  await Promise.all([loadIncoming(), loadTransfers(), loadHoldings()]);
}

function describe(transfer) {
  return t("portal.transfer_summary", {
    quantity: number(transfer.quantity), unit: term("unit", transfer.unit_type), from: transfer.sender_account_id,
  });
}

async function loadIncoming() {
  const region = document.getElementById("incoming-message");
  await fill(document.getElementById("incoming-body"),
    async () => ({ page: await get("/api/v1/transfers", { state: "awaiting_acceptance", direction: "incoming",
                                                          limit: 200 }),
                   now: await programmeNow() }),
    ({ page, now }) => {
      const waiting = page.items.filter((x) => mine(x.receiver_account_id) && x.state === "awaiting_acceptance");
      if (!waiting.length) return empty(t("portal.nothing_to_accept"));
      return table(t("portal.incoming_caption"),
        [t("col.transfer"), t("col.from"), t("col.to"), t("col.unit_type"), t("col.vintage"), t("col.quantity"),
         t("col.deadline"), t("col.time_left"), t("col.actions")],
        waiting.map((x) => [
          el("code", { text: x.id.slice(0, 8), title: x.id }), x.sender_account_id, x.receiver_account_id,
          term("unit", x.unit_type), x.vintage ? String(x.vintage) : t("common.any"), number(x.quantity),
          when(x.acceptance_deadline),
          el("span", { "data-testid": `left-${x.id}`,
                       text: x.acceptance_deadline ? (timeLeft(new Date(x.acceptance_deadline), now) || t("time.past"))
                                                   : "—" }),
          el("div", { class: "actions" },
            actionButton(t("action.accept"), () => act(x, "accept", region),
                         { region, className: "primary", describedBy: undefined }),
            actionButton(t("action.reject"), () => act(x, "reject", region), { region, className: "danger" })),
        ]).map((cells, i) => {
          const buttons = cells[8].querySelectorAll("button");
          buttons[0].setAttribute("aria-label", `${t("action.accept")}: ${describe(waiting[i])}`);
          buttons[1].setAttribute("aria-label", `${t("action.reject")}: ${describe(waiting[i])}`);
          return cells;
        }));
    });
}

async function loadTransfers() {
  const region = document.getElementById("transfers-message");
  await fill(document.getElementById("transfers-body"), () => get("/api/v1/transfers", { limit: 100 }), (page) => {
    if (!page.items.length) return empty(t("portal.no_transfers"));
    return table(t("portal.transfers_caption"),
      [t("col.transfer"), t("col.direction"), t("col.from"), t("col.to"), t("col.unit_type"), t("col.quantity"),
       t("col.state"), t("col.reason"), t("col.created"), t("col.actions")],
      page.items.map((x) => {
        const outgoing = mine(x.sender_account_id);
        const cancel = outgoing && x.state === "awaiting_acceptance"
          ? actionButton(t("action.cancel"), () => act(x, "cancel", region), { region, className: "danger" })
          : null;
        if (cancel) cancel.setAttribute("aria-label", `${t("action.cancel")}: ${describe(x)}`);
        return [el("code", { text: x.id.slice(0, 8), title: x.id }),
                t(outgoing ? "portal.outgoing" : "portal.incoming_one"), x.sender_account_id, x.receiver_account_id,
                term("unit", x.unit_type), number(x.quantity),
                el("span", { class: `state state-${x.state}`, text: term("state", x.state) }),
                x.reason ? term("reason", x.reason) : "—", when(x.created_at), cancel || "—"];
      }));
  });
}

// Surrender, compliance -----------------------------------------------------------------------------
function centrals() {
  return accounts.filter((a) => a.kind === "central");
}

async function loadSurrenders() {
  const current = turn("surrenders");
  const body = document.getElementById("surrender-body");
  if (!centrals().length) return body.replaceChildren(empty(t("portal.no_central")));
  body.replaceChildren();
  for (const account of centrals()) {
    const part = el("div", {});
    if (!current()) return;
    body.append(part);
    await fill(part, optional(() => get("/api/v1/surrenders", { central_account_id: account.id })), (page) => {
      if (page === null) return empty(t("portal.surrenders_unavailable"));
      const items = page.items || [];
      for (const s of items) if (s.period) periodsSeen.add(s.period);
      if (!items.length) return empty(t("portal.no_surrenders", { account: account.id }));
      return table(t("portal.surrenders_caption", { account: account.id }),
        [t("col.surrender"), t("col.period"), t("col.unit_type"), t("col.vintage"), t("col.quantity"), t("col.state"),
         t("col.requested_at")],
        items.map((s) => [el("code", { text: String(s.id).slice(0, 8), title: s.id }), s.period || "—",
                          term("unit", s.unit_type), s.vintage ? String(s.vintage) : t("common.any"),
                          number(s.quantity),
                          s.code ? `${term("surrender_state", s.state)} (${s.code})` : term("surrender_state", s.state),
                          when(s.requested_at || s.created_at)]));
    });
  }
}

/** Follows a surrender until the ledger has answered (bounded), then shows the outcome and the new units. */
async function surrenderOutcome(surrenderId, region) {
  const deadline = Date.now() + 60000;
  let delay = 300;
  while (Date.now() < deadline) {
    await new Promise((resolve) => { setTimeout(resolve, delay); });
    delay = Math.min(delay * 2, 2000);
    let surrender;
    try {
      surrender = await get(`/api/v1/surrenders/${surrenderId}`);
    } catch {
      continue;
    }
    if (surrender.state !== "requested") {
      const state = term("surrender_state", surrender.state);
      region.append(el("p", { class: surrender.state === "completed" ? "ok" : "", text: t("portal.surrender_final", {
        id: String(surrenderId).slice(0, 8), state: surrender.code ? `${state} (${surrender.code})` : state }) }));
      await Promise.all([loadSurrenders().then(loadCompliance), loadHoldings()]);
      return;
    }
  }
}

const COMPLIANCE_FIELDS = ["period", "status", "reason", "deadline", "emissions", "carried_in", "obligation", "counted",
                           "delivered_eligible", "to_surrender", "delivered", "shortfall", "in_central_account",
                           "in_delivery_account", "incoming_in_holds", "outgoing_in_holds"];

function factValue(k, v) {
  if (k === "status") return term("compliance_status", v);
  if (k === "reason") return v ? term("compliance_reason", v) : "—";
  if (k === "deadline") return when(v);
  if (typeof v === "number") return number(v);
  if (typeof v === "boolean") return t(v ? "common.yes" : "common.no");
  return v === null || v === undefined ? "—" : String(v);
}

function facts(record) {
  const keys = [...COMPLIANCE_FIELDS.filter((k) => k in record),
                ...Object.keys(record).filter((k) => !COMPLIANCE_FIELDS.includes(k) && record[k] !== null
                                                     && typeof record[k] !== "object" && typeof record[k] !== "boolean"
                                                     && !k.endsWith("_id") && !k.endsWith("_at"))];
  return el("dl", { class: "facts" }, keys.map((k) => [el("dt", { text: term("compliance_field", k) }),
                                                        el("dd", { text: factValue(k, record[k]) })]));
}

function projectionTable(account, projection) {
  const scenarios = [["if_nothing_more_is_surrendered", "projection.as_is"],
                     ["if_everything_eligible_is_surrendered", "projection.everything"]]
    .filter(([k]) => projection[k]);
  if (!scenarios.length) return null;
  return el("div", {},
    el("h4", { text: t("portal.projection", { period: projection.period || "—" }) }),
    facts({ deadline: projection.deadline, emissions: projection.emissions, obligation: projection.obligation,
            in_central_account: projection.in_central_account, in_delivery_account: projection.in_delivery_account,
            incoming_in_holds: projection.incoming_in_holds }),
    table(t("portal.projection_caption", { account: account.id }),
          [t("col.scenario"), t("col.counted"), t("col.shortfall"), t("col.compliance_status")],
          scenarios.map(([k, label]) => [t(label), number(projection[k].counted), number(projection[k].shortfall),
                                         term("compliance_status", projection[k].status)]),
          { className: "numbers" }));
}

// What a multi-year period's next intermediate deadline asks (the live status's `intermediate`).
function intermediateFacts(account, due) {
  return el("div", { "data-testid": `compliance-intermediate-${account.id}` },
    el("h4", { text: t("portal.intermediate", { year: String(due.year) }) }),
    facts({ deadline: due.deadline, emissions: due.emissions, obligation: due.obligation,
            delivered_eligible: due.delivered_eligible, shortfall: due.shortfall }));
}

async function loadCompliance() {
  const current = turn("compliance");
  const body = document.getElementById("compliance-body");
  if (!centrals().length) return body.replaceChildren(empty(t("portal.no_central")));
  body.replaceChildren();
  for (const account of centrals()) {
    const part = el("div", {});
    if (!current()) return;
    body.append(part);
    const base = `/api/v1/compliance/installations/${encodeURIComponent(account.id)}`;
    await fill(part, async () => {
      // The live status and the projection for the open period (when compliance answers them), then every
      // evaluated period known from this account's surrenders.
      const [status, projection] = await Promise.all([optional(() => get(`${base}/status`))(),
                                                      optional(() => get(`${base}/projection`))()]);
      const evaluated = [];
      for (const period of [...periodsSeen].sort()) {
        const report = await optional(() => get(
          `/api/v1/compliance/periods/${encodeURIComponent(period)}/installations/${encodeURIComponent(account.id)}`))();
        if (report && report.installation) evaluated.push({ period, ...report.installation });
      }
      return { status, projection, evaluated };
    }, ({ status, projection, evaluated }) => el("article", { class: "card", "aria-labelledby": `compliance-${account.id}` },
      el("h3", { id: `compliance-${account.id}`, text: accountLabel(account) }),
      status ? el("div", { "data-testid": `compliance-status-${account.id}` }, facts(status)) : null,
      status && status.intermediate ? intermediateFacts(account, status.intermediate) : null,
      projection ? projectionTable(account, projection) : null,
      evaluated.map((line) => el("div", {}, el("h4", { text: t("portal.evaluated_period", { period: line.period }) }),
                                 facts(line))),
      status || projection || evaluated.length ? null : empty(t("compliance.not_evaluated"))));
  }
}

// Notifications, webhooks ---------------------------------------------------------------------------
async function loadNotifications() {
  const body = document.getElementById("notifications-body");
  await fill(body, () => get("/api/v1/notifications", { limit: 20 }), (page) => {
    if (!page.items.length) return empty(t("portal.no_notifications"));
    return el("div", {},
      el("p", { text: t("portal.unread", { count: page.unread }) }),
      el("ul", { class: "inbox" }, page.items.map((n) => el("li", { class: n.read_at ? "read" : "unread" },
        el("details", {}, el("summary", {}, `${when(n.created_at)} — ${n.subject}`,
                                             n.read_at ? "" : ` (${t("portal.new")})`),
           el("p", { class: "pre", text: n.body })),
        n.read_at ? null : actionButton(t("action.mark_read"), async () => {
          await post(`/api/v1/notifications/${n.id}/read`);
          await loadNotifications();
        }, { region: body, className: "small" })))));
  });
}

async function loadWebhooks() {
  const body = document.getElementById("webhooks-body");
  await fill(body, () => get("/api/v1/webhook-subscriptions"), (page) => {
    if (!page.items.length) return empty(t("portal.no_webhooks"));
    return table(t("portal.webhooks_caption"),
      [t("col.url"), t("col.account"), t("col.description"), t("col.active"), t("col.created"), t("col.actions")],
      page.items.map((w) => {
        const disable = actionButton(t("action.disable"), async () => {
          await api("DELETE", `/api/v1/webhook-subscriptions/${w.id}`);
          await loadWebhooks();
        }, { region: body, className: "danger" });
        disable.setAttribute("aria-label", `${t("action.disable")}: ${w.url}`);
        return [w.url, w.account_id, w.description || "—", t(w.active ? "common.yes" : "common.no"),
                when(w.created_at), w.active && mine(w.account_id) ? disable : "—"];
      }));
  });
}

// The page ------------------------------------------------------------------------------------------
if (user) {
  const message = document.getElementById("page-message");
  try {
    accounts = (await get("/api/v1/accounts", { limit: 500 })).items;
  } catch (error) {
    message.replaceChildren(el("div", { class: "error", role: "alert" }, problemNode(error)));
  }
  const active = accounts.filter((a) => a.state === "active");
  options(document.getElementById("tr-sender"), active);
  options(document.getElementById("su-account"), active.filter((a) => a.kind === "central"));
  options(document.getElementById("wh-account"), active);

  wireForm(document.getElementById("transfer-form"), document.getElementById("transfer-form-message"), {
    build: (f) => ({ sender_account_id: f.sender_account_id.value, receiver_account_id: f.receiver_account_id.value.trim(),
                     unit_type: f.unit_type.value, quantity: intField(f.quantity), vintage: intField(f.vintage) }),
    submit: (body, key) => api("POST", "/api/v1/transfers", { body, key }),
    done: (answer) => {
      loadTransfers();
      loadHoldings();
      return t("portal.transfer_requested", { id: answer.id.slice(0, 8), state: term("state", answer.state) });
    },
  });
  wireForm(document.getElementById("surrender-form"), document.getElementById("surrender-form-message"), {
    build: (f) => ({ central_account_id: f.central_account_id.value, unit_type: f.unit_type.value,
                     quantity: intField(f.quantity), vintage: intField(f.vintage) }),
    submit: (body, key) => api("POST", "/api/v1/surrenders", { body, key }),
    done: (answer) => {
      loadSurrenders().then(loadCompliance);
      surrenderOutcome(answer.id, document.getElementById("surrender-form-message"));
      return t("portal.surrender_requested", { id: String(answer.id).slice(0, 8), state: term("surrender_state", answer.state) });
    },
  });
  wireForm(document.getElementById("webhook-form"), document.getElementById("webhook-form-message"), {
    build: (f) => ({ account_id: f.account_id.value, url: f.url.value.trim(),
                     description: f.description.value.trim() || undefined }),
    submit: (body) => post("/api/v1/webhook-subscriptions", body),
    done: (answer) => {
      loadWebhooks();
      return t("portal.webhook_created", { secret: answer.secret });
    },
  });
  await Promise.all([loadHoldings(), loadIncoming(), loadTransfers(), loadSurrenders().then(loadCompliance),
                     loadNotifications(), loadWebhooks()]);
  document.body.dataset.ready = "portal";
}
