// The dashboard's team and operations pages: the organization (members, invitations, org
// keys), webhooks and their deliveries, the audit log, evaluation runs and (for admins)
// the nodes. Loaded after app.js, whose helpers (h, api, render, action, say, …) it uses.
"use strict";

const ROLES = ["owner", "admin", "member"];

function table(id, heads, rows, empty) {
  return h("div", { class: "scroll" }, h("table", { id },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: heads.length, class: "muted" }, empty)))));
}

// ---- organization --------------------------------------------------------------------

async function orgPage() {
  const org = await api("GET", "/v1/orgs/current");
  const base = "/v1/orgs/" + enc(org.slug);
  const manage = org.role === "owner" || org.role === "admin";
  const [members, keys] = await Promise.all([api("GET", base + "/members"), api("GET", base + "/api-keys")]);
  const invitations = manage ? await api("GET", base + "/invitations") : { items: [] };
  const email = h("input", { type: "email", id: "invite-email", name: "email", required: true });
  const role = h("select", { id: "invite-role", name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
  const keyName = h("input", { type: "text", id: "org-key-name", name: "name", maxlength: 100 });
  const orgs = await api("GET", "/v1/orgs");
  const newName = h("input", { type: "text", id: "org-name", name: "name", required: true, maxlength: 100 });
  render("Organization " + org.name,
    h("p", {}, h("code", {}, org.slug), " · your role ", badge(org.role), org.personal ? " · personal" : ""),
    h("h2", {}, "Your organizations"),
    table("orgs", ["Name", "Slug", "Role", ""], orgs.items.map((o) => h("tr", {},
      h("td", {}, o.name), h("td", {}, h("code", {}, o.slug)), h("td", {}, o.role),
      h("td", {}, o.slug === org.slug ? "current" : h("button", { "aria-label": "Switch to " + o.name,
        onclick: action(async () => { switchOrg(o.personal ? null : o.slug); await orgPage(); }) }, "Switch")))), "None."),
    h("form", { class: "inline", id: "org-form", onsubmit: action(async () => {
      const made = await api("POST", "/v1/orgs", { name: newName.value });
      switchOrg(made.slug); say("Organization " + made.name + " created"); await orgPage();
    }) }, h("label", { for: "org-name" }, "New organization", newName), h("button", { type: "submit" }, "Create")),
    h("h2", {}, "Members"),
    table("members", ["Name", "E-mail", "Role", "Joined", ""], members.items.map((m) => h("tr", { "data-user-id": m.user_id },
      h("td", {}, m.name), h("td", {}, m.email),
      h("td", {}, manage ? h("select", { "aria-label": "Role of " + m.email, onchange: action(async (ev) => {
        await api("PATCH", `${base}/members/${enc(m.user_id)}`, { role: ev.target.value });
        say("Role changed");
      }) }, ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r))) : m.role),
      h("td", {}, when(m.joined_at)),
      h("td", {}, manage ? h("button", { class: "danger", "aria-label": "Remove " + m.email, onclick: action(async () => {
        await api("DELETE", `${base}/members/${enc(m.user_id)}`);
        say("Member removed"); await orgPage();
      }) }, "Remove") : ""))), "No members."),
    manage ? h("h2", {}, "Invitations") : null,
    manage ? h("form", { class: "inline", id: "invite-form", onsubmit: action(async () => {
      await api("POST", base + "/invitations", { email: email.value, role: role.value });
      say("Invitation sent to " + email.value); await orgPage();
    }) }, h("label", { for: "invite-email" }, "E-mail", email), h("label", { for: "invite-role" }, "Role", role),
    h("button", { class: "primary", type: "submit" }, "Invite")) : null,
    manage ? table("invitations", ["E-mail", "Role", "State", "Expires", ""], invitations.items.map((i) => h("tr", {},
      h("td", {}, i.email), h("td", {}, i.role), h("td", {}, badge(i.state)), h("td", {}, when(i.expires_at)),
      h("td", {}, i.state === "pending" ? h("button", { class: "danger", "aria-label": "Revoke invitation of " + i.email,
        onclick: action(async () => {
          await api("DELETE", `${base}/invitations/${enc(i.id)}`);
          say("Invitation revoked"); await orgPage();
        }) }, "Revoke") : ""))), "No invitations.") : null,
    h("h2", {}, "Organization API keys"),
    h("form", { class: "inline", id: "org-key-form", onsubmit: action(async () => {
      const made = await api("POST", base + "/api-keys", { name: keyName.value || null });
      await orgPage();
      document.getElementById("new-org-key").replaceChildren(h("p", {}, "Copy it now: it is shown only once."),
        h("div", { class: "secret", id: "new-org-key-secret" }, made.key));
    }) }, h("label", { for: "org-key-name" }, "Name", keyName), h("button", { type: "submit" }, "Create key")),
    h("div", { id: "new-org-key", "aria-live": "polite" }),
    table("org-keys", ["Name", "Key", "Created", "Last used", ""], keys.items.map((k) => h("tr", {},
      h("td", {}, k.name || "—"), h("td", {}, h("code", {}, k.masked)), h("td", {}, when(k.created_at)),
      h("td", {}, when(k.last_used_at)),
      h("td", {}, k.revoked_at ? "revoked" : h("button", { class: "danger", "aria-label": "Revoke " + (k.name || k.id),
        onclick: action(async () => {
          await api("DELETE", `${base}/api-keys/${enc(k.id)}`);
          say("Key revoked"); await orgPage();
        }) }, "Revoke")))), "No organization keys."),
    h("p", {}, h("a", { href: "#/audit" }, "Audit log")));
}

// Later requests act in `slug` (X-Org-Slug); null: the caller's default organization.
function switchOrg(slug) {
  if (slug) localStorage.setItem(ORG, slug); else localStorage.removeItem(ORG);
  document.getElementById("org-name-nav").textContent = slug || "";
}

// ---- audit log -----------------------------------------------------------------------

async function auditPage(params) {
  const org = await api("GET", "/v1/orgs/current");
  const filter = h("input", { type: "search", id: "audit-action", name: "action", value: params.get("action") || "", placeholder: "e.g. member.role_changed" });
  const body = h("tbody", {});
  const more = h("button", { id: "audit-more", hidden: true }, "Older events");
  let cursor = null;
  const load = async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (params.get("action")) q.set("action", params.get("action"));
    if (cursor) q.set("cursor", cursor);
    const page = await api("GET", `/v1/orgs/${enc(org.slug)}/audit?` + q);
    body.append(...page.items.map((e) => h("tr", {}, h("td", {}, when(e.created_at)), h("td", {}, h("code", {}, e.action)),
      h("td", {}, e.target || "—"), h("td", { class: "hide-narrow" }, e.actor_id || "—"),
      h("td", { class: "hide-narrow" }, e.ip_address))));
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No events.")));
    cursor = page.next_cursor || null;
    more.hidden = !cursor;
  };
  more.addEventListener("click", action(load));
  render("Audit log",
    h("p", { class: "muted" }, "Organization ", org.name, ": every security-relevant action, newest first."),
    h("form", { class: "inline", role: "search", onsubmit: (e) => {
      e.preventDefault();
      location.hash = "#/audit" + (filter.value ? "?action=" + enc(filter.value) : "");
    } }, h("label", { for: "audit-action" }, "Action", filter), h("button", { type: "submit" }, "Filter")),
    h("div", { class: "scroll" }, h("table", { id: "audit" },
      h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Action"), h("th", {}, "Target"),
        h("th", { class: "hide-narrow" }, "Actor"), h("th", { class: "hide-narrow" }, "Address"))), body)),
    h("p", {}, more));
  await load();
}

// ---- webhooks ------------------------------------------------------------------------

const EVENTS = ["session.created", "session.ready", "session.closed", "session.terminated", "session.error",
  "verification.completed", "verification.error", "snapshot.created", "snapshot.deleted",
  "snapshot.restored", "session.forked"];

async function webhooksPage() {
  const list = await api("GET", "/v1/webhooks");
  const url = h("input", { type: "text", id: "webhook-url", name: "url", required: true, placeholder: "https://…" });
  const boxes = EVENTS.map((e) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "events", value: e, checked: true }), e));
  render("Webhooks",
    h("form", { class: "card", id: "webhook-form", onsubmit: action(async () => {
      const events = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
      const made = await api("POST", "/v1/webhooks", { url: url.value, events });
      sessionStorage.setItem("kiln.webhook-secret", made.secret || "");
      location.hash = "#/webhook/" + enc(made.webhook_id) + "?secret=shown";
    }) }, h("label", { for: "webhook-url" }, "Endpoint URL", url),
    h("fieldset", { class: "checks" }, h("legend", {}, "Events"), boxes),
    h("p", {}, h("button", { class: "primary", type: "submit" }, "Add webhook"))),
    table("webhooks", ["Endpoint", "Events", "Active", "Created"], list.webhooks.map((w) => h("tr", {},
      h("td", {}, h("a", { href: "#/webhook/" + enc(w.webhook_id) }, w.url)), h("td", {}, w.events.join(", ")),
      h("td", {}, w.active ? "yes" : "no"), h("td", {}, when(w.created_at)))), "No webhooks."));
}

async function webhookPage(id, params) {
  const base = "/v1/webhooks/" + enc(id);
  const [w, deliveries] = await Promise.all([api("GET", base), api("GET", base + "/deliveries?limit=50")]);
  const secret = params.get("secret") === "shown" ? sessionStorage.getItem("kiln.webhook-secret") : null;
  sessionStorage.removeItem("kiln.webhook-secret");
  render("Webhook " + w.url,
    h("p", {}, w.active ? badge("ready") : badge("closed"), " ", w.events.join(", ")),
    secret ? h("div", {}, h("p", {}, "Signing secret (shown only once):"), h("div", { class: "secret", id: "webhook-secret" }, secret)) : null,
    h("div", { class: "row" },
      h("button", { id: "webhook-test", onclick: action(async () => {
        await api("POST", base + "/test", {});
        say("Test event queued"); await webhookPage(id, new URLSearchParams());
      }) }, "Send a test event"),
      h("button", { id: "webhook-toggle", onclick: action(async () => {
        await api("PATCH", base, { active: !w.active });
        await webhookPage(id, new URLSearchParams());
      }) }, w.active ? "Pause" : "Resume"),
      h("button", { class: "danger", id: "webhook-delete", onclick: action(async () => {
        await api("DELETE", base);
        say("Webhook deleted"); location.hash = "#/webhooks";
      }) }, "Delete")),
    h("h2", {}, "Deliveries"),
    table("deliveries", ["Event", "Status", "Attempts", "Last answer", "Created", ""], deliveries.deliveries.map((d) => h("tr", {},
      h("td", {}, h("code", {}, d.event_type)), h("td", {}, badge(d.status)), h("td", {}, String(d.attempts)),
      h("td", {}, d.last_status_code ? "HTTP " + d.last_status_code : d.last_error || "—"), h("td", {}, when(d.created_at)),
      h("td", {}, d.status === "dead" ? h("button", { onclick: action(async () => {
        await api("POST", `${base}/deliveries/${enc(d.delivery_id)}/retry`, {});
        say("Retry queued"); await webhookPage(id, new URLSearchParams());
      }) }, "Retry") : ""))), "No deliveries yet."));
}

// ---- evaluation runs -----------------------------------------------------------------

async function runsPage() {
  const list = await api("GET", "/v1/parallel/runs");
  render("Evaluation runs",
    h("p", { class: "muted" }, "Runs started with POST /v1/parallel/runs or kiln eval --server."),
    table("runs", ["Run", "Dataset", "Status", "Progress", "Resolved"], list.runs.map((r) => h("tr", {},
      h("td", {}, h("a", { href: "#/run/" + enc(r.run_id) }, r.run_id)), h("td", {}, r.dataset),
      h("td", {}, badge(r.status)), h("td", {}, `${r.finished} / ${r.to_run}`),
      h("td", {}, `${r.resolved}`))), "No runs."));
}

async function runPage(id) {
  const base = "/v1/parallel/runs/" + enc(id);
  const [run, members] = await Promise.all([api("GET", base), api("GET", base + "/members")]);
  const done = run.status !== "running";
  render("Run " + run.run_id,
    h("p", {}, h("span", { id: "run-status" }, badge(run.status)), " ", run.dataset,
      ` · ${run.finished} of ${run.to_run} finished · ${run.resolved} resolved`,
      run.finished ? ` (${(100 * run.resolved / run.finished).toFixed(0)} % of finished)` : "",
      run.errors ? ` · ${run.errors} errors` : "", run.error ? " · " + run.error : ""),
    done ? null : h("div", { class: "row" }, h("button", { class: "danger", id: "run-cancel", onclick: action(async () => {
      await api("POST", base + "/cancel", {}); say("Cancelling"); await runPage(id);
    }) }, "Cancel")),
    done ? regradeControls(base, run, id) : null,
    table("run-members", ["Instance", "Verdict", "Error"], members.members.map((m) => h("tr", {},
      h("td", {}, h("code", {}, m.instance_id)), h("td", {}, badge(m.status)), h("td", {}, m.error || ""))),
    "No instances."));
  if (!done) every(2000, async () => {
    const now = await api("GET", base);
    if (now.status !== run.status || now.finished !== run.finished) route();
  });
}

// Grades the finished run's saved test logs again (nothing runs) and says what changed.
function regradeControls(base, run, id) {
  return h("div", {},
    h("div", { class: "row" }, h("button", { id: "run-regrade", onclick: action(async () => {
      const after = await api("POST", base + "/regrade", {});
      await runPage(id);
      say(regradeText(after.regrade));
    }) }, "Re-grade")),
    run.regrade ? h("p", { id: "run-regrade-outcome", role: "status" }, regradeText(run.regrade)) : null);
}

function regradeText(r) {
  const changed = r.changed ? ": " + r.changed_ids.join(", ") : "";
  const skipped = r.skipped_ids.length ? ` · ${r.skipped_ids.length} kept as they were (log cut or not gradable from the log)` : "";
  return `Re-graded ${r.regraded} instances · ${r.changed} verdicts changed${changed}${skipped}`;
}

// ---- nodes (admins) ------------------------------------------------------------------

async function nodesPage() {
  const r = await raw("GET", "/v1/admin/servers");
  const body = await r.json().catch(() => null);
  if (r.status === 409) {
    render("Nodes", h("p", { id: "nodes-alone" }, "This server runs alone (SQLite): there is no node registry. ",
      "Nodes share a PostgreSQL database; see the README's cluster section."));
    return;
  }
  if (r.status === 403) {
    render("Nodes", h("p", { id: "nodes-admin-only" }, "Only an administrator sees the nodes."));
    return;
  }
  if (!r.ok) throw new ApiError(r.status, body);
  render("Nodes",
    table("nodes", ["Node", "Address", "Backend", "Status", "Sessions", "Heartbeat", ""], body.servers.map((n) => h("tr", {},
      h("td", {}, h("code", {}, n.id)), h("td", {}, n.address), h("td", {}, n.backend), h("td", {}, badge(n.status)),
      h("td", {}, `${n.live_sessions} / ${n.capacity.sessions}`), h("td", {}, when(n.last_heartbeat_at)),
      h("td", {}, n.status === "active" ? h("button", { "aria-label": "Drain " + n.id, onclick: action(async () => {
        await api("POST", `/v1/admin/servers/${enc(n.id)}/drain`, {});
        say("Draining " + n.id); await nodesPage();
      }) }, "Drain") : ""))), "No nodes."));
  every(5000, () => route());
}
