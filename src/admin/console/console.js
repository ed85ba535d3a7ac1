// dialin's web console: a one-page app over the admin API (`/v1/*`), served by the admin
// listener at `/ui/` under a strict Content-Security-Policy. Hence: no inline script or
// style anywhere, every look is a class toggled here, and the SVG chart is built with DOM
// calls and attributes. The admin token lives in sessionStorage only (this tab, gone when
// it closes) and travels as the bearer header; a 401 anywhere returns to the sign-in form.

import { MESSAGES, initialLanguage, translate } from "./i18n.js";

// CSP violations seen by this page, for the browser tests (and for anyone debugging a
// blank panel): the event for those fired from now on, a buffered ReportingObserver for
// any that came before this module ran.
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective}: ${e.blockedURI || "inline"}`);
});
if ("ReportingObserver" in window) {
  new ReportingObserver(
    (reports) => {
      for (const r of reports) {
        const b = r.body || {};
        window.__cspViolations.push(`${b.effectiveDirective}: ${b.blockedURL || "inline"}`);
      }
    },
    { types: ["csp-violation"], buffered: true },
  ).observe();
}

const TOKEN_KEY = "dialin.console.token";
const LANG_KEY = "dialin.console.lang";
// Live calls: the brief's "every 2 seconds", and how often the durations tick.
const CALLS_POLL_MS = 2000;
const TICK_MS = 1000;
// Health is a slower view: once every 10 seconds is plenty for a per-minute chart.
const HEALTH_POLL_MS = 10000;
const PINS_PAGE = 50;
// `/v1/stats` keeps one sample per minute over the last hour.
const HISTORY_MS = 60 * 60 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------
// Language

let lang = initialLanguage(sessionStorage.getItem(LANG_KEY), navigator.language);

function t(key, params) {
  return translate(lang, key, params);
}

function applyLanguage() {
  document.documentElement.lang = lang;
  $("lang").value = lang;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of document.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}

function fmtDateTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" }).format(d);
}

function fmtTime(d) {
  return new Intl.DateTimeFormat(lang, { timeStyle: "medium" }).format(d);
}

function fmtNumber(n, opts) {
  return new Intl.NumberFormat(lang, opts).format(n);
}

// "0:01:05": Intl.DurationFormat where the browser has it, the same digits otherwise.
function fmtDuration(totalSeconds) {
  const s = Math.max(0, Math.floor(totalSeconds));
  const parts = { hours: Math.floor(s / 3600), minutes: Math.floor((s % 3600) / 60), seconds: s % 60 };
  if (typeof Intl.DurationFormat === "function") {
    return new Intl.DurationFormat(lang, { style: "digital", hoursDisplay: "always" }).format(parts);
  }
  const two = (n) => fmtNumber(n, { minimumIntegerDigits: 2 });
  return `${fmtNumber(parts.hours)}:${two(parts.minutes)}:${two(parts.seconds)}`;
}

// ---------------------------------------------------------------------------------------
// PINs read aloud: 3-3-4 for ten digits, otherwise threes with the remainder last.

export function groupPin(pin) {
  const digits = String(pin);
  if (digits.length === 10) {
    return `${digits.slice(0, 3)} ${digits.slice(3, 6)} ${digits.slice(6)}`;
  }
  return digits.match(/.{1,3}/g)?.join(" ") ?? digits;
}

function dialInText(pin, number) {
  const grouped = groupPin(pin);
  return number
    ? t("dial_with_number", { number, pin: grouped })
    : t("dial_without_number", { pin: grouped });
}

// ---------------------------------------------------------------------------------------
// The admin API

class ApiError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
    this.reason = reason;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, t("network_error"));
  }
  if (response.status === 401) {
    signOut(t("signin_expired"));
    throw new ApiError(401, t("signin_expired"));
  }
  if (!response.ok) {
    let reason = "";
    try {
      const j = await response.json();
      reason = j.reason || j.error || "";
    } catch (_) {
      // Not JSON (a proxy's page): the status says enough.
    }
    throw new ApiError(response.status, reason || t("error_status", { status: response.status }));
  }
  if (response.status === 204) return null;
  return response.json();
}

function showError(el, err) {
  if (!err) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  if (err.status === 401) return;
  el.textContent = t("error_prefix", { reason: err.reason || err.message });
  el.hidden = false;
}

const announcer = $("announcer");
function announce(text) {
  // A fresh node per message: screen readers announce additions to a polite region.
  const p = document.createElement("p");
  p.textContent = text;
  announcer.append(p);
  while (announcer.childElementCount > 5) announcer.firstElementChild.remove();
}

// ---------------------------------------------------------------------------------------
// Confirmation dialog (a real <dialog>: focus moves in, Escape cancels, focus returns)

function confirmAction({ title, text, confirm }) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = confirm;
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const done = (ok) => {
      $("confirm-ok").removeEventListener("click", onOk);
      $("confirm-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onClose);
      if (dialog.open) dialog.close();
      if (opener && opener.isConnected) opener.focus();
      resolve(ok);
    };
    const onOk = () => done(true);
    const onCancel = () => done(false);
    const onClose = () => done(false);
    $("confirm-ok").addEventListener("click", onOk);
    $("confirm-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    // The safe choice has the focus: Enter on an open dialog never destroys anything.
    $("confirm-cancel").focus();
  });
}

// ---------------------------------------------------------------------------------------
// Small DOM builders

function cell(row, label, content, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  row.append(td);
  return td;
}

function button(text, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

function emptyRow(tbody, columns, text) {
  const tr = document.createElement("tr");
  tr.className = "empty";
  const td = document.createElement("td");
  td.colSpan = columns;
  td.textContent = text;
  tr.append(td);
  tbody.append(tr);
}

// ---------------------------------------------------------------------------------------
// Sign-in and routing

const VIEWS = ["signin", "pins", "calls", "health"];
let current = null;
let stopView = () => {};

function route() {
  const name = location.hash.replace(/^#\/?/, "");
  return VIEWS.includes(name) && name !== "signin" ? name : "pins";
}

function show(view) {
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  const signedIn = view !== "signin";
  $("nav").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.route === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function navigate() {
  stopView();
  stopView = () => {};
  if (!token) {
    current = "signin";
    show("signin");
    return;
  }
  current = route();
  show(current);
  stopView = STARTERS[current]() || (() => {});
  const title = $(`${current}-title`);
  document.title = `${title.textContent} – ${t("app_title")}`;
}

function signOut(message) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  trunksCache = null;
  const err = $("signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("token").value = "";
  navigate();
  $("token").focus();
}

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  const err = $("signin-error");
  if (!value) {
    err.textContent = t("signin_refused");
    err.hidden = false;
    return;
  }
  // The token is checked by a real request before anything is kept.
  try {
    const r = await fetch("/v1/trunks", {
      headers: { Authorization: `Bearer ${value}` },
      cache: "no-store",
      credentials: "omit",
    });
    if (r.status === 401 || r.status === 403) {
      err.textContent = t("signin_refused");
      err.hidden = false;
      $("token").select();
      return;
    }
    if (!r.ok) throw new Error(t("error_status", { status: r.status }));
    trunksCache = (await r.json()).trunks || [];
  } catch (ex) {
    err.textContent = t("signin_unreachable", { reason: ex.message });
    err.hidden = false;
    return;
  }
  token = value;
  sessionStorage.setItem(TOKEN_KEY, token);
  err.hidden = true;
  $("token").value = "";
  if (!location.hash || location.hash === "#/signin") location.hash = "#/pins";
  else navigate();
  $("main").focus();
});

$("sign-out").addEventListener("click", () => signOut(t("signed_out")));

$("lang").addEventListener("change", () => {
  lang = MESSAGES[$("lang").value] ? $("lang").value : "en";
  sessionStorage.setItem(LANG_KEY, lang);
  applyLanguage();
  // Views redraw from what they hold, in the new language.
  navigate();
});

window.addEventListener("hashchange", () => {
  navigate();
  $("main").focus();
});

// ---------------------------------------------------------------------------------------
// Trunks: where the dial-in number comes from

let trunksCache = null;

async function trunks() {
  if (!trunksCache) trunksCache = (await api("GET", "/v1/trunks")).trunks || [];
  return trunksCache;
}

// The number to dial for a PIN of `namespace`: the first trunk with numbers using that
// namespace, else the first trunk with numbers at all.
function dialNumber(list, namespace) {
  const withNumbers = list.filter((tr) => Array.isArray(tr.numbers) && tr.numbers.length > 0);
  const same = withNumbers.find((tr) => tr.pin_namespace === namespace);
  return (same || withNumbers[0])?.numbers[0] || null;
}

// ---------------------------------------------------------------------------------------
// Rooms and PINs

const pinsState = {
  room: "",
  includeRevoked: false,
  cursors: [""], // the cursor of each page seen so far; the last is the page shown
  next: null,
  pins: null,
  created: null,
};

function startPins() {
  trunks()
    .then((list) => {
      const namespaces = [...new Set(list.map((tr) => tr.pin_namespace))];
      const select = $("create-namespace");
      const chosen = select.value;
      select.replaceChildren(
        ...namespaces.map((ns) => {
          const o = document.createElement("option");
          o.value = ns;
          o.textContent = ns;
          return o;
        }),
      );
      if (namespaces.includes(chosen)) select.value = chosen;
      $("create-namespace-field").hidden = namespaces.length <= 1;
      if (pinsState.created) renderCreated(list);
    })
    .catch(() => {});
  syncRole();
  if (pinsState.pins) renderPins();
  loadPins();
  return () => {};
}

async function loadPins() {
  const params = new URLSearchParams({ limit: String(PINS_PAGE) });
  if (pinsState.room) params.set("room", pinsState.room);
  if (pinsState.includeRevoked) params.set("include_revoked", "true");
  const cursor = pinsState.cursors[pinsState.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  $("pins-status").textContent = t("loading");
  try {
    const page = await api("GET", `/v1/pins?${params}`);
    pinsState.pins = page.pins || [];
    pinsState.next = page.next_cursor || null;
    showError($("pins-error"), null);
    renderPins();
  } catch (err) {
    $("pins-status").textContent = "";
    showError($("pins-error"), err);
  }
}

function validity(p) {
  const from = p.valid_from ? fmtDateTime(p.valid_from) : null;
  const until = p.valid_until ? fmtDateTime(p.valid_until) : null;
  if (from && until) return t("valid_range", { from, until });
  if (from) return t("valid_from_only", { from });
  if (until) return t("valid_until_only", { until });
  return t("valid_always");
}

function renderPins() {
  if (current !== "pins" || !pinsState.pins) return;
  const body = $("pins-body");
  body.replaceChildren();
  if (pinsState.pins.length === 0) {
    emptyRow(body, 7, pinsState.room ? t("no_pins_room", { room: pinsState.room }) : t("no_pins"));
  }
  for (const p of pinsState.pins) {
    const tr = document.createElement("tr");
    tr.dataset.pin = p.pin;
    tr.dataset.namespace = p.namespace;
    tr.dataset.room = p.room;
    if (p.revoked) tr.classList.add("revoked");
    cell(tr, t("col_room"), p.room, "room");
    const pinCell = cell(tr, t("col_pin"), groupPin(p.pin), "pin");
    if (p.namespace !== "default") {
      const ns = document.createElement("span");
      ns.className = "tag";
      ns.textContent = p.namespace;
      pinCell.append(" ", ns);
    }
    cell(tr, t("col_name"), p.participant_name || "", "name");
    const role = cell(tr, t("col_role"), t(p.role === "host" ? "role_host" : "role_participant"));
    if (p.wait_for_host) {
      const w = document.createElement("span");
      w.className = "tag";
      w.textContent = t("state_waiting_for_host");
      role.append(" ", w);
    }
    cell(tr, t("col_valid"), validity(p));
    cell(tr, t("col_created"), fmtDateTime(p.created_at));
    const actions = document.createElement("div");
    actions.className = "row-actions";
    if (p.revoked) {
      const tag = document.createElement("span");
      tag.className = "tag danger";
      tag.textContent = t("revoked");
      actions.append(tag);
    } else {
      const copy = button(t("copy"), "secondary copy", () => showCreated(p, true));
      copy.setAttribute("aria-label", `${t("copy")}: ${p.room} ${groupPin(p.pin)}`);
      const revoke = button(t("revoke"), "danger revoke", () => revokePin(p));
      revoke.setAttribute("aria-label", `${t("revoke")}: ${p.room} ${groupPin(p.pin)}`);
      actions.append(copy, revoke);
    }
    cell(tr, t("col_actions"), actions, "actions");
    body.append(tr);
  }
  const pageNo = pinsState.cursors.length;
  $("pins-status").textContent = "";
  $("pins-page").textContent = pageNo > 1 || pinsState.next ? t("page_n", { n: pageNo }) : "";
  $("pins-next").hidden = !pinsState.next;
  $("pins-first").hidden = pageNo <= 1;
}

async function revokePin(p) {
  const ok = await confirmAction({
    title: t("revoke_title"),
    text: t("revoke_text", { pin: groupPin(p.pin), room: p.room }),
    confirm: t("revoke_confirm"),
  });
  if (!ok) return;
  try {
    await api("DELETE", `/v1/pins/${encodeURIComponent(p.namespace)}/${encodeURIComponent(p.pin)}`);
    announce(t("revoked_done", { pin: groupPin(p.pin) }));
  } catch (err) {
    // 404: someone else revoked it first; the reload below shows the truth either way.
    if (err.status !== 404) showError($("pins-error"), err);
  }
  if (pinsState.created && pinsState.created.pin === p.pin && pinsState.created.namespace === p.namespace) {
    pinsState.created = null;
    $("created").hidden = true;
  }
  await loadPins();
  $("pins-title").focus();
}

$("pins-next").addEventListener("click", () => {
  if (!pinsState.next) return;
  pinsState.cursors.push(pinsState.next);
  loadPins();
});

$("pins-first").addEventListener("click", () => {
  pinsState.cursors = [""];
  loadPins();
});

$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  pinsState.room = $("search-room").value.trim();
  pinsState.cursors = [""];
  loadPins();
});

$("search-clear").addEventListener("click", () => {
  $("search-room").value = "";
  pinsState.room = "";
  pinsState.cursors = [""];
  loadPins();
});

$("include-revoked").addEventListener("change", () => {
  pinsState.includeRevoked = $("include-revoked").checked;
  pinsState.cursors = [""];
  loadPins();
});

function syncRole() {
  // A host PIN cannot wait for a host (the API refuses it).
  const host = $("create-role").value === "host";
  $("create-wait").disabled = host;
  if (host) $("create-wait").checked = false;
}
$("create-role").addEventListener("change", syncRole);

// A `datetime-local` value (local wall time, no zone) as RFC 3339 in UTC.
function localToUtc(value) {
  if (!value) return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

$("create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const err = $("create-error");
  const room = $("create-room").value.trim();
  if (!room) {
    err.textContent = t("error_room_required");
    err.hidden = false;
    $("create-room").focus();
    return;
  }
  const body = { room, role: $("create-role").value };
  const name = $("create-name").value.trim();
  if (name) body.participant_name = name;
  if (!$("create-namespace-field").hidden && $("create-namespace").value) {
    body.namespace = $("create-namespace").value;
  }
  if ($("create-wait").checked && body.role === "participant") body.wait_for_host = true;
  const from = localToUtc($("create-from").value);
  const until = localToUtc($("create-until").value);
  if (from && until && until <= from) {
    err.textContent = t("error_until_before_from");
    err.hidden = false;
    $("create-until").focus();
    return;
  }
  if (from) body.valid_from = from;
  if (until) body.valid_until = until;
  const submit = $("create-submit");
  submit.disabled = true;
  submit.textContent = t("creating");
  try {
    const pin = await api("POST", "/v1/pins", body);
    showError(err, null);
    showCreated(pin, false);
    announce(`${t("created_for", { room: pin.room })} ${groupPin(pin.pin)}`);
    await loadPins();
  } catch (ex) {
    showError(err, ex);
  } finally {
    submit.disabled = false;
    submit.textContent = t("create_submit");
  }
});

function showCreated(pin, focusCopy) {
  pinsState.created = pin;
  $("copy-status").textContent = "";
  $("copy-fallback").hidden = true;
  trunks()
    .then((list) => renderCreated(list))
    .catch(() => renderCreated([]));
  $("created").hidden = false;
  if (focusCopy) $("copy-dialin").focus();
}

function renderCreated(list) {
  const pin = pinsState.created;
  if (!pin) return;
  $("created-for").textContent = t("created_for", { room: pin.room });
  $("created-pin").textContent = groupPin(pin.pin);
  $("dialin-text").textContent = dialInText(pin.pin, dialNumber(list, pin.namespace));
}

$("copy-dialin").addEventListener("click", async () => {
  const text = $("dialin-text").textContent;
  const status = $("copy-status");
  try {
    if (!navigator.clipboard || !navigator.clipboard.writeText) throw new Error("no clipboard");
    await navigator.clipboard.writeText(text);
    status.textContent = t("copied");
    $("copy-fallback").hidden = true;
  } catch (_) {
    // Refused (no permission, unfocused document, insecure context): the text, selected,
    // in a field the user can copy from.
    status.textContent = t("copy_refused");
    const field = $("copy-fallback-text");
    field.value = text;
    $("copy-fallback").hidden = false;
    field.focus();
    field.select();
  }
});

// ---------------------------------------------------------------------------------------
// Live calls

const callsState = {
  calls: new Map(), // id -> last call seen
  rows: new Map(), // id -> <tr>
  timer: null,
  ticker: null,
  first: true,
};

function startCalls() {
  let stopped = false;
  callsState.first = true;
  $("calls-body").replaceChildren();
  callsState.rows.clear();
  const poll = async () => {
    callsState.timer = null;
    if (stopped) return;
    if (document.hidden) {
      $("calls-updated").textContent = t("calls_paused");
      return; // resumed by the visibilitychange listener
    }
    try {
      const { calls } = await api("GET", "/v1/calls");
      if (stopped) return;
      showError($("calls-error"), null);
      renderCalls(calls || []);
      $("calls-updated").textContent = t("updated_at", { time: fmtTime(new Date()) });
    } catch (err) {
      if (stopped) return;
      showError($("calls-error"), err);
      if (err.status === 401) return;
    }
    if (!stopped && !document.hidden) callsState.timer = setTimeout(poll, CALLS_POLL_MS);
  };
  const onVisibility = () => {
    if (!document.hidden && !callsState.timer && !stopped) poll();
  };
  document.addEventListener("visibilitychange", onVisibility);
  callsState.ticker = setInterval(tickDurations, TICK_MS);
  callsState.poll = poll;
  poll();
  return () => {
    stopped = true;
    clearTimeout(callsState.timer);
    callsState.timer = null;
    clearInterval(callsState.ticker);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}

function lossPercent(q) {
  if (!q) return "—";
  const received = Number(q.packets_received) || 0;
  const lost = Number(q.packets_lost) || 0;
  if (received + lost === 0) return "—";
  return fmtNumber(lost / (received + lost), { style: "percent", maximumFractionDigits: 1 });
}

function stateText(state) {
  const key = `state_${state}`;
  return MESSAGES.en[key] ? t(key) : state;
}

function tickDurations() {
  const now = Date.now();
  for (const [id, tr] of callsState.rows) {
    const call = callsState.calls.get(id);
    const started = Date.parse(call?.started_at);
    if (!Number.isNaN(started)) {
      tr.querySelector("td.duration").textContent = fmtDuration((now - started) / 1000);
    }
  }
}

function renderCalls(calls) {
  const body = $("calls-body");
  const seen = new Set();
  const announceChanges = !callsState.first;
  callsState.first = false;
  for (const c of calls) {
    seen.add(c.id);
    const before = callsState.calls.get(c.id);
    callsState.calls.set(c.id, c);
    let tr = callsState.rows.get(c.id);
    if (!tr) {
      // Rows are kept across polls (updated in place), so the keyboard focus on a
      // "Hang up" button survives each refresh.
      tr = document.createElement("tr");
      tr.dataset.callId = c.id;
      cell(tr, t("col_caller"), "", "caller");
      cell(tr, t("col_state"), "", "state");
      cell(tr, t("col_room"), "", "room");
      cell(tr, t("col_trunk"), "", "trunk");
      cell(tr, t("col_duration"), "", "duration num");
      cell(tr, t("col_loss"), "", "loss num");
      cell(tr, t("col_late"), "", "late num");
      cell(tr, t("col_jitter"), "", "jitter num");
      const hang = button(t("hang_up"), "danger hang-up", () => hangUp(c.id));
      cell(tr, t("col_actions"), hang, "actions");
      callsState.rows.set(c.id, tr);
      if (announceChanges) announce(t("call_started", { caller: c.caller }));
    } else if (announceChanges && before && before.state !== c.state) {
      announce(t("call_state", { caller: c.caller, state: stateText(c.state) }));
    }
    const q = c.quality || {};
    tr.querySelector("td.caller").textContent = c.caller;
    const state = tr.querySelector("td.state");
    state.textContent = stateText(c.state);
    state.dataset.state = c.state;
    tr.querySelector("td.room").textContent = c.room || t("no_room");
    tr.querySelector("td.trunk").textContent = c.trunk;
    tr.querySelector("td.loss").textContent = lossPercent(c.quality);
    tr.querySelector("td.late").textContent = q.late_frames == null ? "—" : fmtNumber(q.late_frames);
    tr.querySelector("td.jitter").textContent =
      q.jitter_ms == null ? "—" : t("ms", { n: fmtNumber(q.jitter_ms, { maximumFractionDigits: 1 }) });
    tr.querySelector("button.hang-up").setAttribute("aria-label", `${t("hang_up")}: ${c.caller}`);
    body.append(tr); // keeps the API's order (oldest first); a no-op for rows in place
  }
  for (const [id, tr] of callsState.rows) {
    if (seen.has(id)) continue;
    const c = callsState.calls.get(id);
    if (tr.contains(document.activeElement)) $("calls-title").focus();
    tr.remove();
    callsState.rows.delete(id);
    callsState.calls.delete(id);
    if (announceChanges && c) announce(t("call_ended", { caller: c.caller }));
  }
  for (const tr of body.querySelectorAll("tr.empty")) tr.remove();
  if (calls.length === 0) emptyRow(body, 9, t("no_calls"));
  $("calls-summary").textContent =
    calls.length === 1 ? t("calls_count_one") : calls.length === 0 ? "" : t("calls_count", { n: fmtNumber(calls.length) });
  tickDurations();
}

async function hangUp(id) {
  const c = callsState.calls.get(id);
  if (!c) return;
  const ok = await confirmAction({
    title: t("hang_up_title"),
    text: t("hang_up_text", { caller: c.caller, room: c.room || t("no_room") }),
    confirm: t("hang_up_confirm"),
  });
  if (!ok) return;
  try {
    await api("DELETE", `/v1/calls/${encodeURIComponent(id)}`);
    announce(t("hung_up", { caller: c.caller }));
  } catch (err) {
    if (err.status === 404) announce(t("already_ended"));
    else showError($("calls-error"), err);
  }
  if (current === "calls" && callsState.poll) {
    clearTimeout(callsState.timer);
    callsState.poll();
  }
}

// ---------------------------------------------------------------------------------------
// Health

function startHealth() {
  let stopped = false;
  let timer = null;
  const load = async () => {
    timer = null;
    if (stopped || document.hidden) return;
    try {
      const stats = await api("GET", "/v1/stats");
      if (stopped) return;
      showError($("health-error"), null);
      renderHealth(stats);
    } catch (err) {
      if (stopped) return;
      showError($("health-error"), err);
      if (err.status === 401) return;
    }
    if (!stopped) timer = setTimeout(load, HEALTH_POLL_MS);
  };
  const onVisibility = () => {
    if (!document.hidden && !timer && !stopped) load();
  };
  document.addEventListener("visibilitychange", onVisibility);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}

function setState(el, good, goodText, badText) {
  el.textContent = good ? goodText : badText;
  el.classList.toggle("good", good);
  el.classList.toggle("bad", !good);
}

function renderHealth(s) {
  $("health-calls-now").textContent = fmtNumber(Number(s.calls_now) || 0);
  setState($("health-ready"), !!s.ready, t("ready_yes"), t("ready_no"));
  setState($("health-overloaded"), !s.overloaded, t("overloaded_no"), t("overloaded_yes"));

  const dl = $("health-by-state");
  dl.replaceChildren();
  for (const [state, n] of Object.entries(s.calls_by_state || {})) {
    const dt = document.createElement("dt");
    dt.textContent = stateText(state);
    const dd = document.createElement("dd");
    dd.textContent = fmtNumber(Number(n) || 0);
    dl.append(dt, dd);
  }

  const body = $("failures-body");
  body.replaceChildren();
  const failures = Object.entries(s.pin_failures_by_trunk || {});
  if (failures.length === 0) emptyRow(body, 2, t("no_failures"));
  for (const [trunk, n] of failures) {
    const tr = document.createElement("tr");
    cell(tr, t("col_trunk"), trunk);
    cell(tr, t("col_failures"), fmtNumber(Number(n) || 0), "num");
    body.append(tr);
  }

  renderChart(Array.isArray(s.history) ? s.history : [], Number(s.calls_now) || 0);
}

function svg(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// A line of calls per minute (oldest first) ending in "now": presentation attributes and
// classes only, so it draws under `style-src 'self'`.
function renderChart(history, now) {
  const W = 1000;
  const H = 240;
  const pad = { left: 40, right: 16, top: 12, bottom: 28 };
  const points = history
    .map((h) => ({ at: Date.parse(h.at), calls: Number(h.calls) || 0 }))
    .filter((p) => !Number.isNaN(p.at));
  const t1 = Date.now();
  points.push({ at: t1, calls: now });
  const max = Math.max(1, ...points.map((p) => p.calls));
  // The axis always spans the hour, so a gateway that has just started shows a short line
  // at the right-hand end rather than a few minutes stretched across the whole width.
  const t0 = Math.min(points[0].at, t1 - HISTORY_MS);
  const x = (at) => pad.left + ((at - t0) / (t1 - t0)) * (W - pad.left - pad.right);
  const y = (n) => H - pad.bottom - (n / max) * (H - pad.top - pad.bottom);
  const minutes = Math.round((t1 - t0) / 60_000);

  const chart = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    class: "line-chart",
    preserveAspectRatio: "xMidYMid meet",
  });
  const label = t("chart_label", { minutes, max: fmtNumber(max), now: fmtNumber(now) });
  chart.setAttribute("aria-label", label);
  chart.append(svg("title", {}, label));
  // Grid: the baseline and the top value.
  chart.append(svg("line", { x1: pad.left, x2: W - pad.right, y1: y(0), y2: y(0), class: "axis" }));
  chart.append(svg("line", { x1: pad.left, x2: W - pad.right, y1: y(max), y2: y(max), class: "grid" }));
  chart.append(svg("text", { x: pad.left - 6, y: y(0) + 4, "text-anchor": "end", class: "tick" }, "0"));
  chart.append(svg("text", { x: pad.left - 6, y: y(max) + 4, "text-anchor": "end", class: "tick" }, fmtNumber(max)));
  chart.append(
    svg("text", { x: pad.left, y: H - 8, "text-anchor": "start", class: "tick" }, fmtTime(new Date(t0))),
  );
  chart.append(svg("text", { x: W - pad.right, y: H - 8, "text-anchor": "end", class: "tick" }, t("chart_now")));
  const coords = points.map((p) => `${x(p.at).toFixed(1)},${y(p.calls).toFixed(1)}`).join(" ");
  const area = `${x(points[0].at).toFixed(1)},${y(0).toFixed(1)} ${coords} ${x(t1).toFixed(1)},${y(0).toFixed(1)}`;
  chart.append(svg("polygon", { points: area, class: "area" }));
  chart.append(svg("polyline", { points: coords, class: "line" }));
  const last = points[points.length - 1];
  chart.append(svg("circle", { cx: x(last.at), cy: y(last.calls), r: 4, class: "now" }));

  $("health-chart").replaceChildren(chart);
  $("health-chart-empty").hidden = history.length > 0;
}

// ---------------------------------------------------------------------------------------

const STARTERS = {
  signin: () => {},
  pins: startPins,
  calls: startCalls,
  health: startHealth,
};

applyLanguage();
navigate();
