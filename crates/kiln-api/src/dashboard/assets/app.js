// Kiln's dashboard: a hash-routed page over the public API (/api/v1 and /v1). A password
// sign-in lives in HttpOnly cookies this page cannot read (X-Kiln-Session: cookie); it
// echoes only the kiln_csrf cookie in X-CSRF-Token. A pasted API key is kept in
// localStorage and sent as a bearer token. Every value from the server is put in the
// page as text (never as HTML).
"use strict";

const TOKEN = "kiln.token"; // a pasted API key
const LEGACY_REFRESH = "kiln.refresh"; // what earlier versions kept; removed on sign-out
const ORG = "kiln.org";
const COOKIE_MODE = { "X-Kiln-Session": "cookie" };
const main = () => document.getElementById("main");
let timers = [];
let aborts = [];

// ---- small helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function say(message) {
  const s = document.getElementById("status");
  s.textContent = message;
  clearTimeout(say.t);
  say.t = setTimeout(() => { s.textContent = ""; }, 4000);
}

function when(t) { return t ? new Date(t).toLocaleString() : "—"; }
function badge(text) { return h("span", { class: "badge " + text }, text); }
function cents(c) { return (c / 100).toFixed(2); }
function enc(s) { return encodeURIComponent(s); }

function render(title, ...children) {
  const m = main();
  // A page leaves out what does not apply by passing null (as h() allows).
  m.replaceChildren(h("h1", {}, title), ...children.filter((c) => c !== null && c !== undefined && c !== false));
  document.title = title + " · Kiln";
}

class ApiError extends Error {
  constructor(status, body) {
    const d = body && body.detail;
    const msg = d && d.message ? d.message
      : Array.isArray(d) && d.length ? d.map((e) => e.msg).join("; ") : "HTTP " + status;
    super(msg);
    this.status = status;
  }
}

// The value of the kiln_csrf cookie ("" when signed out or signed in with a key).
function csrfCookie() {
  const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("kiln_csrf="));
  return found ? found.slice("kiln_csrf=".length) : "";
}

function isSignedIn() { return !!localStorage.getItem(TOKEN) || !!csrfCookie(); }

// The credential of a request: the pasted key, or (cookies go by themselves) the CSRF
// token a cookie sign-in must echo on requests that change something.
function authHeaders() {
  const key = localStorage.getItem(TOKEN);
  if (key) return { Authorization: "Bearer " + key };
  const csrf = csrfCookie();
  return csrf ? { "X-CSRF-Token": csrf } : {};
}

// A cookie sign-in whose access token expired gets new cookies from its refresh cookie.
async function refreshToken() {
  if (localStorage.getItem(TOKEN) || !csrfCookie()) return false;
  const r = await fetch("/v1/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json", ...COOKIE_MODE }, body: "{}",
  });
  return r.ok;
}

async function raw(method, path, body, retried) {
  const headers = authHeaders();
  // The organization picked on the organization page (document 004's org context).
  if (localStorage.getItem(ORG)) headers["X-Org-Slug"] = localStorage.getItem(ORG);
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && !retried && await refreshToken()) return raw(method, path, body, true);
  // A destructive route asks the person to confirm who they are (sudo), then runs again.
  if (r.status === 403 && !retried) {
    const refused = await r.clone().json().catch(() => null);
    if (refused && refused.detail && refused.detail.code === "sudo_required" && await askSudo()) {
      return raw(method, path, body, true);
    }
  }
  if (r.status === 401) { signOut(false); throw new ApiError(401, null); }
  return r;
}

async function api(method, path, body) {
  const r = await raw(method, path, body);
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

// A modal asking for the password (and a second-factor code) for POST /v1/auth/sudo;
// true once sudo is granted, false when the person cancels.
function askSudo() {
  return new Promise((resolve) => {
    const password = h("input", { type: "password", id: "sudo-password", name: "password", autocomplete: "current-password", required: true });
    const code = h("input", { type: "text", id: "sudo-code", name: "code", autocomplete: "one-time-code", inputmode: "numeric" });
    const error = h("p", { role: "alert", class: "muted", id: "sudo-error" });
    const dialog = h("dialog", { id: "sudo", "aria-labelledby": "sudo-h" });
    const finish = (ok) => { dialog.close(); dialog.remove(); resolve(ok); };
    dialog.append(h("form", { method: "dialog", onsubmit: async (ev) => {
      ev.preventDefault();
      const r = await fetch("/v1/auth/sudo", { method: "POST",
        headers: { ...authHeaders(), "Content-Type": "application/json" },
        body: JSON.stringify({ password: password.value, code: code.value || null }) });
      if (r.ok) finish(true);
      else error.textContent = new ApiError(r.status, await r.json().catch(() => null)).message;
    } }, h("h2", { id: "sudo-h" }, "Confirm it is you"),
    h("p", { class: "muted" }, "This action needs your password (and a code if you use a second factor)."),
    h("label", { for: "sudo-password" }, "Password", password),
    h("label", { for: "sudo-code" }, "Code (if asked)", code), error,
    h("p", { class: "row" }, h("button", { class: "primary", type: "submit", id: "sudo-confirm" }, "Confirm"),
      h("button", { type: "button", onclick: () => finish(false) }, "Cancel"))));
    dialog.addEventListener("cancel", () => finish(false));
    document.body.append(dialog);
    dialog.showModal();
  });
}

function signOut(tell) {
  const had = isSignedIn();
  const headers = authHeaders();
  localStorage.removeItem(TOKEN);
  localStorage.removeItem(LEGACY_REFRESH);
  localStorage.removeItem(ORG);
  // The server removes the HttpOnly cookies on sign-out (a sign-in that already ended, a
  // 401, is left with an invalid one); the readable one goes at once, so the page knows.
  if (had && tell) fetch("/v1/auth/logout", { method: "POST", headers });
  document.cookie = "kiln_csrf=; Max-Age=0; Path=/; SameSite=Strict";
  location.hash = "#/login";
}

// A password sign-in succeeded: its cookies are set; a key pasted before is forgotten.
function signedInByCookie() {
  localStorage.removeItem(TOKEN);
  localStorage.removeItem(LEGACY_REFRESH);
}

// Runs an action from a button, reporting failures in the status line.
function action(fn) {
  return async (ev) => {
    if (ev) ev.preventDefault();
    const b = ev && ev.currentTarget instanceof HTMLButtonElement ? ev.currentTarget : null;
    if (b) b.disabled = true;
    try { await fn(ev); } catch (e) { say(e.message); } finally { if (b) b.disabled = false; }
  };
}

function every(ms, fn) { timers.push(setInterval(fn, ms)); }

// ---- sign-in -------------------------------------------------------------------------

function loginPage() {
  const email = h("input", { type: "email", id: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", id: "password", name: "password", autocomplete: "current-password", required: true });
  const key = h("input", { type: "password", id: "apikey", name: "apikey", autocomplete: "off", placeholder: "kiln_…" });
  const error = h("p", { role: "alert", class: "muted", id: "login-error" });
  const done = () => { location.hash = "#/sessions"; };
  const withPassword = h("form", { class: "card signin", id: "login-form", onsubmit: action(async () => {
    error.textContent = "";
    const r = await fetch("/v1/auth/login", { method: "POST", headers: { "Content-Type": "application/json", ...COOKIE_MODE },
      body: JSON.stringify({ email: email.value, password: password.value }) });
    const body = await r.json().catch(() => null);
    if (!r.ok) { error.textContent = new ApiError(r.status, body).message; return; }
    if (body.mfa_required) { askSecondFactor(body, withPassword, done); return; }
    signedInByCookie();
    done();
  }) },
  h("h2", {}, "E-mail and password"),
  h("label", { for: "email" }, "E-mail", email),
  h("label", { for: "password" }, "Password", password),
  h("p", {}, h("button", { class: "primary", type: "submit" }, "Sign in")));
  const withKey = h("form", { class: "card signin", id: "key-form", onsubmit: action(async () => {
    error.textContent = "";
    localStorage.setItem(TOKEN, key.value.trim());
    localStorage.removeItem(LEGACY_REFRESH);
    try { await api("GET", "/api/v1/users/me"); done(); } catch (e) { error.textContent = "That key was refused."; }
  }) },
  h("h2", {}, "Or an API key"),
  h("label", { for: "apikey" }, "API key", key),
  h("p", {}, h("button", { type: "submit" }, "Use key")));
  render("Sign in", error, withPassword, withKey);
}

// The second step of a sign-in when the account has a second factor: a code from the
// authenticator app (or a backup code) for the challenge POST /v1/auth/login answered,
// sent to /v1/auth/login/mfa. A wrong code may be tried again (the server counts the
// failures of a challenge and ends it); "Start over" asks for the password again.
function askSecondFactor(challenge, passwordForm, done) {
  const code = h("input", { type: "text", id: "mfa-code", name: "code", autocomplete: "one-time-code",
    // Not inputmode=numeric: backup codes have letters.
    maxlength: 64, required: true, spellcheck: "false", autocapitalize: "off", "aria-describedby": "mfa-help" });
  const error = h("p", { role: "alert", class: "muted", id: "mfa-error" });
  const form = h("form", { class: "card signin", id: "mfa-form", onsubmit: action(async () => {
    error.textContent = "";
    const r = await fetch("/v1/auth/login/mfa", { method: "POST", headers: { "Content-Type": "application/json", ...COOKIE_MODE },
      body: JSON.stringify({ challenge_token: challenge.challenge_token, code: code.value.trim() }) });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      error.textContent = new ApiError(r.status, body).message;
      code.select();
      return;
    }
    signedInByCookie();
    done();
  }) },
  h("h2", {}, "Second factor"),
  h("p", { class: "muted", id: "mfa-help" }, "Enter the 6-digit code from your authenticator app, or one of your backup codes."),
  h("label", { for: "mfa-code" }, "Code", code), error,
  h("p", { class: "row" }, h("button", { class: "primary", type: "submit", id: "mfa-submit" }, "Verify"),
    h("button", { type: "button", id: "mfa-restart", onclick: () => loginPage() }, "Start over")));
  passwordForm.replaceWith(form);
  code.focus();
}

// ---- sessions ------------------------------------------------------------------------

const STATES = ["", "creating", "ready", "error", "closed", "terminated"];

async function sessionsPage(params) {
  const state = params.get("status") || "";
  const select = h("select", { id: "state-filter", name: "status" },
    STATES.map((s) => h("option", { value: s, selected: s === state }, s || "all")));
  const search = h("input", { type: "search", id: "session-search", name: "q", maxlength: 200, value: params.get("q") || "" });
  const count = h("p", { id: "live-count", "aria-live": "polite" });
  const body = h("tbody", {});
  const table = h("div", { class: "scroll" }, h("table", { id: "sessions" },
    h("thead", {}, h("tr", {}, h("th", {}, "Session"), h("th", {}, "Status"), h("th", {}, "Source"),
      h("th", { class: "hide-narrow" }, "Created"), h("th", { class: "hide-narrow" }, "Expires"))), body));
  const apply = () => {
    const p = new URLSearchParams();
    if (select.value) p.set("status", select.value);
    if (search.value) p.set("q", search.value);
    location.hash = "#/sessions?" + p;
  };
  select.addEventListener("change", apply);
  const form = h("form", { class: "inline", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("label", { for: "state-filter" }, "State", select),
    h("label", { for: "session-search" }, "Search (id, name, sample, label)", search),
    h("button", { type: "submit" }, "Filter"));
  render("Sessions", form, count, table);
  let asked = 0;
  const load = async () => {
    const mine = ++asked;
    const q = new URLSearchParams({ limit: "100" });
    if (state) q.set("status", state);
    if (search.value) q.set("q", search.value.slice(0, 200));
    const list = await api("GET", "/v1/instances?" + q);
    const live = await api("GET", "/v1/instances?limit=1&status=creating,ready");
    if (mine !== asked) return; // a later search answered (or will): show that one
    const rows = list.instances;
    count.textContent = `${live.total} live · ${list.total} match this filter` + (list.total > rows.length ? `, newest ${rows.length} shown` : "");
    body.replaceChildren(...rows.map((i) => h("tr", {},
      h("td", {}, h("a", { href: "#/session/" + enc(i.id) }, i.name || i.id)),
      h("td", {}, badge(i.status)), h("td", {}, sourceText(i.source)),
      h("td", { class: "hide-narrow" }, when(i.created_at)), h("td", { class: "hide-narrow" }, when(i.expires_at)))));
    if (!rows.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, "No sessions.")));
  };
  searchAsYouType(search, select, load);
  await load();
  every(5000, () => load().catch(() => {}));
}

// Typing searches on the server once the person pauses; the hash keeps the query (replaced,
// not pushed, so Back leaves the list rather than undoing each keystroke).
function searchAsYouType(search, select, load) {
  let pause;
  search.addEventListener("input", () => {
    clearTimeout(pause);
    pause = setTimeout(() => {
      if (!search.isConnected) return;
      const p = new URLSearchParams();
      if (select.value) p.set("status", select.value);
      if (search.value) p.set("q", search.value);
      history.replaceState(null, "", "#/sessions?" + p);
      load().catch((e) => say(e.message));
    }, 300);
  });
}

function sourceText(s) {
  return s.type === "sample" ? `${s.dataset}/${s.sample_id}` : s.image;
}

// ---- one session ---------------------------------------------------------------------

async function sessionPage(id) {
  const inst = await api("GET", "/v1/instances/" + enc(id));
  const status = h("span", { id: "session-status" }, badge(inst.status));
  const buttons = h("div", { class: "row" },
    inst.source.type === "sample" ? h("button", { id: "verify", class: "primary", onclick: action(() => verify(id)) }, "Verify") : null,
    h("button", { id: "snapshot", onclick: action(async () => {
      const s = await api("POST", `/v1/instances/${enc(id)}/snapshots`, {});
      say("Snapshot " + s.name + " taken"); await loadSnapshots();
    }) }, "Snapshot"),
    h("button", { id: "fork", onclick: action(async () => {
      const f = await api("POST", `/v1/instances/${enc(id)}/fork`, { count: 1 });
      location.hash = "#/session/" + enc(f.instances[0].instance_id);
    }) }, "Fork"),
    h("button", { id: "close", class: "danger", onclick: action(async () => {
      await api("DELETE", "/v1/instances/" + enc(id));
      say("Session closed"); route();
    }) }, "Close"));
  const command = h("input", { type: "text", id: "command", name: "command", required: true, autocomplete: "off" });
  const output = h("pre", { id: "live-output", "aria-live": "polite", "aria-label": "Output" });
  const exitLine = h("p", { id: "exit-code" });
  const runForm = h("form", { class: "inline", onsubmit: action(async () => {
    output.textContent = ""; exitLine.textContent = "running…";
    await streamExec(id, command.value, output, exitLine);
    await loadTimeline();
  }) }, h("label", { for: "command" }, "Command", command), h("button", { class: "primary", type: "submit" }, "Run"));
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const usage = h("p", { id: "usage-now", "aria-live": "polite", class: "muted" }, "No sample yet.");
  const charts = h("div", { class: "charts", id: "metrics-charts" });
  const snaps = h("ul", { id: "snapshots" });
  const tree = h("div", { class: "tree", id: "file-tree" });
  const viewer = h("pre", { id: "file-viewer", "aria-label": "File content" });
  const viewerName = h("p", { class: "muted" }, "Pick a file.");
  render("Session " + (inst.name || inst.id),
    h("p", {}, status, " ", sourceText(inst.source), " · created ", when(inst.created_at),
      " · expires ", when(inst.expires_at), inst.error ? " · " + inst.error.message : ""),
    buttons,
    h("h2", {}, "Run a command"), runForm, output, exitLine,
    h("div", { class: "grid" },
      h("section", { "aria-labelledby": "files-h" }, h("h2", { id: "files-h" }, "Files"), tree),
      h("section", { "aria-labelledby": "viewer-h" }, h("h2", { id: "viewer-h" }, "Viewer"), viewerName, viewer)),
    h("h2", {}, "Usage"), usage, charts,
    h("h2", {}, "Timeline"), timeline,
    h("h2", {}, "Snapshots"), snaps,
    inst.source.type === "sample" ? verificationsSection(id) : null);
  const loadTimeline = async () => {
    const execs = await api("GET", `/v1/instances/${enc(id)}/exec?limit=50`);
    timeline.replaceChildren(...execs.items.map((e) => h("li", {},
      h("div", {}, badge(e.status), " ", h("code", {}, e.command || (e.argv || []).join(" ")),
        " · ", when(e.created_at), e.exit_code === null ? "" : " · exit " + e.exit_code),
      e.stdout || e.stderr ? h("details", {}, h("summary", {}, "output"), h("pre", {}, e.stdout + e.stderr)) : null)));
    if (!execs.items.length) timeline.replaceChildren(h("li", { class: "muted" }, "No commands yet."));
  };
  const loadSnapshots = async () => {
    const list = await api("GET", `/v1/instances/${enc(id)}/snapshots`);
    snaps.replaceChildren(...list.snapshots.map((s) => h("li", {}, s.name, " ", h("span", { class: "muted" },
      `${s.kind}, ${s.size_bytes} bytes, ${when(s.created_at)}`, s.parent_snapshot_id ? " ← " + s.parent_snapshot_id : ""))));
    if (!list.snapshots.length) snaps.replaceChildren(h("li", { class: "muted" }, "None."));
  };
  const open = async (path) => {
    const f = await api("GET", `/v1/instances/${enc(id)}/files?path=${enc(path)}&format=json&length=262144`);
    viewerName.textContent = path + (f.truncated ? " (first 256 KiB)" : "");
    viewer.textContent = f.encoding === "base64" ? "(binary, " + f.size + " bytes)" : f.content;
  };
  const listDir = async (path, into) => {
    const l = await api("GET", `/v1/instances/${enc(id)}/files/list?path=${enc(path)}&depth=1`);
    into.replaceChildren(h("ul", {}, l.entries.map((e) => {
      const li = h("li", {});
      const sub = h("div", {});
      li.append(h("button", { type: "button", "data-path": e.path, "aria-expanded": e.type === "directory" ? "false" : null,
        onclick: action(async (ev) => {
          if (e.type === "directory") {
            const b = ev.currentTarget; const openNow = b.getAttribute("aria-expanded") !== "true";
            b.setAttribute("aria-expanded", String(openNow));
            if (openNow) await listDir(e.path, sub); else sub.replaceChildren();
          } else await open(e.path);
        }) }, (e.type === "directory" ? "▸ " : "") + e.name), sub);
      return li;
    })));
  };
  // The newest sample, and the CPU use since the one before it.
  const loadUsage = async () => {
    const m = await api("GET", `/v1/instances/${enc(id)}/metrics`);
    drawMetrics(charts, m); // metrics.js
    const [prev, last] = m.samples.slice(-2).length === 2 ? m.samples.slice(-2) : [null, m.samples[m.samples.length - 1]];
    if (!last) return;
    const mib = (b) => (b === null || b === undefined ? "—" : (b / 1048576).toFixed(1) + " MiB");
    const cpuNow = prev && last.cpu_seconds !== null && prev.cpu_seconds !== null
      ? ` (${(100 * (last.cpu_seconds - prev.cpu_seconds) / m.interval_seconds).toFixed(0)} % of a core now)` : "";
    usage.textContent = `CPU ${(last.cpu_seconds || 0).toFixed(2)} s${cpuNow} · memory peak ${mib(last.memory_peak_bytes)}`
      + ` · disk ${mib(last.disk_used_bytes)} of ${mib(last.disk_limit_bytes)} · ${last.pids_peak ?? "—"} processes`
      + ` · sampled ${when(last.sampled_at)}, every ${m.interval_seconds} s`;
  };
  const live = inst.status === "ready";
  if (live) { await loadUsage().catch(() => {}); every(5000, () => loadUsage().catch(() => {})); }
  await loadTimeline().catch((e) => say(e.message));
  await loadSnapshots().catch(() => {});
  if (live) await listDir(".", tree).catch((e) => { tree.textContent = e.message; });
  else tree.textContent = inst.status === "creating" ? "Starting…" : "The sandbox is gone.";
  if (inst.status === "creating") {
    every(1500, async () => {
      const now = await api("GET", "/v1/instances/" + enc(id));
      if (now.status !== "creating") route();
    });
  }
}

// POST …/exec/stream answers Server-Sent Events; read them from the body as they come
// (EventSource cannot send the bearer header).
async function streamExec(id, command, output, exitLine) {
  const ctl = new AbortController();
  aborts.push(ctl);
  const r = await fetch(`/v1/instances/${enc(id)}/exec/stream`, {
    method: "POST", signal: ctl.signal,
    headers: { ...authHeaders(), "Content-Type": "application/json",
      ...(localStorage.getItem(ORG) ? { "X-Org-Slug": localStorage.getItem(ORG) } : {}) },
    body: JSON.stringify({ command }),
  });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => null));
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message"; let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (!data) continue;
      const d = JSON.parse(data);
      if (event === "stdout" || event === "stderr") output.append(d.text !== undefined ? d.text : atob(d.base64));
      else if (event === "exit") exitLine.textContent = "exit code " + d.exit_code;
      else if (event === "error") exitLine.textContent = "error: " + (d.message || JSON.stringify(d));
    }
  }
}

async function verify(id) {
  const job = await api("POST", `/api/v1/sessions/${enc(id)}/verify`, {});
  location.hash = `#/verify/${enc(id)}/${enc(job.job_id)}`;
}

// ---- verification --------------------------------------------------------------------

// The session page's list of its verification jobs (newest first), each linking to its page.
function verificationsSection(id) {
  const list = h("ul", { id: "verifications" });
  const more = h("button", { type: "button", id: "verifications-more", hidden: true }, "More");
  const counts = (name, c) => (c ? ` · ${name} ${c.passed} passed, ${c.failed} failed` : "");
  const load = async (after) => {
    const q = new URLSearchParams({ limit: "20" });
    if (after) q.set("after", after);
    const page = await api("GET", `/v1/instances/${enc(id)}/verifications?` + q);
    const items = page.items.map((j) => h("li", {},
      h("a", { href: `#/verify/${enc(id)}/${enc(j.job_id)}` }, j.job_id), " ", badge(j.status),
      j.resolved === null ? "" : " ", j.resolved === null ? "" : badge(j.resolved ? "resolved" : "unresolved"),
      h("span", { class: "muted" }, counts("FAIL_TO_PASS", j.fail_to_pass) + counts("PASS_TO_PASS", j.pass_to_pass),
        " · started ", when(j.created_at), j.finished_at ? " · finished " + when(j.finished_at) : "",
        j.error ? " · " + j.error.message : "")));
    if (after) list.append(...items);
    else list.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "None yet.")]));
    more.hidden = !page.next_after;
    more.onclick = action(() => load(page.next_after));
  };
  load().catch((e) => { list.replaceChildren(h("li", { role: "alert" }, e.message)); });
  return h("section", { "aria-labelledby": "verifications-h" },
    h("h2", { id: "verifications-h" }, "Verifications"), list, more);
}

async function verifyPage(sessionId, jobId) {
  const job = await api("GET", `/api/v1/sessions/${enc(sessionId)}/verify/${enc(jobId)}`);
  const head = h("p", {}, "Job ", h("code", {}, job.job_id), " ", h("span", { id: "job-status" }, badge(job.status)),
    " · session ", h("a", { href: "#/session/" + enc(sessionId) }, sessionId));
  if (job.status === "pending" || job.status === "starting" || job.status === "running") {
    render("Verification", head, h("p", { "aria-live": "polite" }, "Running the tests…"));
    every(1000, async () => {
      const now = await api("GET", `/api/v1/sessions/${enc(sessionId)}/verify/${enc(jobId)}`);
      if (now.status !== job.status) route();
    });
    return;
  }
  if (!job.result) {
    render("Verification", head, h("p", { role: "alert" }, job.error ? job.error.message : "No result."));
    return;
  }
  const res = job.result;
  const g = res.grading || {};
  const rows = [];
  const ts = g.tests_status || {};
  for (const group of ["FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL"]) {
    const s = ts[group]; if (!s) continue;
    for (const t of s.success || []) rows.push([group, t, "passed"]);
    for (const t of s.failure || []) rows.push([group, t, "failed"]);
  }
  for (const t of res.skips || []) rows.push(["skipped", t.name || JSON.stringify(t), "skipped"]);
  const table = h("div", { class: "scroll" }, h("table", { id: "test-results" },
    h("caption", { class: "muted" }, `${res.passed} passed, ${res.failed} failed, ${res.skipped} skipped of ${res.total}`),
    h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", {}, "Test"), h("th", {}, "Result"))),
    h("tbody", {}, rows.map(([grp, t, r]) => h("tr", {}, h("td", {}, grp), h("td", {}, h("code", {}, t)),
      h("td", {}, badge(r === "passed" ? "pass" : r === "failed" ? "fail" : r), " ", r))))));
  render("Verification", head,
    h("p", { id: "resolution" }, "Resolution: ", badge(g.resolution || (res.is_success ? "resolved" : "unresolved")),
      g.rules ? " · rules " + (typeof g.rules === "string" ? g.rules : JSON.stringify(g.rules)) : "",
      g.parser ? " · parser " + g.parser : "", ` · ${res.execution_duration_seconds.toFixed(1)} s`),
    table, h("h2", {}, "Log"), logView(res.stdout + (res.stderr ? "\n" + res.stderr : "")));
}

// The harness prints markers around the test run; that region is highlighted.
function logView(text) {
  const pre = h("pre", { class: "log", id: "verify-log" });
  let inside = false;
  for (const line of text.split("\n")) {
    const start = /start test output/i.test(line); const end = /end test output/i.test(line);
    if (start) inside = true;
    pre.append(inside || start || end ? h("span", { class: "region" }, line + "\n") : line + "\n");
    if (end) inside = false;
  }
  return pre;
}

// ---- datasets and samples ------------------------------------------------------------

async function samplesPage(params) {
  const datasets = await api("GET", "/api/v1/datasets");
  const list = Array.isArray(datasets) ? datasets : datasets.datasets || [];
  const ds = params.get("dataset") || "";
  const select = h("select", { id: "dataset", name: "dataset" }, h("option", { value: "" }, "all"),
    list.map((d) => h("option", { value: d.name || d.dataset, selected: (d.name || d.dataset) === ds }, d.name || d.dataset)));
  const search = h("input", { type: "search", id: "sample-search", name: "search", value: params.get("search") || "" });
  const q = new URLSearchParams({ page_size: "50" });
  if (ds) q.set("dataset", ds);
  if (params.get("search")) q.set("search", params.get("search"));
  const samples = await api("GET", "/api/v1/samples?" + q);
  const chosen = list.find((d) => (d.name || d.dataset) === ds);
  render("Datasets and samples",
    h("form", { class: "inline", role: "search", onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams(); if (select.value) p.set("dataset", select.value); if (search.value) p.set("search", search.value);
      location.hash = "#/samples?" + p;
    } }, h("label", { for: "dataset" }, "Dataset", select), h("label", { for: "sample-search" }, "Search", search),
    h("button", { type: "submit" }, "Search")),
    chosen && chosen.description ? Markdown.render(chosen.description, "dataset-description") : null,
    h("p", { class: "muted" }, `${samples.total_count} samples`),
    h("div", { class: "scroll" }, h("table", { id: "samples" },
      h("thead", {}, h("tr", {}, h("th", {}, "Sample"), h("th", {}, "Dataset"), h("th", { class: "hide-narrow" }, "Repository"), h("th", {}, "Language"))),
      h("tbody", {}, samples.samples.map((s) => h("tr", {},
        h("td", {}, h("a", { href: `#/sample/${enc(s.dataset)}/${enc(s.sample_id)}` }, s.sample_id)),
        h("td", {}, s.dataset), h("td", { class: "hide-narrow" }, s.repo), h("td", {}, s.language)))))));
}

async function samplePage(dataset, sampleId) {
  const found = await api("GET", `/api/v1/samples?dataset=${enc(dataset)}&search=${enc(sampleId)}&page_size=100`);
  const s = found.samples.find((x) => x.sample_id === sampleId);
  if (!s) { render("Sample not found", h("p", {}, sampleId)); return; }
  render(s.sample_id,
    h("p", {}, s.repo, " @ ", h("code", {}, s.base_commit.slice(0, 12)), " · ", s.language, " · ", s.dataset),
    h("div", { class: "row" }, h("button", { id: "start-session", class: "primary", onclick: action(async () => {
      const made = await api("POST", "/api/v1/sessions", { dataset: s.dataset, sample_id: s.sample_id });
      location.hash = "#/session/" + enc(made.session_id);
    }) }, "Start a session")),
    h("h2", {}, "Problem statement"), Markdown.render(s.problem_statement, "problem"), // markdown.js
    h("h2", {}, "Gold patch"), diffView(s.patch, "gold-patch"),
    h("h2", {}, "Test patch"), diffView(s.test_patch, "test-patch"),
    h("h2", {}, "Tests"), h("p", {}, "FAIL_TO_PASS: ", s.fail_to_pass.join(", ") || "—"),
    h("p", {}, "PASS_TO_PASS: ", s.pass_to_pass.join(", ") || "—"));
}

function diffView(text, id) {
  const pre = h("pre", { class: "diff", id });
  for (const line of (text || "").split("\n")) {
    const cls = line.startsWith("+++") || line.startsWith("---") ? "hunk" : line.startsWith("@@") ? "hunk"
      : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : null;
    pre.append(cls ? h("span", { class: cls }, line) : line + "\n");
  }
  return pre;
}

// ---- routing -------------------------------------------------------------------------

async function route() {
  timers.forEach(clearInterval); timers = [];
  aborts.forEach((c) => c.abort()); aborts = [];
  const hash = location.hash.slice(1) || "/sessions";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const signedIn = isSignedIn();
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn && parts[0] !== "login") { location.hash = "#/login"; return; }
  try {
    switch (parts[0]) {
      case "login": return loginPage();
      case "sessions": return await sessionsPage(params);
      case "session": return await sessionPage(parts[1]);
      case "verify": return await verifyPage(parts[1], parts[2]);
      case "samples": return await samplesPage(params);
      case "sample": return await samplePage(parts[1], parts[2]);
      case "keys": return await keysPage();
      case "usage": return await usagePage();
      // team.js
      case "org": return await orgPage();
      case "audit": return await auditPage(params);
      case "webhooks": return await webhooksPage();
      case "webhook": return await webhookPage(parts[1], params);
      case "runs": return await runsPage();
      case "run": return await runPage(parts[1]);
      case "nodes": return await nodesPage();
      default: render("Not found", h("p", {}, h("a", { href: "#/sessions" }, "Sessions")));
    }
  } catch (e) {
    // The organization picked earlier is gone (or the caller left it): back to the default.
    if (e.status === 404 && localStorage.getItem(ORG) && /organization/.test(e.message)) {
      switchOrg(null); say(e.message); return route();
    }
    if (e.status !== 401) render("Something went wrong", h("p", { role: "alert" }, e.message));
  } finally {
    main().focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => signOut(true));
  document.getElementById("org-name-nav").textContent = localStorage.getItem(ORG) || "";
  route();
});
