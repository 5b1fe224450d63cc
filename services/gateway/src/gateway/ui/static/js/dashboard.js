// The authority dashboard: supply per period with charts, transfers pending and expired, compliance per
// installation, auctions, approvals waiting for a second person (every service), dead letters, and the
// ledger audit, journal verification and transfer reconciliation. The enforcement office
// (authority-readonly) sees the same without any action button; the API refuses its changes anyway.
import { download, get, post } from "./api.js";
import { barChart } from "./charts.js";
import { number, t, term, when } from "./i18n.js";
import {
  ACTING_OVERSIGHT, actionButton, el, empty, fill, hasAny, notThere, OVERSIGHT, programmeNow, showStatus, startPage,
  table,
} from "./ui.js";

const user = await startPage({ allow: (u) => hasAny(u, OVERSIGHT) });
const canAct = user ? hasAny(user, ACTING_OVERSIGHT) : false;
const isAdministrator = user ? hasAny(user, ["administrator"]) : false;

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

function details(summary, value) {
  return el("details", {}, el("summary", { text: summary }), el("pre", { text: JSON.stringify(value, null, 2) }));
}

function short(id) {
  return el("code", { text: String(id).slice(0, 8), title: String(id) });
}

// Supply --------------------------------------------------------------------------------------------
function auctionedByVintage(auctions) {
  // Sold at auctions whose results are approved (or settled); cleared results wait for a second person.
  const sold = {};
  for (const a of auctions || []) {
    if (!a.results || !["approved", "settled"].includes(a.state)) continue;
    sold[a.vintage] = (sold[a.vintage] || 0) + (a.results.sold || 0);
  }
  return sold;
}

async function loadSupply() {
  await fill(document.getElementById("supply-body"), async () => {
    const [periods, audit, auctions] = await Promise.all([
      get("/api/v1/periods"), get("/api/v1/ledger/audit"),
      optional(() => get("/api/v1/auctions", { limit: 500 }))().catch(() => null)]);
    return { periods: periods.items, audit, auctions: auctions ? auctions.items || [] : null };
  }, ({ periods, audit, auctions }) => {
    if (!periods.length) return empty(t("dashboard.no_periods"));
    const sold = auctions === null ? null : auctionedByVintage(auctions);
    const byVintage = {};
    for (const line of audit.supply || []) {
      if (line.unit_type !== "allowance") continue;
      byVintage[line.vintage] = line;
    }
    const measures = (p) => {
      const ledger = byVintage[p.vintage] || { held: 0, in_holds: 0, cancelled: 0 };
      const reserves = Object.values(p.totals.reserves || {}).reduce((a, b) => a + b, 0);
      return [["cap", p.totals.cap], ["reserves", reserves], ["allocated", p.totals.allocated],
              ["auctioned", sold === null ? null : sold[p.vintage] || 0], ["held", ledger.held],
              ["in_holds", ledger.in_holds], ["cancelled", ledger.cancelled]];
    };
    const names = ["cap", "reserves", "allocated", "auctioned", "held", "in_holds", "cancelled"];
    const rows = periods.map((p) => [p.code, String(p.vintage), ...measures(p).map(([, v]) => number(v))]);
    const charts = el("div", { class: "charts" }, periods.map((p) => el("figure", { class: "card" },
      barChart(t("dashboard.supply_chart", { period: p.code }),
               measures(p).map(([k, v]) => ({ label: t(`supply.${k}`), value: v }))),
      el("figcaption", { text: t("dashboard.supply_chart", { period: p.code }) }))));
    return el("div", {},
      table(t("dashboard.supply_caption"), [t("col.period"), t("col.vintage"), ...names.map((k) => t(`supply.${k}`))],
            rows, { className: "numbers" }),
      sold === null ? el("p", { class: "note", text: t("dashboard.auctions_unavailable") }) : null,
      charts);
  });
}

// Transfers -----------------------------------------------------------------------------------------
function transferRows(items) {
  return items.map((x) => [short(x.id), x.sender_account_id, x.receiver_account_id, term("unit", x.unit_type),
                           number(x.quantity), term("state", x.state), when(x.acceptance_deadline),
                           when(x.updated_at)]);
}

async function loadTransfers() {
  await fill(document.getElementById("transfers-body"), async () => {
    const states = ["awaiting_sender_approval", "requested", "awaiting_acceptance", "accepted", "reversing"];
    const pages = await Promise.all(states.map((state) => get("/api/v1/transfers", { state, limit: 200 })));
    const reversed = await get("/api/v1/transfers", { state: "reversed", limit: 500 });
    return { pending: pages.flatMap((p) => p.items), expired: reversed.items.filter((x) => x.reason === "expired") };
  }, ({ pending, expired }) => {
    const headers = [t("col.transfer"), t("col.from"), t("col.to"), t("col.unit_type"), t("col.quantity"),
                     t("col.state"), t("col.deadline"), t("col.updated")];
    return el("div", {},
      el("h3", { text: t("dashboard.pending_transfers", { count: pending.length }) }),
      pending.length ? table(t("dashboard.pending_caption"), headers, transferRows(pending))
                     : empty(t("dashboard.no_pending")),
      el("h3", { text: t("dashboard.expired_transfers", { count: expired.length }) }),
      expired.length ? table(t("dashboard.expired_caption"), headers, transferRows(expired))
                     : empty(t("dashboard.no_expired")));
  });
}

// Compliance ----------------------------------------------------------------------------------------
async function loadCompliance(period) {
  const body = document.getElementById("compliance-body");
  if (!period) return body.replaceChildren(empty(t("dashboard.no_periods")));
  const path = `/api/v1/compliance/periods/${encodeURIComponent(period)}/report`;
  await fill(body, optional(() => get(path)), (report) => {
    if (report === null) return empty(t("compliance.not_evaluated"));
    const items = report.installations || [];
    const summary = report.summary || {};
    const downloads = el("div", { class: "actions" }, ["csv", "pdf"].map((format) => {
      const button = actionButton(t(`dashboard.download_${format}`),
                                  () => download(path, { format }, `compliance-${period}.${format}`),
                                  { region: body });
      return button;
    }));
    return el("div", {},
      el("p", {}, t("dashboard.compliance_summary", {
        state: term("evaluation_state", report.state), installations: number(summary.installations),
        compliant: number(summary.compliant), non_compliant: number(summary.non_compliant),
        shortfall: number(summary.shortfall) })),
      downloads,
      items.length ? table(t("dashboard.compliance_caption", { period }),
        [t("col.account"), t("col.name"), t("col.compliance_status"), t("col.reason"), t("col.obligation"),
         t("col.counted"), t("col.shortfall")],
        items.map((i) => [i.installation_account_id || i.account_id, i.name || "—",
                          el("span", { class: `status status-${i.status}`, text: term("compliance_status", i.status) }),
                          i.reason ? term("compliance_reason", i.reason) : "—",
                          number(i.obligation), number(i.counted), number(i.shortfall)]),
        { className: "numbers" }) : empty(t("compliance.no_installations")));
  });
}

// Auctions ------------------------------------------------------------------------------------------
async function loadAuctions() {
  await fill(document.getElementById("auctions-body"), optional(() => get("/api/v1/auctions", { limit: 100 })),
    (page) => {
      if (page === null) return empty(t("dashboard.auctions_unavailable"));
      const items = page.items || [];
      if (!items.length) return empty(t("dashboard.no_auctions"));
      return table(t("dashboard.auctions_caption"),
        [t("col.auction"), t("col.vintage"), t("col.quantity"), t("col.state"), t("col.bidding_closes"),
         t("col.clearing_price"), t("col.sold"), t("col.unsold"), t("col.bidders")],
        items.map((a) => {
          const r = a.results || {};
          return [a.code || short(a.id), String(a.vintage ?? "—"), number(a.quantity), term("auction_state", a.state),
                  when(a.bidding_closes_at), r.clearing_price ? `${r.clearing_price} ${a.currency || ""}` : "—",
                  number(r.sold), number(r.unsold), number(r.bidders)];
        }), { className: "numbers" });
    });
}

// Approvals -----------------------------------------------------------------------------------------
async function loadApprovals() {
  const region = document.getElementById("approvals-message");
  await fill(document.getElementById("approvals-body"), () => get("/api/v1/approvals", { state: "pending" }),
    (merged) => {
      const notes = [];
      if (merged.missing_services.length) {
        notes.push(el("p", { class: "note", text: t("dashboard.missing_services", { services: merged.missing_services.join(", ") }) }));
      }
      if (!merged.items.length) return el("div", {}, notes, empty(t("dashboard.no_approvals")));
      const headers = [t("col.request"), t("col.service"), t("col.action"), t("col.requested_by"),
                       t("col.requested_at"), t("col.expires"), t("col.payload")];
      if (canAct) headers.push(t("col.actions"));
      return el("div", {}, notes, table(t("dashboard.approvals_caption"), headers, merged.items.map((a) => {
        const label = `${term("approval_action", a.action)} (${a.service}, ${String(a.id).slice(0, 8)})`;
        const cells = [short(a.id), a.service, term("approval_action", a.action), a.requested_by, when(a.requested_at),
                       when(a.expires_at), details(t("dashboard.payload_hash", { hash: a.payload_hash.slice(0, 12) }),
                                                   a.payload)];
        if (canAct) {
          if (a.requested_by === user.id) {
            cells.push(el("span", { class: "note", text: t("dashboard.own_request") }));
          } else {
            const decide = (verb) => async () => {
              const body = verb === "approve" ? { payload_hash: a.payload_hash } : {};
              await post(`/api/v1/${a.service}/approvals/${a.id}/${verb}`, body);
              showStatus(region, t(verb === "approve" ? "dashboard.approved" : "dashboard.rejected", { what: label }));
              await loadApprovals();
            };
            const approve = actionButton(t("action.approve"), decide("approve"), { region, className: "primary" });
            approve.setAttribute("aria-label", `${t("action.approve")}: ${label}`);
            const reject = actionButton(t("action.reject"), decide("reject"), { region, className: "danger" });
            reject.setAttribute("aria-label", `${t("action.reject")}: ${label}`);
            cells.push(el("div", { class: "actions" }, approve, reject));
          }
        }
        return cells;
      })));
    });
}

// Dead letters --------------------------------------------------------------------------------------
async function loadDeadLetters() {
  const region = document.getElementById("dead-letters-message");
  await fill(document.getElementById("dead-letters-body"), () => get("/api/v1/dead-letters", { limit: 100 }),
    (merged) => {
      if (!merged.items.length) return empty(t("dashboard.no_dead_letters"));
      const headers = [t("col.id"), t("col.service"), t("col.message_type"), t("col.consumer"), t("col.attempts"),
                       t("col.error"), t("col.dead_at")];
      if (isAdministrator) headers.push(t("col.actions"));
      return table(t("dashboard.dead_letters_caption"), headers, merged.items.map((d) => {
        const cells = [String(d.id), d.service, d.message_type, d.consumer, String(d.attempts),
                       el("span", { class: "pre", text: d.error }), when(d.dead_at)];
        if (isAdministrator) {
          const replay = actionButton(t("action.replay"), async () => {
            await post(`/api/v1/${d.service}/dead-letters/${d.id}/replay`);
            showStatus(region, t("dashboard.replayed", { id: d.id }));
            await loadDeadLetters();
          }, { region });
          replay.setAttribute("aria-label", `${t("action.replay")}: ${d.service} ${d.id}`);
          cells.push(replay);
        }
        return cells;
      }));
    });
}

// Integrity -----------------------------------------------------------------------------------------
function verdict(ok) {
  return el("p", { class: ok ? "verdict ok" : "verdict bad", text: t(ok ? "dashboard.consistent" : "dashboard.inconsistent") });
}

function problemsList(caption, items) {
  if (!items.length) return null;
  return el("div", {}, el("p", { text: caption }),
    el("ul", {}, items.slice(0, 50).map((d) => el("li", {}, el("code", { text: d.code || "" }), " ",
                                                   d.detail || JSON.stringify(d)))));
}

async function loadIntegrity() {
  await Promise.all([
    fill(document.getElementById("audit-body"), () => get("/api/v1/ledger/audit"), (audit) => el("div", {},
      verdict(audit.ok),
      table(t("dashboard.audit_caption"), [t("col.unit_type"), t("col.vintage"), t("supply.issued"), t("supply.held"),
                                           t("supply.in_holds"), t("supply.cancelled")],
            (audit.supply || []).map((s) => [term("unit", s.unit_type), String(s.vintage), number(s.issued),
                                             number(s.held), number(s.in_holds), number(s.cancelled)]),
            { className: "numbers" }),
      problemsList(t("dashboard.discrepancies"), audit.discrepancies || []))),
    fill(document.getElementById("journal-body"), () => get("/api/v1/ledger/journal/verify"), (v) => el("div", {},
      verdict(v.ok),
      el("dl", { class: "facts" },
        el("dt", { text: t("journal.sealed") }), el("dd", { text: number(v.sealed) }),
        el("dt", { text: t("journal.unsealed") }), el("dd", { text: number(v.unsealed) }),
        el("dt", { text: t("journal.checkpoints") }), el("dd", { text: number(v.checkpoints_checked) }),
        el("dt", { text: t("journal.head") }), el("dd", {}, v.head ? el("code", { text: v.head.chain_hash.slice(0, 16) }) : "—")),
      problemsList(t("dashboard.discrepancies"), v.discrepancies || []),
      problemsList(t("dashboard.warnings"), v.warnings || []))),
    fill(document.getElementById("reconciliation-body"), () => get("/api/v1/transfers/reconciliation"), (r) => el("div", {},
      verdict(r.ok),
      el("dl", { class: "facts" },
        el("dt", { text: t("reconciliation.transfers") }), el("dd", { text: number(r.transfers) }),
        el("dt", { text: t("reconciliation.final") }), el("dd", { text: number(r.final) }),
        el("dt", { text: t("reconciliation.outside") }), el("dd", { text: number(r.holds_outside_transfers) })),
      problemsList(t("dashboard.discrepancies"), (r.problems || []).map((p) => (typeof p === "object" ? p : { detail: String(p) }))))),
  ]);
}

// The page ------------------------------------------------------------------------------------------
if (user) {
  document.getElementById("read-only-note").hidden = canAct;
  document.getElementById("integrity-refresh").addEventListener("click", () => loadIntegrity());
  const periodSelect = document.getElementById("compliance-period");
  let periods = [];
  try {
    periods = (await get("/api/v1/periods")).items;
  } catch {
    periods = [];
  }
  periodSelect.replaceChildren(...periods.map((p) => el("option", { value: p.code, text: `${p.code} (${p.vintage})` })));
  if (periods.length) {
    // The period whose surrender deadline passed last (the one evaluated most recently), else the first.
    const now = await programmeNow();
    const due = periods.filter((p) => new Date(p.surrender_deadline_at) <= now)
      .sort((a, b) => new Date(a.surrender_deadline_at) - new Date(b.surrender_deadline_at));
    periodSelect.value = (due.length ? due[due.length - 1] : periods[0]).code;
  }
  periodSelect.addEventListener("change", () => loadCompliance(periodSelect.value));
  await Promise.all([loadSupply(), loadTransfers(), loadCompliance(periodSelect.value), loadAuctions(),
                     loadApprovals(), loadDeadLetters(), loadIntegrity()]);
  document.body.dataset.ready = "dashboard";
}
