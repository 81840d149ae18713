/*! comments-api widget: <comments-thread content-id="…">. Docs: docs/widget.md. MIT. */
// A classic script (not a module) on purpose: one cross-origin <script src> tag works
// without CORS on the script itself, and document.currentScript tells us the API origin.
// User text only ever reaches the page through textContent; no innerHTML, no eval.
(() => {
  "use strict";
  if (!window.customElements || customElements.get("comments-thread")) return;

  // Document.prototype's getter, not document.currentScript: an element of the page named
  // "currentScript" (<img name="currentScript" src="https://elsewhere/">, in an article's
  // markup) shadows that property on document (DOM clobbering), and its src would choose
  // the API every request, the reader's token included, is sent to.
  const current = Object.getOwnPropertyDescriptor(Document.prototype, "currentScript").get.call(document);
  const script = current instanceof HTMLScriptElement ? current : null;
  const SCRIPT_API = script && script.src ? new URL(script.src).origin : location.origin;
  const CONFIG = window.CommentsWidgetConfig || {};
  const PAGE = 25;
  const MAX_PAGE = 100; // the API's largest page
  // The API's content id rule (an asset test keeps it equal to rules.py's).
  const CONTENT_ID = /^(?!\.\.?(?![\s\S]))[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?(?![\s\S])/;
  const MAX_CONTENT_ID = 128;
  const usableId = (id) => CONTENT_ID.test(id) && !BLANK.test(id) && [...id].length <= MAX_CONTENT_ID;
  const REVEAL_PAGES = 20; // pages read on, at most, to reach a comment linked to
  const MIN_POLL = 2;
  const REFRESH_PAGES = 10;

  const MESSAGES = {
    en: {
      title: "Comments",
      count_one: "{n} comment",
      count_other: "{n} comments",
      loading: "Loading comments…",
      empty: "No comments yet. Be the first to comment.",
      loadError: "The comments could not be loaded.",
      retry: "Try again",
      loadMore: "Load more comments",
      loaded_one: "{n} more comment loaded.",
      loaded_other: "{n} more comments loaded.",
      fresh_one: "{n} new comment.",
      fresh_other: "{n} new comments.",
      sort: "Sort",
      oldest: "Oldest first",
      newest: "Newest first",
      removed: "Comment removed",
      edited: "(edited)",
      anonymous: "anonymous",
      reply: "Reply",
      replyTo: "Reply to {name}",
      inReplyTo: "in reply to {name}",
      cancel: "Cancel",
      formTitle: "Add a comment",
      body: "Your comment",
      name: "Name (optional)",
      email: "Email (optional, never shown)",
      submit: "Post comment",
      submitReply: "Post reply",
      sending: "Posting…",
      posted: "Your comment was posted.",
      pending: "Thank you! Your comment is awaiting moderation and will appear once a moderator approves it.",
      invalid: "Please correct the form:",
      required: "Please write your comment first.",
      duplicate: "You already posted this comment here.",
      tooLarge: "Your comment is too long.",
      tooLong: "At most {max} characters (now {count}).",
      rateLimited: "You are posting too often. Please wait {wait} and try again.",
      seconds_one: "{n} second",
      seconds_other: "{n} seconds",
      minutes_one: "{n} minute",
      minutes_other: "{n} minutes",
      signIn: "Please sign in to comment.",
      signInLink: "Sign in",
      banned: "You are not allowed to post comments here.",
      forbidden: "You are not allowed to do this.",
      network: "The comment service could not be reached. Check your connection and try again.",
      failed: "Something went wrong (error {status}). Please try again later.",
    },
    "pt-BR": {
      title: "Comentários",
      count_one: "{n} comentário",
      count_other: "{n} comentários",
      loading: "Carregando comentários…",
      empty: "Ainda não há comentários. Seja o primeiro a comentar.",
      loadError: "Não foi possível carregar os comentários.",
      retry: "Tentar de novo",
      loadMore: "Carregar mais comentários",
      loaded_one: "Mais {n} comentário carregado.",
      loaded_other: "Mais {n} comentários carregados.",
      fresh_one: "{n} comentário novo.",
      fresh_other: "{n} comentários novos.",
      sort: "Ordem",
      oldest: "Mais antigos primeiro",
      newest: "Mais recentes primeiro",
      removed: "Comentário removido",
      edited: "(editado)",
      anonymous: "anônimo",
      reply: "Responder",
      replyTo: "Responder a {name}",
      inReplyTo: "em resposta a {name}",
      cancel: "Cancelar",
      formTitle: "Deixe seu comentário",
      body: "Seu comentário",
      name: "Nome (opcional)",
      email: "E-mail (opcional, nunca exibido)",
      submit: "Publicar comentário",
      submitReply: "Publicar resposta",
      sending: "Publicando…",
      posted: "Seu comentário foi publicado.",
      pending: "Obrigado! Seu comentário aguarda moderação e aparecerá assim que for aprovado.",
      invalid: "Corrija o formulário:",
      required: "Escreva seu comentário primeiro.",
      duplicate: "Você já publicou este comentário aqui.",
      tooLarge: "Seu comentário é longo demais.",
      tooLong: "No máximo {max} caracteres (agora {count}).",
      rateLimited: "Você está comentando com muita frequência. Aguarde {wait} e tente de novo.",
      seconds_one: "{n} segundo",
      seconds_other: "{n} segundos",
      minutes_one: "{n} minuto",
      minutes_other: "{n} minutos",
      signIn: "Entre na sua conta para comentar.",
      signInLink: "Entrar",
      banned: "Você não tem permissão para comentar aqui.",
      forbidden: "Você não tem permissão para fazer isso.",
      network: "Não foi possível falar com o serviço de comentários. Verifique sua conexão e tente de novo.",
      failed: "Algo deu errado (erro {status}). Tente de novo mais tarde.",
    },
  };
  // Site overrides: window.CommentsWidgetConfig = {messages: {"pt-BR": {title: "…"}}}.
  for (const [lang, texts] of Object.entries(CONFIG.messages || {})) {
    MESSAGES[lang] = Object.assign({}, MESSAGES[lang], texts);
  }

  // Replies indent three levels deep at most: a long chain would squeeze its text to a few
  // letters a line. Deeper ones follow the comment they answer, and say which (.reply-to).
  // .meta and .text clip: a reader's name and text draw only in their own box, for marks
  // stacked on a letter ("Zalgo") would cover the comments around them. The clip margin
  // leaves room for accents and focus outlines; em for 62.5% roots.
  const CSS = `
:host{--comments-font:inherit;--comments-text:#1b1b1f;--comments-muted:#55565c;
--comments-bg:#fff;--comments-surface:#f4f4f6;--comments-border:#c9cad1;--comments-accent:#0b57d0;
--comments-accent-text:#fff;--comments-error:#b3261e;--comments-success:#146c2e;--comments-radius:6px;
--comments-gap:1em;display:block;font-family:var(--comments-font);color:var(--comments-text);
background:var(--comments-bg);line-height:1.5;color-scheme:light}
:host([theme=dark]){--comments-text:#e6e6ea;--comments-muted:#b4b5bc;--comments-bg:#17181c;
--comments-surface:#24252b;--comments-border:#4a4b53;--comments-accent:#a8c7fa;--comments-accent-text:#0a1f44;
--comments-error:#f2b8b5;--comments-success:#8fd9a3;color-scheme:dark}
@media (prefers-color-scheme:dark){:host(:not([theme=light])){--comments-text:#e6e6ea;--comments-muted:#b4b5bc;
--comments-bg:#17181c;--comments-surface:#24252b;--comments-border:#4a4b53;--comments-accent:#a8c7fa;
--comments-accent-text:#0a1f44;--comments-error:#f2b8b5;--comments-success:#8fd9a3;color-scheme:dark}}
*{box-sizing:border-box}
section{padding:var(--comments-gap)}
h2,h3{margin:0 0 .5em;font-size:1.25em}
h3{font-size:1em}
.head{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:baseline;justify-content:space-between}
ol{list-style:none;margin:0;padding:0}
.thread>li{border-top:1px solid var(--comments-border);padding:.75em 0}
.replies{margin:.5em 0 0;margin-inline-start:1em;padding-inline-start:1em;border-inline-start:3px solid var(--comments-border)}
.replies>li{padding:.5em 0}
.replies .replies .replies .replies{margin-inline-start:0;padding-inline-start:0;border-inline-start:0}
.reply-to{display:none;margin-inline-start:.5em;color:inherit}
.replies .replies .replies .replies .reply-to:not(:empty){display:inline}
.meta{color:var(--comments-muted);font-size:.875em;overflow-wrap:anywhere}
.author{font-weight:600;color:var(--comments-text)}
.author+.permalink{margin-inline-start:.5em}
.text{margin:.25em 0;white-space:pre-wrap;overflow-wrap:anywhere}
.meta,.text{overflow:clip;overflow-clip-margin:.25em}
.removed{font-style:italic;color:var(--comments-muted)}
.permalink{color:inherit;text-decoration:none}
.permalink:hover{text-decoration:underline}
article.linked{background:var(--comments-surface);border-radius:var(--comments-radius);padding:.25em .5em}
form{display:grid;gap:.5em;margin:.5em 0 1em;padding:.75em;background:var(--comments-surface);
border-radius:var(--comments-radius)}
label{font-weight:600;font-size:.875em}
.row{display:flex;flex-wrap:wrap;gap:.5em}
.row>div{flex:1 1 12em;display:grid;gap:.25em}
textarea,input,select{font:inherit;color:var(--comments-text);background:var(--comments-bg);
border:1px solid var(--comments-muted);border-radius:var(--comments-radius);padding:.4em .5em;width:100%}
select{width:auto}
textarea{min-height:5em;resize:vertical}
[aria-invalid=true]{border-color:var(--comments-error)}
button{font:inherit;cursor:pointer;border-radius:var(--comments-radius);padding:.35em .9em;
border:1px solid var(--comments-accent);background:var(--comments-accent);color:var(--comments-accent-text)}
button.link{background:none;color:var(--comments-accent);border-color:transparent;padding:.1em .3em}
:focus-visible,article:focus,.notice:focus{outline:2px solid var(--comments-accent);outline-offset:2px}
button[disabled]{opacity:.6;cursor:progress}
a{color:var(--comments-accent)}
.actions{display:flex;gap:.5em;align-items:center}
.notice{overflow-wrap:anywhere;padding:.5em .75em;border-radius:var(--comments-radius);border:1px solid currentColor;margin:.5em 0}
.notice:empty,.field-error:empty{display:none}
.notice p,.notice ul{margin:0}
.notice.error,.field-error{color:var(--comments-error)}
.notice.ok{color:var(--comments-success)}
.field-error{font-size:.875em}
.more{margin-top:.75em}
.sr{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
[hidden],.gated .reply{display:none!important}
`;
  let sheet = null;
  function styles() {
    if (!sheet) {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
    }
    return sheet;
  }

  let globalToken = null;
  const widgets = new Set();
  let uid = 0;

  // A comment posted in one thread is shown at once by the other threads of its content,
  // here and in the reader's other tabs (same origin): they re-read their newest comments.
  const threadKey = (w) => `${w.api} ${w.contentId}`;
  const refreshThreadsOf = (key, except) =>
    widgets.forEach((w) => {
      if (w !== except && w.built && threadKey(w) === key) w.refresh();
    });
  const tabs = "BroadcastChannel" in window ? new BroadcastChannel("comments-api-widget") : null;
  if (tabs) tabs.onmessage = (event) => refreshThreadsOf(String(event.data), null);

  // GET /api/v1/config, once per server for the page: whether writes need a credential
  // (AUTH_MODE) and the field limits. null when it cannot be read (or not within
  // CONFIG_WAIT ms): the attributes decide.
  const CONFIG_WAIT = 3000;
  // Any other request: a proxy that never answers must not leave "Posting…" forever.
  const REQUEST_WAIT = 20000;
  const configs = new Map();
  function serverConfig(api) {
    if (!configs.has(api)) {
      const read = fetch(`${api}/api/v1/config`, { mode: "cors", credentials: "omit", signal: AbortSignal.timeout(CONFIG_WAIT) })
        .then((response) => (response.ok ? response.json() : null))
        .catch(() => null);
      configs.set(api, read);
    }
    return configs.get(api);
  }

  // 128 random bits as hex: crypto.randomUUID() exists only in secure contexts.
  function randomKey() {
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The comments of a v1 page, or null when the answer is not one.
  function listed(data) {
    if (!data || !Array.isArray(data.items)) return null;
    return data.items.filter((c) => c && typeof c === "object" && c.id != null);
  }

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
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  function pickLang(lang) {
    const tag = lang || navigator.language || "en";
    if (MESSAGES[tag]) return tag;
    const primary = tag.split("-")[0].toLowerCase();
    return Object.keys(MESSAGES).find((k) => k.split("-")[0].toLowerCase() === primary) || "en";
  }

  class CommentsThread extends HTMLElement {
    static get observedAttributes() {
      return ["content-id", "order", "lang", "token"];
    }

    constructor() {
      super();
      this.root = this.attachShadow({ mode: "open" });
      this.root.adoptedStyleSheets = [styles()];
      this.token = null;
      this.config = null;
      this.built = false;
    }

    connectedCallback() {
      widgets.add(this);
      if (!this.built) this.build();
      this.startPolling();
    }

    disconnectedCallback() {
      widgets.delete(this);
      clearInterval(this.poller);
    }

    attributeChangedCallback(name, old, value) {
      if (!this.built || old === value) return;
      if (name === "token") return this.renderIdentity();
      this.build();
    }

    get api() {
      return (this.getAttribute("api") || (script && script.dataset.api) || SCRIPT_API).replace(/\/$/, "");
    }

    get contentId() {
      return this.getAttribute("content-id") || "";
    }

    /** The reader's JWT: hand it over with setToken(), the token attribute or token-provider. */
    setToken(token) {
      this.token = token || null;
      this.renderIdentity();
    }

    async currentToken() {
      const name = this.getAttribute("token-provider");
      // Read when needed: the site may define either after this script ran.
      const provider = name ? window[name] : (window.CommentsWidgetConfig || {}).tokenProvider;
      if (typeof provider === "function") {
        try {
          const token = await provider();
          if (token) return token;
        } catch (err) {
          console.warn("comments widget: token provider failed", err);
        }
      }
      return this.token || this.getAttribute("token") || globalToken;
    }

    t(key, vars) {
      const texts = Object.assign({}, MESSAGES.en, MESSAGES[this.locale], this.overrides);
      let text = texts[key];
      if (vars && "n" in vars) {
        text = texts[`${key}_${new Intl.PluralRules(this.locale).select(vars.n)}`] || texts[`${key}_other`];
      }
      // Numbers as the reader's language writes them ("1,234", "1.234").
      const shown = (k) => (typeof vars[k] === "number" ? new Intl.NumberFormat(this.locale).format(vars[k]) : vars[k]);
      return String(text ?? key).replace(/\{(\w+)\}/g, (_, k) => (vars && k in vars ? shown(k) : ""));
    }

    build() {
      this.built = true;
      // Answers to requests made before a rebuild (new order, language) are dropped.
      this.gen = (this.gen || 0) + 1;
      this.pageLang = (this.closest("[lang]") || document.documentElement).lang;
      this.locale = pickLang(this.pageLang);
      this.overrides = {};
      const ref = this.getAttribute("messages");
      const source = ref && document.getElementById(ref);
      if (source) {
        try {
          this.overrides = JSON.parse(source.textContent);
        } catch (err) {
          console.warn("comments widget: messages element is not JSON", err);
        }
      }
      this.order = this.getAttribute("order") === "newest" ? "newest" : "oldest";
      this.nodes = new Map();
      this.orphans = new Map();
      this.postedEarly = [];
      this.cursor = null;
      this.lastCursor = undefined;
      this.done = false;
      // What the reader was writing survives the rebuild: an open reply as a draft its
      // Reply button brings back, the main form as it was (its send too, if on its way).
      // Not into another content's thread (content-id changed): its text, nor its key.
      const sameThread = this.builtFor === threadKey(this);
      this.builtFor = threadKey(this);
      if (this.openReply) this.keepReplyDraft(this.openReply);
      this.openReply = null;
      if (!sameThread) this.replyDrafts = new Map();
      const previous = sameThread ? this.form : null;
      const id = `cw${++uid}`;
      this.heading = h("h2", { id: `${id}-h`, text: this.t("title") });
      this.countEl = h("span", { class: "meta" });
      const resort = () => {
        this.setAttribute("order", this.sortSelect.value); // rebuilds, with a new menu
        this.sortSelect.focus();
      };
      this.sortSelect = h(
        "select",
        { id: `${id}-sort`, onchange: resort },
        h("option", { value: "oldest", text: this.t("oldest") }),
        h("option", { value: "newest", text: this.t("newest") })
      );
      this.sortSelect.value = this.order;
      this.live = h("div", { class: "sr", role: "status", "aria-live": "polite" });
      this.notice = h("p", { class: "notice", tabindex: "-1" });
      this.list = h("ol", { class: "thread", "aria-labelledby": `${id}-h` });
      this.status = h("p", { class: "meta", text: this.t("loading") });
      this.more = h("button", { class: "more", type: "button", hidden: true, text: this.t("loadMore"), onclick: () => this.loadPage(true) });
      this.form = this.buildForm(null);
      if (previous) this.carryOver(previous, this.form);
      this.gate = h("p", { class: "notice", hidden: true }, this.t("signIn"), " ", this.signInLink());
      const head = h(
        "div",
        { class: "head" },
        h("div", null, this.heading, this.countEl),
        h("div", { class: "actions" }, h("label", { for: `${id}-sort`, text: this.t("sort") }), this.sortSelect)
      );
      this.section = h(
        "section",
        { "aria-labelledby": `${id}-h`, part: "root", lang: source ? this.pageLang : this.locale },
        head,
        this.gate,
        this.form.el,
        this.notice,
        this.live,
        this.status,
        this.list,
        this.more
      );
      this.root.replaceChildren(this.section);
      // The form waits for the server's settings (no form flashing up under
      // AUTH_MODE=required only to be replaced by the sign-in prompt).
      this.configRead = false;
      this.renderIdentity();
      const gen = this.gen;
      serverConfig(this.api).then((config) => {
        if (gen !== this.gen) return;
        this.configRead = true;
        if (config) {
          this.config = config;
          for (const form of [this.form, this.openReply && this.openReply.form]) {
            if (form) this.sizeFields(form);
          }
        }
        this.renderIdentity();
      });
      if (!usableId(this.contentId)) {
        // Refused by the API ("." and ".." vanish from a URL path): no thread, no form.
        this.status.textContent = this.contentId ? `content-id "${this.contentId}" cannot name a thread` : "content-id missing";
        this.root.replaceChildren(this.status);
        return;
      }
      this.loadCount();
      // A new thread shows #comment-ID, a re-sort does not.
      this.loadPage(false).then(() => !sameThread && this.reveal());
    }

    buildForm(parent) {
      const id = `cw${++uid}`;
      const field = (name, control) => {
        const error = h("span", { class: "field-error", id: `${id}-${name}-err` });
        control.id = `${id}-${name}`;
        control.name = name;
        control.setAttribute("aria-describedby", error.id);
        const label = h("label", { for: control.id, text: this.t(name) });
        return { wrap: h("div", null, label, control, error), control, error };
      };
      const body = field("body", h("textarea", { required: true, dir: "auto", lang: this.pageLang }));
      const name = field("name", h("input", { type: "text", autocomplete: "name", dir: "auto" }));
      const email = field("email", h("input", { type: "email", autocomplete: "email" }));
      const who = h("div", { class: "row" }, name.wrap, email.wrap);
      const submit = h("button", { type: "submit", text: this.t(parent ? "submitReply" : "submit") });
      const error = h("div", { class: "notice error", role: "alert" });
      const actions = h("div", { class: "actions" }, submit);
      // A reply form's heading is for screen readers; sighted readers see it under its comment.
      const title = parent
        ? h("h4", { id: `${id}-t`, class: "sr", text: this.t("replyTo", { name: parent.name }) })
        : h("h3", { id: `${id}-t`, text: this.t("formTitle") });
      const form = { parent, body, name, email, who, submit, error };
      this.sizeFields(form);
      if (parent) {
        const cancel = () => this.closeReply(true);
        actions.append(h("button", { type: "button", class: "link", text: this.t("cancel"), onclick: cancel }));
      }
      const onsubmit = (event) => {
        event.preventDefault();
        this.submit(form);
      };
      form.el = h("form", { "aria-labelledby": title.id, novalidate: true, onsubmit }, title, body.wrap, who, error, actions);
      body.control.addEventListener("keydown", (e) => {
        if (e.key === "Escape" && parent) this.closeReply(true);
      });
      return form;
    }

    carryOver(from, to) {
      for (const f of ["body", "name", "email"]) to[f].control.value = from[f].control.value;
      to.attempt = from.attempt;
      from.successor = to; // the answer to a send on its way is handled by the new form
      if (from.busy) {
        to.busy = true;
        to.submit.disabled = true;
        to.submit.textContent = this.t("sending");
      }
    }

    /** Field limits: the server's (config; defaults until it is read), or a lower max-length.
     * In characters, as the server counts them: checked on sending, not by maxlength, which
     * counts UTF-16 units (an emoji is two) and would cut a pasted text short in silence. */
    sizeFields(form) {
      const config = this.config || {};
      const server = config.max_comment_length || 5000;
      const own = Number(this.getAttribute("max-length"));
      form.body.limit = own > 0 ? Math.min(own, server) : server;
      form.name.limit = config.max_author_name_length || 80;
      form.email.limit = config.max_email_length || 254;
    }

    async renderIdentity() {
      if (!this.built) return;
      // A signed-in reader's name and address come from the token: the fields would be ignored.
      const signedIn = Boolean(await this.currentToken());
      for (const form of [this.form, this.openReply && this.openReply.form]) {
        if (form) form.who.hidden = signedIn;
      }
      // No form until there is a token where writes need one: the server says so
      // (AUTH_MODE=required, from /api/v1/config), or the require-sign-in attribute does.
      const required = this.hasAttribute("require-sign-in") || (this.config && this.config.auth_mode === "required");
      const gated = required && !signedIn;
      this.section.classList.toggle("gated", gated);
      this.form.el.hidden = gated || !this.configRead;
      this.gate.hidden = !gated;
      if (gated) this.closeReply(false);
    }

    async request(path, options) {
      // A timer, not AbortSignal.timeout(): tests fast-forward it with a fake clock.
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), REQUEST_WAIT);
      // The deadline covers the body as well: an answer whose headers came and whose body
      // stalls is given up like one that never came.
      try {
        const response = await fetch(this.api + path, Object.assign({ mode: "cors", credentials: "omit", signal: abort.signal }, options));
        let data = null;
        if ((response.headers.get("content-type") || "").includes("json")) {
          try {
            data = await response.json();
          } catch (err) {
            if (abort.signal.aborted) throw err;
            data = null; // not JSON after all (a proxy's page): the caller reads the status
          }
        }
        return { response, data };
      } finally {
        clearTimeout(timer);
      }
    }

    async loadCount() {
      const gen = this.gen;
      try {
        const { response, data } = await this.request(`/api/v1/counts?content_id=${encodeURIComponent(this.contentId)}`);
        const n = data && data.counts ? data.counts[this.contentId] || 0 : null;
        if (gen === this.gen && response.ok && typeof n === "number") this.setCount(n);
      } catch (_) {
        /* the thread itself reports connection problems */
      }
    }

    setCount(n) {
      this.count = n;
      this.countEl.textContent = this.t("count", { n });
    }

    pagePath(cursor) {
      // A page-size the API would refuse (400: no thread at all) becomes the nearest it takes.
      const asked = Math.trunc(Number(this.getAttribute("page-size") || PAGE));
      const limit = Number.isFinite(asked) ? Math.min(MAX_PAGE, Math.max(1, asked)) : PAGE;
      let path = `/api/v1/contents/${encodeURIComponent(this.contentId)}/comments?limit=${limit}&order=${this.order}`;
      if (cursor) path += `&cursor=${encodeURIComponent(cursor)}`;
      return path;
    }

    async loadPage(more, quiet) {
      const cursor = more ? this.cursor : null;
      const gen = this.gen;
      const had = this.root.activeElement === this.more;
      this.more.disabled = true;
      let result;
      try {
        result = await this.request(this.pagePath(cursor));
      } catch (_) {
        result = null;
      }
      if (gen !== this.gen) return;
      this.more.disabled = false;
      if (had && document.activeElement == document.body) this.more.focus(); // not if the reader moved on
      if (!result) return this.loadFailed(this.t("network"));
      const { response } = result;
      const items = listed(result.data);
      // A proxy's error page, or JSON that is not a page of comments: the same message.
      if (!response.ok || !items) return this.loadFailed(this.t("loadError"));
      const data = result.data;
      this.status.hidden = true;
      this.status.replaceChildren();
      this.lastCursor = cursor;
      this.cursor = data.next_cursor;
      this.done = !data.next_cursor;
      const added = this.addComments(items);
      this.more.hidden = this.done;
      if (this.done) this.flushOrphans();
      if (!this.nodes.size) {
        this.status.hidden = false;
        this.status.textContent = this.t("empty");
      }
      if (more && !quiet) {
        this.announce(this.t("loaded", { n: added.length }));
        if (this.done && added[0] && (this.root.activeElement == this.more || document.activeElement == document.body)) added[0].focus();
      }
      return added;
    }

    /** Shows the comment the page's address names (#comment-ID, each date's link), reading
     * on through the pages before it; only the widget of that comment's content does. */
    async reveal() {
      const match = /^#comment-([1-9][0-9]{0,18})$/.exec(location.hash);
      if (!match) return;
      const id = Number(match[1]);
      const gen = this.gen;
      if (!this.nodes.has(id)) {
        let result;
        try {
          result = await this.request(`/api/v1/comments/${id}`);
        } catch (_) {
          return;
        }
        if (gen !== this.gen || !result.response.ok || !result.data || result.data.content_id !== this.contentId) return;
        for (let n = 0; !this.nodes.has(id) && !this.done && n < REVEAL_PAGES; n++) {
          if (!(await this.loadPage(true, true)) || gen !== this.gen) return;
        }
      }
      const node = this.nodes.get(id);
      if (!node || !node.article.isConnected) return;
      for (const el of this.root.querySelectorAll("article.linked")) el.classList.remove("linked");
      node.article.classList.add("linked");
      node.article.scrollIntoView({ block: "center" });
      node.article.focus({ preventScroll: true });
    }

    loadFailed(message) {
      this.status.hidden = false;
      this.status.replaceChildren(
        h("span", { class: "notice error", role: "alert", text: message }),
        " ",
        h("button", { type: "button", class: "link", text: this.t("retry"), onclick: () => this.retryLoad() })
      );
      return null;
    }

    // "Try again" is replaced by what it brings: the keyboard goes with it (to the next "Try
    // again", or the first comment brought) instead of falling back to the top of the page.
    async retryLoad() {
      const gen = this.gen;
      const added = await this.loadPage(Boolean(this.cursor));
      if (gen !== this.gen || this.root.activeElement) return; // rebuilt, or the reader moved on
      if (!added) return this.status.querySelector("button").focus();
      (added[0] || (this.more.hidden ? this.form.body.control : this.more)).focus();
    }

    /** Re-reads the newest comments (the end of the thread when oldest first). */
    async refresh() {
      if (!this.built || !usableId(this.contentId)) return;
      if (this.order === "newest") return this.refreshTop();
      const from = this.done ? this.lastCursor : undefined;
      if (from === undefined) return; // more pages to read: "load more" shows them
      const gen = this.gen;
      let result;
      try {
        result = await this.request(this.pagePath(from));
      } catch (_) {
        return;
      }
      const { response, data } = result;
      const items = listed(data);
      if (gen !== this.gen || !response.ok || !items) return;
      const added = this.addComments(items, false);
      if (data.next_cursor) {
        this.cursor = data.next_cursor;
        this.lastCursor = from;
        this.done = false;
        this.more.hidden = false;
      }
      this.freshAdded(added);
    }

    // Newest first: pages from the top until one reaches a comment already shown, so that
    // more new comments than a page holds are all shown, none skipped (the cursor goes by
    // id, newest first); at most REFRESH_PAGES pages per refresh.
    async refreshTop() {
      if (!this.done && !this.nodes.size) return; // the first page is still on its way
      const gen = this.gen;
      const newest = Math.max(-Infinity, ...[...this.nodes.keys()].filter((id) => typeof id === "number"));
      const items = [];
      let cursor = null;
      for (let page = 0; page < REFRESH_PAGES; page++) {
        let result;
        try {
          result = await this.request(this.pagePath(cursor));
        } catch (_) {
          return; // all or nothing: shown from a part, the rest would never come (next poll)
        }
        const found = listed(result.data);
        if (gen !== this.gen || !result.response.ok || !found) return;
        items.push(...found);
        cursor = result.data.next_cursor;
        if (!cursor || found.some((c) => this.nodes.has(c.id) || c.id <= newest)) break;
      }
      this.freshAdded(this.addComments(items, true));
    }

    freshAdded(added) {
      if (!added.length) return;
      this.status.hidden = true;
      this.announce(this.t("fresh", { n: added.length }));
      this.loadCount();
    }

    startPolling() {
      clearInterval(this.poller);
      const seconds = Number(this.getAttribute("poll"));
      if (seconds >= MIN_POLL) {
        this.poller = setInterval(() => {
          if (document.visibilityState === "visible") this.refresh();
        }, seconds * 1000);
      }
    }

    addComments(items, atTop) {
      const added = [];
      const fresh = items.filter((c) => !this.nodes.has(c.id));
      const ordered = atTop ? fresh.slice().reverse() : fresh;
      for (const c of ordered) {
        const node = this.renderComment(c);
        this.nodes.set(c.id, node);
        added.push(node.article);
        if (c.parent_id && !this.nodes.has(c.parent_id)) {
          // Its parent is on a page not read yet (newest first): it waits there.
          const waiting = this.orphans.get(c.parent_id) || [];
          waiting.push(node);
          this.orphans.set(c.parent_id, waiting);
        } else {
          this.place(node, c, atTop);
        }
        for (const child of this.orphans.get(c.id) || []) {
          node.replies.append(child.li);
          this.nameParent(child, node);
        }
        this.orphans.delete(c.id);
      }
      return atTop ? added.reverse() : added;
    }

    place(node, c, atTop) {
      const parent = c.parent_id ? this.nodes.get(c.parent_id) : null;
      if (parent) this.nameParent(node, parent);
      const list = parent ? parent.replies : this.list;
      // Oldest first, a page read after the reader posted goes before what they posted.
      const later = atTop ? null : this.postedEarly.find((p) => p.list === list && p.id > c.id);
      if (atTop && !parent) list.prepend(node.li);
      else if (later) list.insertBefore(node.li, later.li);
      else list.append(node.li);
    }

    // "in reply to NAME", a link to the parent: shown where replies no longer indent.
    nameParent(node, parent) {
      if (!node.replyTo || !parent.name) return;
      const [before, after = ""] = this.t("inReplyTo", { name: "\u0000" }).split("\u0000");
      node.replyTo.replaceChildren(before, h("bdi", { text: parent.name }), after);
    }

    flushOrphans() {
      // Replies whose parent is not public any more: show them rather than lose them.
      for (const waiting of this.orphans.values()) this.list.append(...waiting.map((n) => n.li));
      this.orphans.clear();
    }

    renderComment(c) {
      const replies = h("ol", { class: "replies" });
      const article = h("article", { tabindex: "-1", id: `comment-${c.id}` });
      const format = (at) => { const d = new Date(at); return isNaN(d) ? at : new Intl.DateTimeFormat(this.locale, { dateStyle: "medium", timeStyle: "short" }).format(d); };
      const permalink = h("a", { class: "permalink", href: `#comment-${c.id}` }, h("time", { datetime: c.created_at, text: format(c.created_at) }));
      const li = h("li", null, article, replies);
      const node = { li, article, replies };
      if (c.status === "deleted" || !c.author) {
        article.append(h("p", { class: "removed text", text: this.t("removed") }), h("div", { class: "meta" }, permalink));
        return node;
      }
      const raw = c.author.name;
      node.name = raw === "anonymous" ? this.t("anonymous") : raw;
      // Readers' text beside ours is isolated (<bdi>, dir=auto): a name ending in a
      // right-to-left override, or in Arabic, would otherwise reorder the date after it.
      const author = h("bdi", { class: "author", text: node.name });
      const replyButton = h("button", { type: "button", class: "link reply", "aria-expanded": "false", text: this.t("reply") });
      replyButton.setAttribute("aria-label", this.t("replyTo", { name: node.name }));
      replyButton.addEventListener("click", () => this.toggleReply(c, node, replyButton));
      node.replyButton = replyButton;
      // edited_at: the author's own edits only (updated_at also moves when a moderator approves).
      const edited = c.edited_at ? [" ", h("time", { class: "edited", datetime: c.edited_at, title: format(c.edited_at), text: this.t("edited") })] : [];
      if (c.parent_id) node.replyTo = h("a", { class: "reply-to", href: `#comment-${c.parent_id}` });
      article.append(
        h("div", { class: "meta" }, author, permalink, ...edited, node.replyTo),
        h("p", { class: "text", dir: "auto", lang: this.pageLang, text: withoutBlankRuns(c.body) }),
        h("div", { class: "actions" }, replyButton)
      );
      return node;
    }

    toggleReply(c, node, button) {
      const open = this.openReply;
      this.closeReply(false);
      if (open && open.id === c.id) return button.focus();
      const form = this.buildForm({ id: c.id, name: node.name });
      const draft = this.replyDrafts.get(c.id);
      if (draft) this.carryOver(draft, form); // its text, its key, its send if on its way
      node.article.append(form.el);
      button.setAttribute("aria-expanded", "true");
      this.openReply = { id: c.id, form, button };
      this.renderIdentity();
      form.body.control.focus();
    }

    // A reply closed with text in it (Cancel, Escape, another Reply) keeps it as a draft:
    // the closed form itself, whose send may still be on its way.
    keepReplyDraft(open) {
      if (open.form.body.control.value.trim()) this.replyDrafts.set(open.id, open.form);
      else this.replyDrafts.delete(open.id);
    }

    // A reply closed (or its thread rebuilt) while on its way, then refused: opened again
    // under its comment with its text, so the reader sees it was not posted.
    reopened(form) {
      if (!form.parent || form.el.isConnected) return form;
      const node = this.nodes.get(form.parent.id);
      if (!node || !node.replyButton) return form; // its comment is gone: formError says where
      this.toggleReply({ id: form.parent.id }, node, node.replyButton);
      const shown = this.openReply.form;
      if (form.successor !== shown) this.carryOver(form, shown);
      return shown;
    }

    closeReply(focusButton) {
      const open = this.openReply;
      if (!open) return;
      this.keepReplyDraft(open);
      open.form.el.remove();
      open.button.setAttribute("aria-expanded", "false");
      this.openReply = null;
      if (focusButton) open.button.focus();
    }

    clearErrors(form) {
      form.error.replaceChildren();
      for (const f of [form.body, form.name, form.email]) {
        f.error.textContent = "";
        f.control.removeAttribute("aria-invalid");
      }
    }

    fieldError(form, fieldName, message) {
      const f = { body: form.body, author_name: form.name, email: form.email }[fieldName];
      if (!f || f.control.closest("[hidden]")) return false;
      f.error.textContent = message;
      f.control.setAttribute("aria-invalid", "true");
      return true;
    }

    async submit(form) {
      if (form.busy) return; // a double click: the first send is on its way
      this.clearErrors(form);
      this.notice.textContent = "";
      this.notice.className = "notice";
      const text = form.body.control.value;
      for (const [f, field] of [[form.body, "body"], [form.name, "author_name"], [form.email, "email"]]) {
        if (f.control.closest("[hidden]")) continue;
        const count = [...(f === form.body ? text : f.control.value.trim())].length;
        const message = f === form.body && !text.trim() ? this.t("required") : count > f.limit ? this.t("tooLong", { max: f.limit, count }) : f.control.validationMessage;
        if (message) {
          this.fieldError(form, field, message);
          return this.formError(form, this.t("invalid"), message);
        }
      }
      const payload = { body: text };
      // Busy from here: a token provider may take a while, and a second click meanwhile
      // must not send the comment twice.
      form.busy = true;
      form.submit.disabled = true;
      form.submit.textContent = this.t("sending");
      const thread = threadKey(this);
      const id = this.contentId; // the story it was written on
      let token;
      let result;
      try {
        token = await this.currentToken();
        result = await this.send(form, payload, token, id);
      } catch (_) {
        result = null;
      }
      if (threadKey(this) !== thread) return; // the element shows another content now
      // Rebuilt meanwhile (Sort, language), or a reply closed and opened again: the form
      // shown now takes the answer, and the key the send used (set after the copy, when
      // the rebuild came while a token provider was asked).
      const rebuilt = Boolean(form.successor);
      for (; form.successor; form = form.successor) form.successor.attempt = form.attempt;
      form.busy = false;
      form.submit.disabled = false;
      form.submit.textContent = this.t(form.parent ? "submitReply" : "submit");
      const stored = result && (result.response.status === 201 || result.response.status === 202);
      if (!stored) form = this.reopened(form);
      if (!result) return this.formError(form, this.t("network"));
      const { response, data } = result;
      if (response.status === 201 || response.status === 202) form.attempt = null;
      if (response.status === 201 && data && data.id != null) {
        this.posted(form, data);
        if (rebuilt) this.loadCount(); // the rebuilt thread's count may hold it already, or not
        return;
      }
      if (response.status === 201 || response.status === 202) {
        // 201 without a readable comment (a proxy rewrote it): stored all the same.
        this.resetForm(form);
        this.showNotice(this.t(response.status === 201 ? "posted" : "pending"), "ok");
        return;
      }
      this.failed(form, response, data || {}, Boolean(token));
    }

    send(form, payload, token, id) {
      form.who.hidden = Boolean(token);
      if (!token) {
        const name = form.name.control.value.trim();
        const email = form.email.control.value.trim();
        if (name) payload.author_name = name;
        if (email) payload.email = email;
      }
      if (form.parent) payload.parent_id = form.parent.id;
      const body = JSON.stringify(payload);
      // One key per comment: sending it again after a lost answer gets the stored comment
      // back instead of a duplicate; an edited comment is a new request with a new key.
      if (!form.attempt || form.attempt.body !== body) form.attempt = { body, key: randomKey() };
      const headers = { "Content-Type": "application/json", "Idempotency-Key": form.attempt.key };
      if (token) headers.Authorization = `Bearer ${token}`;
      return this.request(`/api/v1/contents/${encodeURIComponent(id)}/comments`, { method: "POST", headers, body });
    }

    resetForm(form) {
      form.body.control.value = "";
      if (!form.parent) return;
      this.replyDrafts.delete(form.parent.id);
      if (this.openReply && this.openReply.form === form) this.closeReply(false);
    }

    posted(form, comment) {
      this.resetForm(form);
      this.status.hidden = true;
      // Shown already: a send again after a lost answer, with the comment read meanwhile
      // (a refresh, another tab). It is not counted twice; the focus goes to it all the same.
      const shown = this.nodes.has(comment.id);
      this.addComments([comment], this.order === "newest" && !comment.parent_id);
      // Oldest first with pages still unread: shown now, and kept after what they bring.
      const node = this.nodes.get(comment.id);
      if (this.order === "oldest" && !this.done && node && node.li.parentNode) {
        this.postedEarly.push({ id: comment.id, li: node.li, list: node.li.parentNode });
      }
      if (!shown && this.count !== undefined) this.setCount(this.count + 1);
      this.announce(this.t("posted"));
      if (node) node.article.focus();
      refreshThreadsOf(threadKey(this), this);
      if (tabs) tabs.postMessage(threadKey(this));
      // For the site (and count.js's badges): a comment of this content was just published.
      const detail = { contentId: this.contentId, id: comment.id, parentId: comment.parent_id ?? null };
      this.dispatchEvent(new CustomEvent("comments:posted", { bubbles: true, composed: true, detail }));
    }

    showNotice(message, kind) {
      this.notice.className = `notice ${kind}`;
      this.notice.textContent = message;
      this.notice.focus();
    }

    formError(form, message, extra) {
      if (!form.el.isConnected) return this.showNotice(message, "error"); // its comment is not shown now
      form.error.replaceChildren(h("p", { text: message }), extra || "");
      const invalid = form.el.querySelector("[aria-invalid=true]");
      (invalid || form.body.control).focus();
    }

    failed(form, response, problem, hadToken) {
      const status = response.status;
      if (status === 400 && Array.isArray(problem.errors)) {
        // Only the API's {field, message} entries: anything else would read "undefined".
        const errors = problem.errors.filter((e) => e && typeof e.message === "string" && typeof e.field === "string");
        const rest = errors.filter((e) => !this.fieldError(form, e.field, e.message));
        const list = h("ul", null, ...rest.map((e) => h("li", { text: `${e.field}: ${e.message}` })));
        return this.formError(form, this.t("invalid"), rest.length ? list : form.el.querySelector("[aria-invalid=true]+span")?.textContent);
      }
      if (status === 401) {
        this.dispatchEvent(new CustomEvent("comments:sign-in-required", { bubbles: true, composed: true, detail: { expired: hadToken } }));
        return this.formError(form, this.t("signIn"), this.signInLink());
      }
      if (status === 403) {
        const banned = String(problem.type || "").endsWith("author-banned");
        return this.formError(form, this.t(banned ? "banned" : "forbidden"));
      }
      if (status === 409) return this.formError(form, this.t("duplicate"));
      if (status === 413) return this.formError(form, this.t("tooLarge"));
      if (status === 429) {
        // Retry-After is seconds or an HTTP date; 60 s when absent or unreadable.
        const after = response.headers.get("Retry-After") || "";
        let seconds = /^\s*\d+\s*$/.test(after) ? Number(after) : (Date.parse(after) - Date.now()) / 1000;
        seconds = Number.isFinite(seconds) ? Math.max(1, Math.ceil(seconds)) : 60;
        const wait = seconds >= 120 ? this.t("minutes", { n: Math.ceil(seconds / 60) }) : this.t("seconds", { n: seconds });
        return this.formError(form, this.t("rateLimited", { wait }));
      }
      return this.formError(form, this.t("failed", { status }));
    }

    signInLink() {
      const url = this.getAttribute("sign-in-url");
      return url ? h("a", { href: url, text: this.t("signInLink") }) : null;
    }

    announce(message) {
      // Cleared first so the same sentence twice is announced twice.
      this.live.textContent = "";
      setTimeout(() => {
        this.live.textContent = message;
      }, 50);
    }
  }

  customElements.define("comments-thread", CommentsThread);
  window.addEventListener("hashchange", () => widgets.forEach((w) => w.reveal()));

  window.CommentsWidget = {
    /** Hand every widget on the page the signed-in reader's JWT (null to sign out). */
    setToken(token) {
      globalToken = token || null;
      widgets.forEach((w) => w.renderIdentity());
    },
    /** Replace or add texts for a language, e.g. setMessages("pt-BR", {title: "Opiniões"}). */
    setMessages(lang, texts) {
      MESSAGES[lang] = Object.assign({}, MESSAGES[lang], texts);
      widgets.forEach((w) => w.build());
    },
    refresh() {
      return Promise.all([...widgets].map((w) => w.refresh()));
    },
  };
})();
