// The dashboard's account pages: API keys and usage (balance, ledger, a chart of spend).
// Loaded after app.js, whose helpers (h, api, render, action, say, …) it uses.
"use strict";

// ---- API keys ------------------------------------------------------------------------

async function keysPage() {
  const me = await api("GET", "/api/v1/users/me");
  const name = h("input", { type: "text", id: "key-name", name: "name", maxlength: 100 });
  const shown = h("div", { id: "new-key", "aria-live": "polite" });
  render("API keys",
    h("p", { class: "muted" }, me.email || me.name),
    h("form", { class: "inline", onsubmit: action(async () => {
      const made = await api("POST", "/api/v1/users/me/api-keys", { name: name.value || null });
      await keysPage();
      document.getElementById("new-key").replaceChildren(h("p", {}, "Copy it now: it is shown only once."),
        h("div", { class: "secret", id: "new-key-secret" }, made.api_key.key));
    }) }, h("label", { for: "key-name" }, "Name", name), h("button", { class: "primary", type: "submit" }, "Create key")),
    shown,
    h("div", { class: "scroll" }, h("table", { id: "keys" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Key"), h("th", {}, "Created"), h("th", {}, "Last used"), h("th", {}, ""))),
      h("tbody", {}, me.api_keys.map((k) => h("tr", { "data-key-id": k.key_id },
        h("td", {}, k.name || "—"), h("td", {}, h("code", {}, k.key)), h("td", {}, when(k.created_at)),
        h("td", {}, when(k.last_used_at)),
        h("td", {}, k.is_active ? h("button", { class: "danger", "aria-label": "Revoke " + (k.name || k.key_id),
          onclick: action(async () => {
            await api("DELETE", "/api/v1/users/me/api-keys", { key_id: k.key_id });
            say("Key revoked"); await keysPage();
          }) }, "Revoke") : "revoked")))))));
}

// ---- usage ---------------------------------------------------------------------------

async function usagePage() {
  const [usage, pricing] = await Promise.all([api("GET", "/api/v1/billing/usage?limit=100"), api("GET", "/api/v1/billing/pricing")]);
  render("Usage",
    h("p", {}, `Balance ${cents(usage.current_balance_cents)} · deposited ${cents(usage.total_deposits_cents)} · used ${cents(usage.total_usage_cents)}`),
    depositForm(pricing.min_deposit_cents),
    h("h2", {}, "Spend and session minutes per day"), usageChart(usage.transactions),
    h("h2", {}, "Ledger"),
    h("div", { class: "scroll" }, h("table", { id: "ledger" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Kind"), h("th", {}, "Amount"), h("th", {}, "Description"), h("th", { class: "hide-narrow" }, "Minutes"))),
      h("tbody", {}, usage.transactions.map((t) => h("tr", {}, h("td", {}, when(t.created_at)), h("td", {}, t.type),
        h("td", {}, cents(t.amount_cents)), h("td", {}, t.description),
        h("td", { class: "hide-narrow" }, t.duration_minutes === null || t.duration_minutes === undefined ? "" : t.duration_minutes.toFixed(1))))))));
}

// Stripe Checkout's largest USD amount; the server's minimum comes from /billing/pricing.
const MAX_DEPOSIT_CENTS = 99999999;

// A deposit opens a Stripe Checkout; the balance is credited when Stripe's webhook says
// it was paid, not here. A server without Stripe answers 503, shown as is.
function depositForm(minCents) {
  const amount = h("input", { type: "number", id: "deposit-amount", name: "amount", required: true,
    min: cents(minCents), max: cents(MAX_DEPOSIT_CENTS), step: "0.01", inputmode: "decimal", value: cents(minCents) });
  const outcome = h("div", { id: "deposit-outcome", "aria-live": "polite" });
  return h("section", { "aria-labelledby": "deposit-title" },
    h("h2", { id: "deposit-title" }, "Deposit"),
    h("form", { class: "inline", id: "deposit-form", onsubmit: action(async () => {
      const amountCents = Math.round(Number(amount.value) * 100);
      if (!Number.isFinite(amountCents) || amountCents < minCents || amountCents > MAX_DEPOSIT_CENTS) {
        outcome.replaceChildren(h("p", { class: "error", role: "alert" },
          `Enter between $${cents(minCents)} and $${cents(MAX_DEPOSIT_CENTS)}.`));
        return;
      }
      try {
        const made = await api("POST", "/api/v1/billing/deposit", { amount_cents: amountCents, currency: "usd" });
        outcome.replaceChildren(h("p", {}, `Pay $${cents(made.amount_cents)} at Stripe: `,
          h("a", { id: "deposit-checkout", href: made.checkout_url, rel: "noopener noreferrer" }, "Continue to checkout"),
          ". Your balance is credited when Stripe confirms the payment (its webhook), not before."));
      } catch (e) {
        outcome.replaceChildren(h("p", { class: "error", id: "deposit-error", role: "alert" }, e.message));
      }
    }) }, h("label", { for: "deposit-amount" }, "Amount (USD)", amount),
    h("button", { class: "primary", type: "submit" }, "Deposit")),
    outcome);
}

// Charges (negative amounts) summed per day, as bars: spend above, minutes in the label.
function usageChart(transactions) {
  const days = new Map();
  for (const t of transactions) {
    if (t.amount_cents >= 0) continue;
    const day = t.created_at.slice(0, 10);
    const d = days.get(day) || { cents: 0, minutes: 0 };
    d.cents -= t.amount_cents; d.minutes += t.duration_minutes || 0;
    days.set(day, d);
  }
  if (!days.size) return h("p", { class: "muted", id: "usage-chart" }, "No usage yet.");
  const rows = [...days.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).slice(-30);
  const max = Math.max(...rows.map(([, d]) => d.cents), 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const w = 24 * rows.length; const height = 120;
  svg.setAttribute("viewBox", `0 0 ${w} ${height + 14}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("id", "usage-chart");
  svg.setAttribute("class", "chart");
  svg.setAttribute("aria-label", rows.map(([day, d]) => `${day}: ${cents(d.cents)} spent, ${d.minutes.toFixed(1)} session minutes`).join("; "));
  rows.forEach(([day, d], i) => {
    const bar = document.createElementNS(ns, "rect");
    const bh = Math.max(1, Math.round((d.cents / max) * height));
    bar.setAttribute("x", String(i * 24 + 4)); bar.setAttribute("width", "16");
    bar.setAttribute("y", String(height - bh)); bar.setAttribute("height", String(bh));
    const title = document.createElementNS(ns, "title");
    title.textContent = `${day}: ${cents(d.cents)} spent, ${d.minutes.toFixed(1)} session minutes`;
    bar.append(title); svg.append(bar);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", String(i * 24 + 12)); label.setAttribute("y", String(height + 12));
    label.setAttribute("text-anchor", "middle"); label.textContent = day.slice(8);
    svg.append(label);
  });
  return svg;
}
