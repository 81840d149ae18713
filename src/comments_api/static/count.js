/*! comments-api "N comments" badges: <a data-comments-count="CONTENT_ID">. Docs: docs/widget.md. MIT. */
// Fills every element carrying data-comments-count with the published-comment count of
// that content, with one GET /api/v1/counts per 100 contents (the API's maximum).
(() => {
  "use strict";
  const script = document.currentScript;
  const API = ((script && script.dataset.api) || (script && script.src ? new URL(script.src).origin : location.origin)).replace(/\/$/, "");
  const BATCH = 100;
  const TEXTS = {
    en: { count_one: "{n} comment", count_other: "{n} comments" },
    "pt-BR": { count_one: "{n} comentário", count_other: "{n} comentários" },
  };
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
    return (texts[form] || texts.count_other).replace("{n}", String(n));
  }

  async function refresh(root) {
    const elements = [...(root || document).querySelectorAll("[data-comments-count]")];
    const ids = [...new Set(elements.map((el) => el.dataset.commentsCount).filter(Boolean))];
    const counts = {};
    for (let i = 0; i < ids.length; i += BATCH) {
      const query = ids.slice(i, i + BATCH).map((id) => `content_id=${encodeURIComponent(id)}`).join("&");
      try {
        const response = await fetch(`${API}/api/v1/counts?${query}`, { mode: "cors", credentials: "omit" });
        if (!response.ok) continue;
        Object.assign(counts, (await response.json()).counts);
      } catch (err) {
        console.warn("comments badges: counts unavailable", err);
      }
    }
    for (const el of elements) {
      const n = counts[el.dataset.commentsCount];
      if (typeof n === "number") {
        el.textContent = label(el, n);
        el.dataset.commentsCountValue = String(n);
      }
    }
    return counts;
  }

  window.CommentsCount = { refresh };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => refresh());
  } else {
    refresh();
  }
})();
