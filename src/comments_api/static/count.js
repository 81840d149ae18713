/*! comments-api "N comments" badges: <a data-comments-count="CONTENT_ID">. Docs: docs/widget.md. MIT. */
// Fills every element carrying data-comments-count with the published-comment count of
// that content, with one GET /api/v1/counts per 100 contents (the API's maximum).
(() => {
  "use strict";
  // Loaded again (a single-page app adding the tag on each route, or a second embed): the
  // copy already running counts the page's badges anew, and no second listener doubles the
  // calls that follow every comment posted. A symbol, which no element's id can shadow.
  const RUNNING = Symbol.for("comments-api.count.refresh");
  if (typeof window[RUNNING] === "function") return void window[RUNNING]();
  // Document.prototype's getter: an element named "currentScript" on the page would shadow
  // document.currentScript (DOM clobbering) and pick the API (see comments.js).
  const current = Object.getOwnPropertyDescriptor(Document.prototype, "currentScript").get.call(document);
  const script = current instanceof HTMLScriptElement ? current : null;
  const API = ((script && script.dataset.api) || (script && script.src ? new URL(script.src).origin : location.origin)).replace(/\/$/, "");
  const BATCH = 100;
  const WAIT = 20000; // ms: a counts request that has not answered by then is given up
  const TEXTS = {
    en: { count_one: "{n} comment", count_other: "{n} comments" },
    "pt-BR": { count_one: "{n} comentário", count_other: "{n} comentários" },
  };
  // The API's content id rule (rules.CONTENT_ID_PATTERN, not BLANK_PATTERN, MAX_CONTENT_ID_LENGTH;
  // an asset test keeps them equal): one id it refuses fails its whole call, so such a badge is
  // left out and keeps the site's text instead of costing up to 99 others theirs.
  const CONTENT_ID = /^(?!\.\.?(?![\s\S]))[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?(?![\s\S])/;
  const BLANK = /^[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0]*(?![\s\S])/;
  const MAX_CONTENT_ID = 128;
  const askable = (id) => CONTENT_ID.test(id) && !BLANK.test(id) && [...id].length <= MAX_CONTENT_ID;
  const config = window.CommentsWidgetConfig || {};
  for (const [lang, texts] of Object.entries(config.messages || {})) {
    TEXTS[lang] = Object.assign({}, TEXTS[lang], texts);
  }

  function locale(el) {
    const tag = (el.closest("[lang]") || document.documentElement).lang || "en";
    if (TEXTS[tag]) return tag;
    const primary = tag.split("-")[0].toLowerCase();
    return Object.keys(TEXTS).find((k) => k.split("-")[0].toLowerCase() === primary) || "en";
  }

  function label(el, n) {
    const lang = locale(el);
    const texts = Object.assign({}, TEXTS.en, TEXTS[lang]);
    const form = `count_${new Intl.PluralRules(lang).select(n)}`;
    return (texts[form] || texts.count_other).replace("{n}", new Intl.NumberFormat(lang).format(n));
  }

  // One batch: its counts, or {} when the API fails, answers oddly or not at all within WAIT.
  // A timer rather than AbortSignal.timeout(), as in the widget: tests fast-forward it.
  async function batch(ids) {
    const query = ids.map((id) => `content_id=${encodeURIComponent(id)}`).join("&");
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), WAIT);
    try {
      const response = await fetch(`${API}/api/v1/counts?${query}`, { mode: "cors", credentials: "omit", signal: abort.signal });
      if (!response.ok) return {};
      const data = await response.json();
      return (data && typeof data.counts === "object" && data.counts) || {};
    } catch (err) {
      console.warn("comments badges: counts unavailable", err);
      return {};
    } finally {
      clearTimeout(timer);
    }
  }

  // Which refresh filled each badge: refreshes overlap (the page's first, a comment posted,
  // the site's own calls), and an answer read before a newer one must not undo it.
  let asked = 0;
  const filledBy = new WeakMap();

  // Batches run side by side and each fills its own badges when it answers: a failed or
  // stuck batch leaves its badges with the site's text and holds up no other.
  async function refresh(root, contentId) {
    const seq = ++asked;
    const scope = root || document;
    // The root itself counts when it is a badge (a link the site has just added).
    const found = [...scope.querySelectorAll("[data-comments-count]")];
    if (scope.matches && scope.matches("[data-comments-count]")) found.unshift(scope);
    const elements = found.filter((el) => contentId === undefined || el.dataset.commentsCount === contentId);
    const ids = [...new Set(elements.map((el) => el.dataset.commentsCount).filter(askable))];
    const counts = {};
    const batches = [];
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      batches.push(
        batch(chunk).then((found) => {
          const filled = new Set();
          for (const id of chunk) {
            const n = Object.prototype.hasOwnProperty.call(found, id) ? found[id] : null;
            if (Number.isInteger(n) && n >= 0) {
              counts[id] = n;
              filled.add(id);
            }
          }
          for (const el of elements) {
            const id = el.dataset.commentsCount;
            if (!filled.has(id) || filledBy.get(el) > seq) continue;
            filledBy.set(el, seq);
            el.textContent = label(el, counts[id]);
            el.dataset.commentsCountValue = String(counts[id]);
          }
        })
      );
    }
    await Promise.all(batches);
    return counts;
  }

  window.CommentsCount = { refresh };
  window[RUNNING] = () => refresh();
  // A reader posted through the widget on this page: that content's badges count it now.
  document.addEventListener("comments:posted", (event) => {
    const id = event.detail && event.detail.contentId;
    if (typeof id === "string") refresh(document, id);
  });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => refresh());
  } else {
    refresh();
  }
})();
