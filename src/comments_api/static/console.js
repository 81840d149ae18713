// comments-api moderation console (/moderation): an ES module, no framework, no build.
// The credential lives in sessionStorage (this tab only) and is never put in a URL.
// Everything user-written reaches the page through textContent only.

const STORE_KEY = "comments-api.moderation.credential";
const MAX_BULK = 100;
const PAGE = 50;
const WAIT = 30000; // ms: a request that has not answered by then is given up

const $ = (id) => document.getElementById(id);
const message = $("message");
const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

// The API's text that prints nothing (rules.BLANK_PATTERN; a test keeps the copies equal).
const BLANK = /^[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0]*(?![\s\S])/;
// Plane 14 (tag characters) prints nothing too; a pattern without the u flag cannot name
// it, so the API's checks add it to BLANK's set (rules.py) and so does this.
const PLANE_14 = /[\u{e0000}-\u{e0fff}]/gu;
// Paragraphs with one blank line between them and none around: a word under a thousand
// line breaks would push everything after it pages down. Display only; the API keeps the
// text as written.
function withoutBlankRuns(text) {
  const lines = [];
  for (const line of String(text ?? "").split(/\r?\n/)) {
    const blank = BLANK.test(line.replace(PLANE_14, ""));
    if (blank && (!lines.length || lines[lines.length - 1] === "")) continue;
    lines.push(blank ? "" : line);
  }
  if (lines[lines.length - 1] === "") lines.pop();
  return lines.join("\n");
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) el.append(c);
  return el;
}

let said = 0; // messages said so far
let saying = null; // the timer that shows the last one

function say(text, kind = "ok") {
  said++;
  clearTimeout(saying); // a message still to show gives way to this one
  message.className = `message ${kind}`;
  message.textContent = "";
  // A fresh node so screen readers announce a repeated message again.
  saying = setTimeout(() => (message.textContent = text), 30);
}

function time(iso) {
  const d = new Date(iso);
  return h("time", { datetime: iso, text: Number.isNaN(d.getTime()) ? iso : when.format(d) });
}

// --- API ------------------------------------------------------------------------

function credential() {
  return sessionStorage.getItem(STORE_KEY);
}

// A request's answer belongs to the session it was asked in. One that comes after a sign-out
// (and maybe the next sign-in) says nothing and changes nothing: no "Approved 1 comment." or
// "Lifted the ban on email:…" on the sign-in screen, no listing asked with no credential,
// and the old credential's 401 does not sign the next one out.
let session = 0; // sign-outs so far

function inSession() {
  const asked = session;
  return () => asked === session;
}

class ApiError extends Error {
  constructor(status, detail, data) {
    super(detail);
    this.status = status;
    this.data = data;
  }
}

// What to say when the answer is not the API's problem+json (a proxy's error page).
function plainly(status, wait) {
  if (status >= 500) return `The server is unavailable right now (HTTP ${status}). Retry in ${wait || "a moment"}.`;
  if (status === 403) return `This credential may not do this (HTTP ${status}).`;
  return `The request failed (HTTP ${status}).`;
}

// How long a 429 or 503 asks to wait (Retry-After: seconds, or an HTTP date as proxies
// send it), in words; null when it does not say.
function retryAfter(response) {
  const after = (response.headers.get("Retry-After") || "").trim();
  let seconds = /^\d+$/.test(after) ? Number(after) : null;
  const at = seconds === null && / GMT$/.test(after) ? Date.parse(after) : Number.NaN;
  if (!Number.isNaN(at)) seconds = Math.max(1, Math.ceil((at - Date.now()) / 1000));
  return seconds === null ? null : `${seconds} second${seconds === 1 ? "" : "s"}`;
}

// When the server read a listing (its read_at, the server's clock; else its answer's Date,
// stamped after the read, from an older server): a row's text is what the moderator saw as
// of then (readAt, by comment id).
const READ_AT = Symbol("read at");
const readAt = new Map();

async function api(path, { method = "GET", body } = {}) {
  const still = inSession();
  const headers = { Authorization: `Bearer ${credential()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // A timer rather than AbortSignal.timeout(): the tests fast-forward it with a fake clock.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), WAIT);
  let response;
  let data = null;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
      signal: abort.signal,
    });
    // The deadline covers the body too: a 2xx whose headers came and whose body stalled is
    // given up as one that never came (it is not "an answer the console cannot read"). An
    // error's status says enough without its body.
    if ((response.headers.get("content-type") || "").includes("json")) {
      data = await response.json().catch((err) => {
        if (abort.signal.aborted && response.ok) throw err;
        return null;
      });
    }
  } catch {
    const late = abort.signal.aborted ? ` did not answer within ${WAIT / 1000} seconds` : " could not be reached";
    throw new ApiError(0, `The server${late}. Check the connection and retry.`);
  } finally {
    clearTimeout(timer);
  }
  if (response.ok) {
    // Every answer the console reads is a JSON object (204: none at all).
    if (response.status === 204) return data;
    if (data && typeof data === "object" && !Array.isArray(data)) {
      const read = typeof data.read_at === "string" ? Date.parse(data.read_at) : Number.NaN;
      const date = Number.isNaN(read) ? Date.parse(response.headers.get("Date") || "") : read;
      if (!Number.isNaN(date)) data[READ_AT] = date;
      return data;
    }
    throw unreadable(response.status);
  }
  const wait = retryAfter(response);
  let detail = data && typeof data.detail === "string" ? data.detail : plainly(response.status, wait);
  const errors = data && Array.isArray(data.errors) ? data.errors.filter((e) => e && typeof e.message === "string") : [];
  if (errors.length) {
    const said = errors.map((e) => (typeof e.field === "string" && e.field ? `${e.field} ${e.message}` : e.message));
    detail = `${detail.replace(/\.$/, "")}: ${said.join("; ")}`;
  }
  if (response.status === 429) detail = `Too many requests; wait ${wait || "a moment"} and retry.`;
  else if (response.status === 503 && wait && data && typeof data.detail === "string") {
    detail = `${detail.replace(/\.?$/, ".")} Wait ${wait} and retry.`;
  }
  if (response.status === 401 && still()) {
    signOut("The credential was refused (wrong, expired or revoked). Sign in again.");
  }
  throw new ApiError(response.status, detail, data);
}

// A listing's failure is noted on its list (the queue, By content, the bans, the audit log):
// once the same listing gets through, the error no longer stands on the page ("The server is
// unavailable" over a queue that loaded), unless something else was said since. `text` is
// what to say, when more than the error.
function failed(err, list = null, text = err.message) {
  if (err.status === 401) return;
  say(text, "error");
  if (list) list.failed = said;
}

function recovered(list) {
  unsay(list.failed);
  list.failed = null;
}

// Takes back a message if it is still the last one said (its number: `said` after say()).
function unsay(number) {
  if (number !== said) return;
  clearTimeout(saying);
  message.textContent = "";
}

// JSON of another shape (a proxy's, a cache's): an error the moderator can read, never a TypeError.
function unreadable(status = 200) {
  return new ApiError(status, `The server sent an answer the console cannot read (HTTP ${status}). Retry in a moment.`);
}

// The items of a listing; entries that are not objects (null, a number) are left out.
function listed(data) {
  if (data && Array.isArray(data.items)) return data.items.filter((item) => item && typeof item === "object");
  throw unreadable();
}

// Listing answers can come out of order (a slow one, then a quicker one): only the latest
// listing asked is drawn, and a "Load more" page only onto the list it continues. A list
// holds `asked` (fresh listings asked) and `shown` (fresh listings drawn).
function ticket(list, more = false) {
  const asked = more ? list.asked : ++list.asked;
  const shown = list.shown;
  return () => asked === list.asked && (!more || shown === list.shown);
}

// "Load more" waits for its page (a second click would ask for the same one again). When it
// goes with the last page, the keyboard moves to the first row it brought, not to nothing.
async function loadMore(button, body, load) {
  const still = inSession();
  const before = body.children.length;
  await busy([button], load);
  if (!still()) return; // signed out meanwhile: the next session's focus is its own
  const now = document.activeElement;
  const first = body.children[before];
  // Lost as busy() has it: on the page, on a panel around the button (a click on it while
  // disabled puts it there), or on the hidden button itself.
  if (!button.hidden || (now && !now.contains(button))) return;
  if (!first) {
    // The last page came empty (its comments moderated meanwhile): said on the list's status
    // line, and the keyboard goes to the last row shown, else to the panel.
    const panel = button.closest("[role=tabpanel]");
    panel.querySelector("[role=status]").textContent = "Nothing more to load.";
    const last = [...body.children].reverse().find((row) => !row.hidden);
    const control = last && last.querySelector("button:enabled, input:enabled");
    (control || panel).focus();
    return;
  }
  const target = first.querySelector("button, input") || first.querySelector("td");
  if (target.tagName === "TD") target.tabIndex = -1;
  target.focus();
}

// The controls that started a request stay disabled until it has an answer, whatever it is,
// so a second click cannot send the action again. Focus lost meanwhile goes back. A sign-out
// gives them back at once (waiting holds them): the next session starts with every control
// usable, and the old request's late end enables (or focuses) nothing of that session's.
const waiting = new Set();

async function busy(controls, work) {
  const still = inSession();
  const els = controls.filter(Boolean);
  const focused = document.activeElement;
  for (const el of els) {
    el.disabled = true;
    waiting.add(el);
  }
  try {
    return await work();
  } finally {
    if (still()) {
      for (const el of els) {
        el.disabled = false;
        waiting.delete(el);
      }
      // Lost: on the page itself, or on a panel around the button (where a click on it puts it).
      const now = document.activeElement;
      if (els.includes(focused) && focused.isConnected && (!now || now.contains(focused))) focused.focus();
    }
  }
}

// A fresh listing on its way (the queue's: Refresh, the Status select, the Queue tab, sign-in;
// By content's; the bans' and the audit log's: their tab, their Refresh) shows it, as "Load
// more" does: its button is disabled (a double click lists once) and says so ("Refreshing…"),
// the table is aria-busy, and a status line tells screen readers. It ends when the latest
// listing asked is drawn or fails (a 502, the 30 s give-up), or at a sign-out. The list's `ui`
// names the elements and words. A fresh listing also asks again the audit log check that
// failed at sign-in.
function listing(list, on, summary = "") {
  const { button, idle, working, table, progress, loading } = list.ui;
  const el = $(button);
  if (on && !el.disabled) list.refocus = document.activeElement === el; // the first one's
  el.disabled = on;
  el.textContent = on ? working : idle;
  if (on) $(table).setAttribute("aria-busy", "true");
  else $(table).removeAttribute("aria-busy");
  $(progress).textContent = on ? loading : summary;
  if (on) {
    checkAudit(); // asked again if it failed (at sign-in or since); else nothing
    return;
  }
  // Lost as busy() has it: on the page, or on a panel around the button.
  const now = document.activeElement;
  if (list.refocus && (!now || now.contains(el))) el.focus();
  list.refocus = false;
}

// --- sign in --------------------------------------------------------------------

function signOut(text) {
  session++; // what is on its way no longer answers here
  sessionStorage.removeItem(STORE_KEY);
  // Nothing read with that credential stays on the page (comments, emails, the audit log),
  // and the next sign-in, maybe without admin scope, starts at the queue, not a hidden tab.
  for (const id of ["queue-body", "content-body", "bans-body", "audit-body", "ban-lookup-result"]) $(id).replaceChildren();
  for (const id of ["queue-table", "queue-empty", "queue-more", "content-table", "bans-table", "audit-table", "content-empty", "content-more", "bans-empty", "bans-more", "audit-more", "audit-empty"]) $(id).hidden = true;
  queue.items.clear();
  queue.author = null; // an email is something read with that credential too
  if (queue.status === "published") queue.status = "pending"; // only an author's: gone with them
  erasing.clear(); // a deletion on its way no longer reports here
  showAuthor();
  inFlight.clear(); // the next session's rows wait for its own actions only
  lifting.clear();
  for (const el of waiting) el.disabled = false; // "Ban author", the bulk buttons, "Load more"…
  waiting.clear();
  for (const list of [queue, content, banList, audit]) list.asked++; // answers on their way: not drawn
  countSelected();
  select($("tab-queue"), false, false);
  $("retry").hidden = true;
  $("app").hidden = true;
  for (const list of [queue, content, banList, audit]) listing(list, false); // nor waited for
  Object.assign(access, { audit: null, asking: false, failed: null }); // the next one's to ask
  $("tab-audit").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("credential").value = "";
  if (text) say(text, "error");
  $("credential").focus();
}

async function start() {
  const still = inSession();
  if (!credential()) {
    $("sign-in").hidden = false;
    return;
  }
  // The check of the credential on its way (from the form, "Try again", or a reload with one
  // kept): said, in place of the last try's error, and "Sign in" waits for it.
  say("Signing in…");
  const signing = said;
  try {
    await busy([$("sign-in-submit")], () => api("/api/v1/moderation/pending?limit=1"));
  } catch (err) {
    if (err.status === 403) signOut("This credential has no moderation scope (comments:moderate or admin).");
    else if (err.status !== 401) {
      // The server is down or a proxy answered: try the same credential again later.
      failed(err);
      $("retry").hidden = false;
      // A reload's try left the keyboard on nothing: on it, for the next try. ("Try again"
      // itself gives the focus back to itself when its try fails.)
      if (!document.activeElement || document.activeElement === document.body) $("retry").focus();
    }
    return;
  }
  unsay(signing);
  $("retry").hidden = true;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  const apiKey = credential().startsWith("cak_");
  $("who-text").textContent = `Signed in with ${apiKey ? "an API key" : "a moderator token"}.`;
  checkAudit(); // beside the first listing, which then does not ask it again
  await loadQueue(false);
  if (still()) $("tab-queue").focus();
}

// Whether this credential may read the audit log (admin scope) is asked at sign-in, and its
// tab shown on a yes. A failed check (a 502, the 30 s give-up) is no answer, not a no: the
// admin is told, and it is asked again with the next fresh listing (Refresh, a tab), until
// one answers. Then the tab is shown, and said to be if the failure was the last word.
const access = { audit: null, asking: false, failed: null }; // audit: true, false, null (not known)

async function checkAudit() {
  if (access.audit !== null || access.asking) return;
  const still = inSession();
  access.asking = true;
  let answer = null;
  try {
    await api("/api/v1/admin/audit-log?limit=1");
    answer = true;
  } catch (err) {
    if (err.status === 403) answer = false;
    else if (still()) {
      const text = `Could not check whether this credential may read the audit log: ${err.message} It is checked again with the next listing (Refresh, a tab).`;
      failed(err, access, text);
    }
  }
  if (!still()) return; // signed out meanwhile: the next session asks its own
  access.asking = false;
  if (answer === null) return;
  access.audit = answer;
  $("tab-audit").hidden = !answer;
  const told = access.failed === said; // the failure is still the last word
  recovered(access);
  if (answer && told) say("This credential may read the audit log: its tab is shown.");
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  // Pasted from a request's header ("Bearer …") it is still the credential.
  const value = $("credential").value.trim().replace(/^Bearer\s+/i, "");
  if (!value) {
    say("Paste an API key or a JWT first.", "error");
    $("credential").focus();
    return;
  }
  // API keys and JWTs are printable ASCII only. Anything else (a zero-width space or an
  // ellipsis copied along with it) cannot go in a header: fetch would refuse to send it,
  // and that was said as "The server could not be reached", with a "Try again" that could
  // never get through.
  if (!/^[\x21-\x7e]+$/.test(value)) {
    say("This is not an API key or a JWT: it holds a space or a character they never have (copied with the text around it?). Paste the credential alone.", "error");
    $("credential").focus();
    return;
  }
  sessionStorage.setItem(STORE_KEY, value);
  $("credential").value = "";
  message.textContent = "";
  $("retry").hidden = true; // a new credential: its own try, and no second one meanwhile
  start();
});
// "Try again" stays in view while it tries, as Refresh does: disabled (a second press waits)
// and reading "Trying again…", with "Signing in…" said. Signed in, it goes; failed again (a
// 502, the 30 s give-up), it is back as it was, the keyboard on it for the next try.
$("retry").addEventListener("click", async () => {
  const retry = $("retry");
  retry.textContent = "Trying again…";
  await busy([retry], start);
  retry.textContent = "Try again";
});
$("sign-out").addEventListener("click", () => {
  signOut();
  say("Signed out.");
});

// --- tabs (WAI-ARIA tabs pattern: arrow keys move between tabs) ------------------

const tabs = [...document.querySelectorAll("[role=tab]")];
const loaders = {
  "tab-queue": () => relist(queue, () => loadQueue(false)),
  "tab-bans": () => relist(banList, loadBans),
  "tab-audit": () => relist(audit, () => loadAudit(false)),
};

// Selecting a tab lists its list, and selecting it again lists it anew (a refresh, as its
// Refresh button), but not while a listing of it is on its way: a click on the selected tab
// (or the arrow keys back to it) waits for that one, as the disabled Refresh does, rather
// than send the same listing twice.
function relist(list, load) {
  if (!$(list.ui.button).disabled) load();
}

function select(tab, focus = true, load = true) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  if (focus) tab.focus();
  const loader = loaders[tab.id];
  if (load && loader) loader();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const visible = tabs.filter((t) => !t.hidden);
    const i = visible.indexOf(tab);
    let next = null;
    if (event.key === "ArrowRight") next = visible[(i + 1) % visible.length];
    if (event.key === "ArrowLeft") next = visible[(i - 1 + visible.length) % visible.length];
    if (event.key === "Home") next = visible[0];
    if (event.key === "End") next = visible[visible.length - 1];
    if (next) {
      event.preventDefault();
      select(next);
    }
  });
}

// --- moderation actions -----------------------------------------------------------

// The console's actions, as the moderator sees them. Approving a hidden comment publishes it
// again: the Hidden view's buttons say "Publish", and so does the message after them.
const PAST = { approve: "Approved", publish: "Published", hide: "Hid", delete: "Deleted" };
const SENT = { publish: "approve" }; // the API's name, where it differs

// The API's 404, 409 and 412 to an action: the comments are not as the list showed them
// (another moderator, another tab, a stale precondition). Said as such, and the caller lists
// them again, so the next click acts on what is, not on what was.
function stale(err) {
  return Boolean(err && err.data) && [404, 409, 412].includes(err.status);
}

// `seen`: the status the list showed these comments in. The API then acts only on those
// still in it: a Hide on a queue row a colleague approved meanwhile would otherwise hide a
// published comment, and be told "Hid 1 comment."
async function moderate(action, ids, seen, controls = [], skipped = []) {
  if (!ids.length) {
    say("Select at least one comment first.", "error");
    return null;
  }
  if (action === "delete" && !window.confirm(`Delete ${ids.length} comment(s)? Deleted comments cannot be restored.`)) {
    return null;
  }
  const still = inSession();
  const sent = SENT[action] || action; // the API's name
  const changed = [];
  const unchanged = [];
  const done = []; // the ids of the calls answered, whatever the later ones do
  let error = null;
  try {
    await busy(controls, async () => {
      for (let i = 0; i < ids.length; i += MAX_BULK) {
        const part = ids.slice(i, i + MAX_BULK);
        const body = { action: sent, ids: part, if_status: [seen] };
        // An approve publishes the text the moderator read: a comment its author edited
        // after the list was read is left unchanged (and listed anew with its new text).
        const read = part.map((id) => readAt.get(id));
        if (sent === "approve" && read.every(Number.isFinite)) body.if_unedited_since = new Date(Math.min(...read)).toISOString();
        const result = await api("/api/v1/moderation/comments", { method: "POST", body });
        if (!result || !Array.isArray(result.changed) || !Array.isArray(result.unchanged)) throw unreadable();
        changed.push(...result.changed);
        unchanged.push(...result.unchanged);
        done.push(...part);
      }
    });
  } catch (err) {
    error = err;
  }
  if (!still()) return null; // signed out meanwhile: nothing said, no row touched
  // A failure after some calls of a bulk action were answered: what they did is said (and
  // their rows go), else a retry would report them "unchanged" with no word of who did it.
  if (error && stale(error) && !done.length) {
    const them = ids.length === 1 ? `Comment ${ids[0]}` : `Comments ${ids.join(", ")}`;
    say(`${PAST[action]} no comment (HTTP ${error.status}): ${error.message.replace(/\.?$/, ".")} ${them} may have been moderated meanwhile; the list is shown anew.`, "error");
    return { changed, unchanged, done, stale: true };
  }
  if (error && (!done.length || error.status === 401)) {
    failed(error);
    return null;
  }
  if (!error && !changed.length && unchanged.length) {
    // Nothing done: not a success to show in green. The list is shown as it is now.
    const them = unchanged.length === 1 ? `Comment ${unchanged[0]} is` : `Comments ${unchanged.join(", ")} are`;
    const why = sent === "approve" ? `no longer ${seen} as listed (moderated or edited meanwhile, or gone)` : `no longer ${seen} (moderated meanwhile, or gone)`;
    say(`${PAST[action]} no comment: ${them} ${why}; the list is shown anew.`, "error");
    return { changed, unchanged, done, stale: true };
  }
  let text = `${PAST[action]} ${changed.length} comment${changed.length === 1 ? "" : "s"}.`;
  if (unchanged.length) text += ` ${unchanged.length} unchanged (already moderated${sent === "approve" ? ", edited since listed" : ""} or gone): ${unchanged.join(", ")}.`;
  if (skipped.length) text += ` ${skipped.length} left out (an action on it is still on its way): ${skipped.join(", ")}.`;
  if (error) text += ` ${ids.length - done.length} more failed: ${error.message}`;
  if (stale(error)) text += " The list is shown anew.";
  say(text, error ? "error" : "ok");
  return { changed, unchanged, done, stale: stale(error) };
}

// --- the queue: pending or hidden comments, of every content or one ----------------
// (and, in the author view only, the author's published ones)

// What the list shows: the status, content and author it was loaded for (changing any
// reloads). The author (an author key, `sub:…` or `email:…`) is set by a row's "This
// author's comments" and cleared by "Clear author filter"; Status, Refresh, the Queue tab and
// "Load more" keep it.
const queue = {
  items: new Map(), cursor: null, status: "pending", content: "", author: null, asked: 0, shown: 0, failed: null,
  ui: {
    button: "queue-refresh", idle: "Refresh", working: "Refreshing…",
    table: "queue-table", progress: "queue-progress", loading: "Loading the queue…",
  },
};

// Comments with an action on its way. Until its answer no other action, row or bulk, may
// include them (it could only come back "unchanged"): their row's buttons and checkbox stay
// disabled, also when a refresh draws the row anew.
const inFlight = new Set();

function settle(row) {
  const on = inFlight.has(Number(row.dataset.id));
  for (const el of row.querySelectorAll("button, input")) el.disabled = on;
}

function checkbox(row) {
  return row.querySelector("input[type=checkbox]");
}

// How the queue speaks of each status it lists: its caption, and "no comments are …".
const STATUS_WORDS = {
  pending: { caption: "Comments waiting for a moderator", none: "No comments are waiting for moderation" },
  hidden: { caption: "Hidden comments", none: "No comments are hidden" },
  published: { caption: "Published comments", none: "No comments are published" },
};

// The Status select offers "Published comments" in the author view only: the API lists
// published comments of one author or one content, and refuses (400) those of every content.
// showAuthor() adds it with the author's bar and takes it away with it.
const publishedOption = h("option", { value: "published", text: "Published comments" });

function queueRow(c) {
  const box = h("input", { type: "checkbox", "aria-label": `Select comment ${c.id}`, "data-id": String(c.id) });
  box.addEventListener("change", countSelected);
  const who = [c.author && c.author.name, c.author_email, c.author_subject && `sub:${c.author_subject}`].filter(Boolean);
  const key = authorKey(c);
  const row = h(
    "tr",
    { "data-id": String(c.id) },
    h("td", null, box),
    // Readers' text takes its direction from itself (dir=auto): Arabic reads right to left.
    h("td", { class: "text", dir: "auto", text: withoutBlankRuns(c.body) }),
    h("td", null, ...who.map((w, i) => h("div", { class: i ? "meta" : null, dir: "auto", text: w }))),
    h("td", null, h("code", { text: c.content_id }), c.parent_id ? h("div", { class: "meta", text: `reply to #${c.parent_id}` }) : null),
    h("td", null, time(c.created_at)),
    h(
      "td",
      null,
      h("div", { class: "toolbar" },
        // A published comment is approved already: Hide and Delete only, as By content's rows.
        queue.status === "published"
          ? null
          : queue.status === "hidden"
            ? h("button", { type: "button", text: "Publish", "aria-label": `Publish comment ${c.id}`, onclick: () => queueAction("publish", [c.id]) })
            : h("button", { type: "button", text: "Approve", "aria-label": `Approve comment ${c.id}`, onclick: () => queueAction("approve", [c.id]) }),
        queue.status === "hidden"
          ? null
          : h("button", { type: "button", class: "secondary", text: "Hide", "aria-label": `Hide comment ${c.id}`, onclick: () => queueAction("hide", [c.id]) }),
        h("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete comment ${c.id}`, onclick: () => queueAction("delete", [c.id]) }),
        key && key !== queue.author
          ? h("button", { type: "button", class: "secondary", text: "This author's comments", "aria-label": `This author's comments (${key})`, onclick: (event) => showAuthorOf(key, event.currentTarget) })
          : null)
    )
  );
  row.searchText = [c.body, c.content_id, ...who].join(" ").toLowerCase();
  settle(row);
  return row;
}

// `same`: the status and content shown, not what the filter now reads (a content typed and
// not yet asked for is the moderator's next listing, not this one's). `author`: the author
// to list (null: every one), else the one shown; `content`: the content to list, instead of
// the one typed (put in the field once the listing is drawn); `status`: the status to list,
// instead of the one selected (selected once the listing is drawn).
async function loadQueue(more, { same = more, author = queue.author, content: asked, status: wanted } = {}) {
  let status = same ? queue.status : wanted ?? $("queue-status").value;
  // Published comments are listed of one author only (the API refuses every content's):
  // leaving the author view on "Published comments" lists the pending ones.
  if (status === "published" && !author) status = "pending";
  const content = same ? queue.content : asked ?? $("queue-content").value.trim();
  const query = new URLSearchParams({ status, limit: String(PAGE) });
  if (content) query.set("content_id", content);
  if (author) query.set("author", author);
  if (more && queue.cursor) query.set("cursor", queue.cursor);
  const current = ticket(queue, more);
  if (!more) listing(queue, true);
  let data;
  let items;
  try {
    data = await api(`/api/v1/moderation/comments?${query}`);
    items = listed(data);
  } catch (err) {
    if (!current()) return; // a later listing (or a sign-out) took over, busy state and all
    if (more) return failed(err, queue);
    listing(queue, false);
    // The table keeps what it showed, and so does the Status select (not "Hidden comments"
    // over pending ones and their Approve and Hide buttons). A content typed stays, for
    // Refresh to ask again; the message says what is still shown when it was another.
    $("queue-status").value = queue.status;
    const other = queue.shown && (status !== queue.status || content !== queue.content || author !== queue.author);
    failed(err, queue, other ? `${err.message} ${stillShown()}` : err.message);
    return;
  }
  if (!current()) return;
  recovered(queue);
  const body = $("queue-body");
  if (!more) {
    queue.shown++;
    Object.assign(queue, { status, content, author });
    if (asked !== undefined) $("queue-content").value = content;
    showAuthor(); // offers "Published comments" with an author, and not without
    $("queue-status").value = status; // the one drawn: maybe asked by By content, or the fallback
    queue.items.clear();
    body.replaceChildren();
    const hidden = status === "hidden";
    $("bulk-hide").hidden = hidden;
    $("bulk-approve").hidden = status === "published";
    $("bulk-approve").textContent = hidden ? "Publish selected" : "Approve selected";
    $("bulk-approve").dataset.action = hidden ? "publish" : "approve";
    $("queue-caption").textContent = `${STATUS_WORDS[status].caption}${content ? ` of ${content}` : ""}${author ? ` by ${apart(author)}` : ""}, oldest first`;
  }
  for (const c of items) {
    if (queue.items.has(c.id)) continue;
    const row = queueRow(c);
    queue.items.set(c.id, row);
    readAt.set(c.id, data[READ_AT]);
    body.append(row);
  }
  queue.cursor = data.next_cursor;
  $("queue-more").hidden = !data.next_cursor;
  filterQueue();
  if (!more) {
    const n = queue.items.size;
    listing(queue, false, `${n} ${status} comment${n === 1 ? "" : "s"}${author ? ` by ${apart(author)}` : ""} listed${data.next_cursor ? ", more with “Load more”" : ""}.`);
  }
}

function stillShown() {
  return `The queue still shows the ${queue.status} comments of ${queue.content || "every content"}${queue.author ? ` by ${apart(queue.author)}` : ""}.`;
}

function visibleRows() {
  return [...queue.items.values()].filter((row) => !row.hidden);
}

function selectedIds() {
  return visibleRows()
    .filter((row) => checkbox(row).checked)
    .map((row) => Number(row.dataset.id));
}

function countSelected() {
  const n = selectedIds().length;
  $("selected-count").textContent = n ? `${n} selected` : "";
  const free = visibleRows().filter((row) => !inFlight.has(Number(row.dataset.id)));
  $("select-all").checked = free.length > 0 && free.every((row) => checkbox(row).checked);
}

function filterQueue() {
  const needle = $("queue-search").value.trim().toLowerCase();
  for (const row of queue.items.values()) row.hidden = Boolean(needle) && !row.searchText.includes(needle);
  const shown = visibleRows().length;
  $("queue-empty").hidden = shown > 0;
  $("queue-table").hidden = shown === 0; // its scroll box leaves the tab order with it
  const none = STATUS_WORDS[queue.status].none;
  // Emptied by the moderator with more on the server: not "none waiting".
  $("queue-empty").textContent = queue.items.size
    ? "No loaded comment matches the search."
    : queue.cursor
      ? "Every loaded comment is done; “Load more” shows the next ones."
      : `${none}${queue.content ? ` for content ${queue.content}` : ""}${queue.author ? ` by ${apart(queue.author)}` : ""}.`;
  countSelected();
}

async function queueAction(action, wanted, extra = []) {
  // A bulk action leaves out the selected comments that already have an action on its way.
  const ids = wanted.filter((id) => !inFlight.has(id));
  const skipped = wanted.filter((id) => inFlight.has(id));
  if (skipped.length && !ids.length) {
    say(`An action on ${skipped.length === 1 ? "comment" : "comments"} ${skipped.join(", ")} is still on its way; wait for its answer.`, "error");
    return;
  }
  const rows = visibleRows();
  const firstIndex = rows.findIndex((row) => ids.includes(Number(row.dataset.id)));
  // The rows' own buttons and checkboxes (and the bulk buttons, for a bulk action) wait for the answer.
  const acting = ids.flatMap((id) => (queue.items.has(id) ? [...queue.items.get(id).querySelectorAll("button, input")] : []));
  for (const id of ids) inFlight.add(id);
  countSelected();
  const still = inSession();
  let result;
  try {
    result = await moderate(action, ids, queue.status, [...acting, ...extra], skipped);
  } finally {
    // Signed out meanwhile: the sign-out let these go, and the rows now shown (maybe the
    // same comments, with an action of the next session on its way) are not this one's.
    if (still()) {
      for (const id of ids) inFlight.delete(id);
      // A refresh meanwhile drew these rows anew, disabled: give them back too.
      for (const id of ids) if (queue.items.has(id)) settle(queue.items.get(id));
      countSelected();
    }
  }
  if (!result) return;
  // The focus moves only if it is lost: on nothing, on a disabled button, in a row that goes,
  // or on the bulk button used. A moderator who moved on meanwhile (another row, the search
  // box) keeps their place.
  const now = document.activeElement;
  let lost =
    !now || now === document.body || now.disabled || extra.includes(now) ||
    result.done.some((id) => queue.items.has(id) && queue.items.get(id).contains(now));
  // Whatever happened, these are no longer waiting (unchanged ones were moderated elsewhere).
  // But a comment hidden while the moderator opened the Hidden view belongs to that view,
  // whose listing may already show it: its row stays (Hide exists only on pending rows).
  const belongs = action === "hide" && queue.status === "hidden";
  for (const id of belongs ? [] : result.done) {
    const row = queue.items.get(id);
    if (row) row.remove();
    queue.items.delete(id);
  }
  filterQueue();
  if (result.stale) {
    await loadQueue(false, { same: true });
    if (!still()) return;
    // The row the keyboard was on is drawn anew (or gone): lost too.
    lost = lost || !document.activeElement || document.activeElement === document.body;
  }
  if (!lost) return;
  // Keep the keyboard where the work is: the next row that can be acted on, else the search box.
  const left = visibleRows();
  const at = Math.max(0, firstIndex);
  const free = (row) => !inFlight.has(Number(row.dataset.id));
  const next = left.slice(at).find(free) || left.slice(0, at).reverse().find(free);
  (next ? next.querySelector("button") : $("queue-search")).focus();
}

// --- the author view: the queue of one author, and "Delete all by this author" ----------

// A sentence that names an author key sets apart (FSI ... PDI) one holding direction controls
// (a subject from the identity provider; an address stored before they were refused): an
// override in it would reverse the words after it. Other keys are left as they are.
const DIRECTION_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
function apart(key) {
  return DIRECTION_CONTROLS.test(key) ? `\u2068${key}\u2069` : key;
}

// The key the API files a comment's author under, as a ban names it: a signed-in reader's
// subject (whatever email their token gives), else the email; null for neither.
function authorKey(c) {
  if (typeof c.author_subject === "string" && c.author_subject) return `sub:${c.author_subject}`;
  if (typeof c.author_email === "string" && c.author_email) return `email:${c.author_email}`;
  return null;
}

// The bar over the table says whose comments it shows (the author drawn, not one asked for),
// and its "Delete all by this author" and progress line are that author's: "Deleting…" and
// the count so far while a deletion of theirs is on its way, else a usable button.
function showAuthor() {
  $("queue-author").hidden = !queue.author;
  // Appended once (moving a selected option could drop its selection), removed with the author.
  if (queue.author && !publishedOption.isConnected) $("queue-status").append(publishedOption);
  else if (!queue.author) publishedOption.remove(); // selected, the select falls back to pending
  $("queue-author-key").textContent = queue.author || "";
  $("queue-author-scope").textContent = queue.content ? ` on ${queue.content}` : ", on every content";
  const deleting = erasing.get(queue.author);
  const button = $("queue-author-delete");
  button.disabled = Boolean(deleting);
  button.textContent = deleting ? "Deleting…" : "Delete all by this author";
  $("queue-author-progress").textContent = deleting ? deleting.progress : "";
}

// Every content's comments of the author, in the status shown (a queue row's), or in the one
// given (By content's rows: "published"). The row's button waits for the listing; drawn, the
// row is gone, and the keyboard goes to the bar that says whose comments these are. A
// failure leaves the queue as it was, and says what it still shows.
async function showAuthorOf(key, button, status = undefined) {
  const still = inSession();
  await busy([button], () => loadQueue(false, { author: key, content: "", status }));
  if (!still() || queue.author !== key) return;
  const now = document.activeElement;
  if (!now || now === document.body) $("queue-author-text").focus();
}

$("queue-author-clear").addEventListener("click", async (event) => {
  const still = inSession();
  await busy([event.currentTarget], () => loadQueue(false, { author: null }));
  if (!still() || queue.author !== null) return;
  // The bar went with the button: the keyboard goes on at the Status select above the list.
  const now = document.activeElement;
  if (!now || now === document.body) $("queue-status").focus();
});

// The deletions by author on their way: author key -> { progress } (what its bar says). The
// moderator may open another author meanwhile: that author's bar gets its own usable button,
// and this deletion goes on reporting on its own author only, in their bar when it is shown
// and in the message at its end, which lists anew whatever view is shown then.
const erasing = new Map();

// The API deletes at most 1000 of an author's comments per call and answers `more` while
// some are left: called again until it no longer does. A failure after some calls is said
// with what those did, as a bulk action's is; either way the queue is then listed anew.
async function deleteAuthor() {
  const key = queue.author;
  const button = $("queue-author-delete");
  if (!key || erasing.has(key)) return;
  if (!window.confirm(`Delete every comment of ${apart(key)}, pending, hidden and published, on every content? Deleted comments cannot be restored.`)) {
    return;
  }
  const still = inSession();
  const state = { progress: "" };
  let deleted = 0;
  let error = null;
  const them = (n) => `${n} comment${n === 1 ? "" : "s"} of ${apart(key)}`;
  // Not busy(): the button is the bar's, shared by every author, so showAuthor() draws it
  // from `erasing` for whichever author is shown, now and at the end.
  const focused = document.activeElement === button;
  erasing.set(key, state);
  showAuthor();
  try {
    for (let more = true; more && still(); ) {
      const result = await api("/api/v1/moderation/comments", { method: "POST", body: { action: "delete", author: key } });
      if (!result || !Array.isArray(result.changed) || typeof result.more !== "boolean") throw unreadable();
      deleted += result.changed.length;
      // "More" with none deleted would ask forever: not an answer to go on with.
      if (result.more && !result.changed.length) throw unreadable();
      more = result.more;
      if (more && still()) {
        state.progress = `Deleted ${them(deleted)} so far…`;
        if (queue.author === key) $("queue-author-progress").textContent = state.progress;
      }
    }
  } catch (err) {
    error = err;
  }
  if (!still()) return; // signed out meanwhile: the sign-out reset the bar
  erasing.delete(key);
  showAuthor(); // another author's bar is drawn as it was: their button is not this one's
  // Lost as busy() has it (on the page, on the panel, or on the button while disabled): back
  // on the button, if the bar is still this author's.
  const now = document.activeElement;
  if (focused && queue.author === key && (!now || now.contains(button))) button.focus();
  if (error && (!deleted || error.status === 401)) {
    failed(error, null, `Deleted no comment of ${apart(key)}: ${error.message}`);
    return;
  }
  if (error) {
    say(`Deleted ${them(deleted)}, then a call failed: ${error.message} Some of the author's comments are left; “Delete all by this author” again deletes them.`, "error");
  } else {
    say(`Deleted ${them(deleted)}.`);
  }
  await loadQueue(false, { same: true });
}

$("queue-author-delete").addEventListener("click", deleteAuthor);
$("queue-search").addEventListener("input", filterQueue);
$("queue-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("queue-refresh").disabled) return; // a listing is still on its way
  loadQueue(false);
});
$("queue-status").addEventListener("change", () => loadQueue(false));
$("queue-more").addEventListener("click", () => loadMore($("queue-more"), $("queue-body"), () => loadQueue(true)));
$("select-all").addEventListener("change", (event) => {
  // Not the rows whose action is on its way: they cannot be selected for another.
  for (const row of visibleRows()) if (!inFlight.has(Number(row.dataset.id))) checkbox(row).checked = event.target.checked;
  countSelected();
});
// Each bulk button's action is in its data-action, set with its label ("Publish selected").
const bulkButtons = ["approve", "hide", "delete"].map((action) => $(`bulk-${action}`));
for (const button of bulkButtons) {
  button.addEventListener("click", () => queueAction(button.dataset.action, selectedIds(), bulkButtons));
}

// --- comments of one content (published ones can be hidden or deleted) ----------

const content = {
  id: null, cursor: null, asked: 0, shown: 0, failed: null,
  ui: {
    button: "content-show", idle: "Show its comments", working: "Loading…",
    table: "content-table", progress: "content-progress", loading: "Loading the comments…",
  },
};

function contentRow(c) {
  const removed = c.status === "deleted";
  const key = removed ? null : authorKey(c);
  const actions = removed
    ? []
    : [
        h("button", { type: "button", class: "secondary", text: "Hide", "aria-label": `Hide comment ${c.id}`, onclick: () => contentAction("hide", c.id) }),
        h("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete comment ${c.id}`, onclick: () => contentAction("delete", c.id) }),
        key
          ? h("button", { type: "button", class: "secondary", text: "This author's comments", "aria-label": `This author's comments (${key})`, onclick: (event) => contentAuthor(key, event.currentTarget) })
          : null,
      ];
  const row = h(
    "tr",
    { "data-id": String(c.id) },
    h("td", { class: "text", dir: removed ? null : "auto", text: removed ? "(removed)" : withoutBlankRuns(c.body) }),
    h("td", { dir: "auto", text: c.author ? c.author.name : "" }),
    h("td", { text: c.status }),
    h("td", null, time(c.created_at)),
    h("td", null, h("div", { class: "toolbar" }, ...actions))
  );
  settle(row); // drawn anew while an action on it is on its way: it waits too
  return row;
}

// The author view is the queue's: its tab is shown, and the author's comments of every
// content listed there, with "Delete all by this author". Their published ones, as the row
// opened from is: the pending ones are often none, which would read as "nothing by them".
function contentAuthor(key, button) {
  select($("tab-queue"), false, false);
  return showAuthorOf(key, button, "published");
}

// The moderation listing of the content's published comments (not the public list, which
// names no author): the authors' keys for "This author's comments", read fresh, not from a
// cache. Tombstones are not listed: nothing is left to act on.
// content.id is the content shown (set when its listing is drawn): "Load more" goes on with
// it, whatever was typed since (a listing of another that failed leaves the first one shown).
async function loadContent(more, id = content.id) {
  const cursor = more ? content.cursor : null;
  const current = ticket(content, more);
  if (!more) listing(content, true);
  let data;
  let items;
  try {
    const query = new URLSearchParams({ status: "published", content_id: id, limit: String(PAGE) });
    if (cursor) query.set("cursor", cursor);
    data = await api(`/api/v1/moderation/comments?${query}`);
    items = listed(data);
  } catch (err) {
    if (!current()) return; // a later listing (or a sign-out) took over, busy state and all
    if (!more) listing(content, false);
    failed(err, content);
    return;
  }
  if (!current()) return;
  recovered(content);
  const body = $("content-body");
  if (!more) {
    content.shown++;
    content.id = id;
    $("content-caption").textContent = `Public comments of ${id}, oldest first`;
    body.replaceChildren();
  }
  body.append(...items.map(contentRow));
  content.cursor = data.next_cursor;
  $("content-more").hidden = !data.next_cursor;
  contentShown();
  if (!more) {
    const n = body.children.length;
    listing(content, false, `${n} comment${n === 1 ? "" : "s"} of ${content.id} listed${data.next_cursor ? ", more with “Load more”" : ""}.`);
  }
}

// The table, or a note when it has no row (also once the last one is hidden).
function contentShown() {
  const rows = $("content-body").children.length;
  $("content-table").hidden = rows === 0;
  $("content-empty").hidden = rows > 0;
  $("content-empty").textContent = content.cursor
    ? "Every loaded comment is hidden; “Load more” shows the next ones."
    : "This content has no public comments.";
}

async function contentAction(action, id) {
  const acting = $("content-body").querySelector(`tr[data-id="${id}"]`);
  const still = inSession();
  inFlight.add(id);
  let result;
  try {
    result = await moderate(action, [id], "published", acting ? [...acting.querySelectorAll("button")] : []);
  } finally {
    if (still()) {
      inFlight.delete(id);
      // A listing meanwhile drew the row anew, disabled: give it back.
      const drawn = $("content-body").querySelector(`tr[data-id="${id}"]`);
      if (drawn) settle(drawn);
    }
  }
  if (!result) return;
  if (result.stale) {
    await loadContent(false);
    if (still() && (!document.activeElement || document.activeElement === document.body)) $("content-id").focus();
    return;
  }
  const row = $("content-body").querySelector(`tr[data-id="${id}"]`);
  if (!row) return;
  // The focus moves only if it is lost (on nothing, on a disabled button, or in the row that
  // goes), as after a queue action: a moderator who moved on meanwhile (another row, the
  // content id) keeps their place.
  const now = document.activeElement;
  const lost = !now || now === document.body || now.disabled || row.contains(now);
  if (action === "hide") {
    row.remove();
    contentShown();
    if (lost) $("content-id").focus();
  } else {
    const replacement = contentRow({ id, status: "deleted", created_at: row.querySelector("time").dateTime });
    row.replaceWith(replacement);
    replacement.querySelector("td").tabIndex = -1;
    if (lost) replacement.querySelector("td").focus();
  }
}

$("content-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if ($("content-show").disabled) return; // a listing is still on its way
  const id = $("content-id").value.trim();
  if (id) loadContent(false, id);
});
$("content-more").addEventListener("click", () => loadMore($("content-more"), $("content-body"), () => loadContent(true)));

// --- bans -------------------------------------------------------------------------

const banList = {
  cursor: null, asked: 0, shown: 0, failed: null,
  ui: {
    button: "bans-refresh", idle: "Refresh", working: "Refreshing…",
    table: "bans-table", progress: "bans-progress", loading: "Loading the bans…",
  },
};

// What a ban stops, as the API applies it: said under the form (for the kind chosen) and
// under each ban listed, so a moderator knows whom an email ban reaches.
const COVERS = {
  email: "stops new comments and edits that give this address, and those of a signed-in reader whose token carries it",
  subject: "stops new comments and edits of the signed-in reader with this token subject, whatever email they give",
};

function showCovers() {
  const kind = $("ban-kind").value;
  $("ban-covers").textContent = `A ban by ${kind === "email" ? "email" : "token subject"} ${COVERS[kind]}. Comments already posted stay as they are.`;
}

// The bans, newest first, a page at a time as the audit log's: a fresh listing (the tab,
// Refresh, a new ban) draws the first page, "Load more bans" adds the next. A ban already
// shown is not drawn twice (a replica of the release before answers every ban, whatever
// the cursor, while an upgrade rolls out).
async function loadBans(more = false) {
  const current = ticket(banList, more);
  if (!more) listing(banList, true);
  let data;
  let items;
  try {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (more && banList.cursor) query.set("cursor", banList.cursor);
    data = await api(`/api/v1/moderation/bans?${query}`);
    items = listed(data).filter((ban) => typeof ban.target === "string" && ban.target);
  } catch (err) {
    if (!current()) return; // a later listing (or a sign-out) took over, busy state and all
    if (!more) listing(banList, false);
    failed(err, banList);
    return;
  }
  if (!current()) return;
  recovered(banList);
  const body = $("bans-body");
  if (!more) {
    banList.shown++;
    body.replaceChildren();
  }
  const shown = new Set([...body.children].map((tr) => tr.dataset.target));
  body.append(...items.filter((ban) => !shown.has(ban.target)).map(banRow));
  banList.cursor = typeof data.next_cursor === "string" && data.next_cursor ? data.next_cursor : null;
  $("bans-more").hidden = !banList.cursor;
  bansShown();
  if (!more) {
    const n = body.children.length;
    listing(banList, false, `${n} ban${n === 1 ? "" : "s"} listed${banList.cursor ? ", more with “Load more bans”" : ""}.`);
  }
}

function banRow(ban) {
  return h(
    "tr",
    { "data-target": ban.target },
    h("td", null, h("code", { text: ban.target }), h("div", { class: "meta", text: `It ${COVERS[ban.target.startsWith("sub:") ? "subject" : "email"]}.` })),
    h("td", { dir: "auto", text: ban.reason || "" }),
    h("td", { text: ban.created_by || "" }),
    h("td", null, time(ban.created_at)),
    h("td", null, h("button", { type: "button", class: "secondary", text: "Lift ban", "aria-label": `Lift the ban on ${ban.target}`, disabled: lifting.has(ban.target), onclick: (event) => liftBan(ban.target, event.currentTarget) }))
  );
}

// The table, or a note when it has no row (also once the last one shown is lifted).
function bansShown() {
  const rows = $("bans-body").children.length;
  $("bans-table").hidden = rows === 0;
  $("bans-empty").hidden = rows > 0;
  $("bans-empty").textContent = banList.cursor ? "Every loaded ban is lifted; “Load more bans” shows the next ones." : "Nobody is banned.";
}

// The bans whose lifting is on its way: a listing meanwhile draws their "Lift ban" disabled
// (a second DELETE would find none and call the ban "lifted meanwhile").
const lifting = new Set();

function banRowOf(target) {
  return [...$("bans-body").children].find((tr) => tr.dataset.target === target) || null;
}

function liftButton(target) {
  const row = banRowOf(target);
  return row ? row.querySelector("button") : null;
}

// A ban's URL, as the API's Location gives it.
function banPath(target) {
  return `/api/v1/moderation/bans/${encodeURIComponent(target).replace(/%3A/gi, ":").replace(/%40/g, "@")}`;
}

// Lifts a ban; true once lifted, false when it was no longer there, null when it failed (said)
// or the moderator signed out meanwhile.
async function liftBan(target, button) {
  const still = inSession();
  let lifted = true;
  lifting.add(target);
  try {
    await busy([button], () => api(banPath(target), { method: "DELETE" }));
  } catch (err) {
    if (!still()) return null; // signed out meanwhile
    // The API's 404 (problem+json): someone else lifted it meanwhile. A proxy's is a failure.
    if (err.status !== 404 || !err.data) {
      failed(err);
      return null;
    }
    lifted = false;
  } finally {
    if (still()) {
      lifting.delete(target);
      const drawn = liftButton(target);
      if (drawn) drawn.disabled = false;
    }
  }
  if (!still()) return null; // signed out meanwhile
  say(lifted ? `Lifted the ban on ${apart(target)}.` : `${apart(target)} was no longer banned (lifted meanwhile).`);
  dropBanRow(target);
  lookupLifted(target);
  return lifted;
}

// The look-up's answer, if it still calls ``target`` banned, says it no longer is: lifted
// from its row, or from that answer (the keyboard then goes back to the box). An answer to
// another look-up, drawn while this lift was on its way, is left alone.
function lookupLifted(target) {
  const result = $("ban-lookup-result");
  const shown = result.querySelector("button");
  if (!shown || !sameAuthor(shown.dataset.target, target)) return;
  const focused = result.contains(document.activeElement);
  result.replaceChildren(h("span", { text: `${apart(shown.dataset.target)} is not banned.` }));
  if (focused) $("ban-lookup").focus();
}

// Whether two ban targets name one author, as the API's lift takes them: an address in
// any case or Unicode form (as key_address keys it: lower-cased, composed; a listed target
// is trimmed already), a subject exactly. A lift removes the ban in every form it stands
// in (an old release's ban of "josé" typed decomposed beside one typed precomposed), so
// every such row and answer goes with it.
function sameAuthor(a, b) {
  if (a === b) return true;
  const address = (t) => t.slice("email:".length).toLowerCase().normalize("NFC");
  return a.startsWith("email:") && b.startsWith("email:") && address(a) === address(b);
}

function dropBanRow(target) {
  // Its row goes and every other stays as loaded, on whatever page it came: the list is not
  // read again from the first page (the moderator's place, and "Load more bans", stay).
  // Every row of the author goes: the lift took each form the ban stood in (sameAuthor).
  const rows = [...$("bans-body").children];
  const gone = rows.filter((tr) => sameAuthor(tr.dataset.target, target));
  if (!gone.length) return; // a fresh listing meanwhile no longer shows it (or never loaded it)
  // The focus moves only if it is lost (on nothing, or in a row that goes), as after a
  // queue action: to the next ban's "Lift ban", else the previous one's, else "Load more
  // bans", else the form. A moderator who moved on meanwhile keeps their place.
  const now = document.activeElement;
  const row = gone.find((tr) => tr.contains(now)) || banRowOf(target) || gone[0];
  const at = rows.indexOf(row);
  const lost = !now || now === document.body || gone.some((tr) => tr.contains(now));
  for (const tr of gone) tr.remove();
  bansShown();
  if (!lost) return;
  // Not a ban whose own lifting is on its way (its button waits, disabled).
  const free = (tr) => !gone.includes(tr) && !tr.querySelector("button").disabled;
  const next = rows.slice(at + 1).find(free) || rows.slice(0, at).reverse().find(free);
  if (next) next.querySelector("button").focus();
  else if (!$("bans-more").hidden) $("bans-more").focus();
  else $("ban-target").focus();
}

$("bans-refresh").addEventListener("click", () => relist(banList, loadBans));
$("bans-more").addEventListener("click", () => loadMore($("bans-more"), $("bans-body"), () => loadBans(true)));
$("ban-kind").addEventListener("change", showCovers);
// The field a 400 refused is marked invalid, so a screen reader says so on it (WCAG 3.3.1;
// the status line says why); the one focused. Another failure (503, 429) is no field's.
function refusedBanField(err) {
  const named = err.status === 400 && err.data && Array.isArray(err.data.errors) ? err.data.errors.map((e) => e && e.field) : [];
  const reason = named.includes("reason");
  const target = err.status === 400 && (!reason || named.some((field) => field !== "reason"));
  for (const [id, invalid] of [["ban-target", target], ["ban-reason", reason]]) {
    if (invalid) $(id).setAttribute("aria-invalid", "true");
    else $(id).removeAttribute("aria-invalid");
  }
  return reason && !target ? $("ban-reason") : $("ban-target");
}
for (const id of ["ban-target", "ban-reason"]) $(id).addEventListener("input", () => $(id).removeAttribute("aria-invalid"));
$("ban-kind").addEventListener("change", () => $("ban-target").removeAttribute("aria-invalid"));

$("ban-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const submit = $("ban-submit");
  if (submit.disabled) return; // the previous ban is still on its way
  let kind = $("ban-kind").value;
  let typed = $("ban-target").value.trim();
  // Copied as the queue and the ban list show an author ("sub:…", "email:…"): the prefix is
  // the kind, not part of the subject (a subject ban on "sub:sub:…" would stop nobody).
  const prefixed = /^(email|sub):([\s\S]+)$/.exec(typed);
  if (prefixed) {
    kind = prefixed[1] === "sub" ? "subject" : "email";
    typed = prefixed[2].trim();
  }
  const body = { [kind]: typed };
  const reason = $("ban-reason").value.trim();
  if (reason) body.reason = reason;
  const still = inSession();
  let result;
  try {
    result = await busy([submit], () => api("/api/v1/moderation/bans", { method: "POST", body }));
  } catch (err) {
    if (!still()) return; // signed out meanwhile
    failed(err);
    refusedBanField(err).focus();
    return;
  }
  if (!still()) return; // signed out meanwhile: nothing said, the next session's form left as is
  // The API names the ban (email:<address> or sub:<subject>); else say what was typed, as it would.
  const target =
    result && typeof result.target === "string" && result.target
      ? result.target
      : kind === "email" ? `email:${typed.toLowerCase()}` : `sub:${typed}`;
  say(result && result.created === false ? `${apart(target)} was already banned.` : `Banned ${apart(target)}.`);
  // The look-up's "not banned" may have been of this author: it goes (a ban it shows stands).
  if (!$("ban-lookup-result").querySelector("button")) $("ban-lookup-result").replaceChildren();
  $("ban-form").reset();
  for (const id of ["ban-target", "ban-reason"]) $(id).removeAttribute("aria-invalid");
  showCovers();
  await loadBans();
  $("ban-target").focus();
});

// One ban, looked up without paging (GET /moderation/bans/{target}): typed as the list
// shows a ban ("email:…", "sub:…"), or an address (it has an "@") or a token subject. The
// API finds it in either Unicode form of an address, so the ban answered may be written
// otherwise than typed. The answer is said on the status line under the box (announced),
// with its "Lift ban"; the keyboard stays in the box, marked invalid when the API refuses it.
function lookupTarget(typed) {
  // Spaces after the kind go, as the ban form drops them: "sub: reader-7" bans reader-7
  // there, and a look-up of it as typed asked for " reader-7" and called them not banned.
  const prefixed = /^(email|sub):([\s\S]+)$/.exec(typed);
  if (prefixed) return `${prefixed[1]}:${prefixed[2].trim()}`;
  return typed.includes("@") ? `email:${typed}` : `sub:${typed}`;
}

$("ban-lookup").addEventListener("input", () => $("ban-lookup").removeAttribute("aria-invalid"));
$("ban-lookup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const submit = $("ban-lookup-submit");
  const box = $("ban-lookup");
  const result = $("ban-lookup-result");
  if (submit.disabled) return; // the previous look-up is still on its way
  const target = lookupTarget(box.value.trim());
  const still = inSession();
  let ban = null;
  try {
    ban = await busy([submit], () => api(banPath(target)));
  } catch (err) {
    if (!still()) return; // signed out meanwhile
    // The API's 404 (problem+json): not banned. A proxy's is a failure.
    if (err.status !== 404 || !err.data) {
      result.replaceChildren();
      if (err.status === 400) box.setAttribute("aria-invalid", "true");
      failed(err);
      box.focus();
      return;
    }
  }
  if (!still()) return;
  box.removeAttribute("aria-invalid");
  if (!ban || typeof ban.target !== "string" || !ban.target) {
    result.replaceChildren(h("span", { text: `${apart(target)} is not banned.` }));
    return;
  }
  const since = time(ban.created_at);
  const lift = h("button", {
    type: "button",
    class: "secondary",
    text: "Lift ban",
    "aria-label": `Lift the ban on ${ban.target}`,
    "data-target": ban.target, // what lookupLifted compares
    // liftBan says the answer (lookupLifted), unless another look-up's is shown by then.
    onclick: (click) => liftBan(ban.target, click.currentTarget),
  });
  result.replaceChildren(
    h("span", { text: `${apart(ban.target)} is banned, since ` }),
    since,
    h("span", { text: `, by ${ban.created_by || "unknown"}${ban.reason ? `: ${ban.reason}` : ""}. ` }),
    lift
  );
});

// --- audit log (admin scope) -------------------------------------------------------

const audit = {
  cursor: null, asked: 0, shown: 0, failed: null,
  ui: {
    button: "audit-refresh", idle: "Refresh", working: "Refreshing…",
    table: "audit-table", progress: "audit-progress", loading: "Loading the audit log…",
  },
};

async function loadAudit(more) {
  const current = ticket(audit, more);
  if (!more) listing(audit, true);
  let data;
  let items;
  try {
    const cursor = more ? audit.cursor : null;
    data = await api(`/api/v1/admin/audit-log?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items = listed(data);
  } catch (err) {
    if (!current()) return; // a later listing (or a sign-out) took over, busy state and all
    if (!more) listing(audit, false);
    failed(err, audit);
    return;
  }
  if (!current()) return;
  recovered(audit);
  const rows = items.map((e) =>
    h(
      "tr",
      null,
      h("td", null, time(e.created_at)),
      h("td", null, h("code", { text: e.actor })),
      h("td", { text: e.action }),
      h("td", { text: e.target || "" }),
      h("td", { text: Array.isArray(e.comment_ids) ? e.comment_ids.join(", ") : "" })
    )
  );
  if (more) $("audit-body").append(...rows);
  else {
    audit.shown++;
    $("audit-body").replaceChildren(...rows);
  }
  audit.cursor = data.next_cursor;
  $("audit-more").hidden = !data.next_cursor;
  $("audit-empty").hidden = $("audit-body").children.length > 0;
  $("audit-table").hidden = $("audit-body").children.length === 0;
  if (!more) {
    const n = rows.length;
    listing(audit, false, `${n} audit log entr${n === 1 ? "y" : "ies"} listed${data.next_cursor ? ", more with “Load more”" : ""}.`);
  }
}

$("audit-refresh").addEventListener("click", () => relist(audit, () => loadAudit(false)));
$("audit-more").addEventListener("click", () => loadMore($("audit-more"), $("audit-body"), () => loadAudit(true)));

showCovers(); // the kind a reload kept may be the subject
start();
