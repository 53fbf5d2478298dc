/* calsync web admin: the code every page shares.
 *
 * - the token: kept in sessionStorage only (gone when the tab closes), sent as a bearer token;
 * - api(): fetch() against /api/v1; 401 sends the page to the login page, 403 becomes a clear message;
 * - start(): checks the token with GET /api/v1/me, draws the navigation, hides admin-only controls;
 * - h() and the formatters: every value reaches the page through textContent / text nodes, never innerHTML.
 */
"use strict";

(function () {
  const TOKEN_KEY = "calsync.admin.token";
  // The admin lives at <root>/admin/; the API at <root>/api/v1 (root is "" unless behind a path prefix).
  const ROOT = window.location.pathname.replace(/\/admin(\/.*)?$/, "");
  const API_BASE = ROOT + "/api/v1";
  const ADMIN_BASE = ROOT + "/admin/";
  const FAST_MS = 1000;
  const PAGES = [
    ["index.html", "Dashboard"],
    ["operators.html", "Operators"],
    ["jobs.html", "Jobs"],
    ["failures.html", "Failures"],
    ["settings.html", "Settings"],
  ];

  const state = { me: null, role: null, leaving: false };

  class ApiError extends Error {
    constructor(status, message, problems) {
      super(message);
      this.status = status;
      this.problems = problems || [];
    }
  }

  // --- the token ---------------------------------------------------------------------------------

  function token() {
    return window.sessionStorage.getItem(TOKEN_KEY);
  }

  function setToken(value) {
    window.sessionStorage.setItem(TOKEN_KEY, value);
  }

  function forgetToken() {
    window.sessionStorage.removeItem(TOKEN_KEY);
  }

  function currentPage() {
    const name = window.location.pathname.split("/").pop();
    return name || "index.html";
  }

  /** Only one of our own pages may be the target after login (no open redirect). */
  function safeNext(value) {
    return typeof value === "string" && /^[a-z]+\.html(\?[A-Za-z0-9_.%@+=&-]*)?$/.test(value) ? value : "index.html";
  }

  function toLogin(reason) {
    state.leaving = true;
    const params = new URLSearchParams();
    const page = currentPage();
    if (page !== "login.html") params.set("next", page + window.location.search);
    if (reason) params.set("reason", reason);
    window.location.replace(ADMIN_BASE + "login.html?" + params.toString());
  }

  function logout() {
    forgetToken();
    state.leaving = true;
    window.location.replace(ADMIN_BASE + "login.html?reason=logout");
  }

  // --- the API -----------------------------------------------------------------------------------

  /** The API's error text as it gave it: a string detail verbatim, FastAPI's validation list as "where: msg". */
  function detailText(data, fallback) {
    if (data && typeof data === "object" && "detail" in data) {
      const detail = data.detail;
      if (typeof detail === "string") return detail;
      if (Array.isArray(detail)) {
        return detail
          .map((d) => (d && typeof d === "object" ? (d.loc ? d.loc.join(".") + ": " : "") + (d.msg || JSON.stringify(d)) : String(d)))
          .join("; ");
      }
      return JSON.stringify(detail);
    }
    if (data !== null && data !== undefined && data !== "") return typeof data === "string" ? data : JSON.stringify(data);
    return fallback;
  }

  async function readBody(response) {
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (e) {
      return text;
    }
  }

  function forbiddenMessage() {
    return "Your token's role (" + (state.role || "unknown") + ") may not do this. Nothing was changed.";
  }

  /** After a 403: the role as the server sees it now (the page may have been drawn for another role). */
  async function recheckRole(current) {
    try {
      const response = await window.fetch(API_BASE + "/me", {
        headers: { Authorization: "Bearer " + current, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
      if (response.ok) {
        const me = await response.json();
        if (me && typeof me.role === "string") state.role = me.role;
      }
    } catch (e) {
      // keep the role we had
    }
  }

  /** Calls the API with the bearer token; resolves to the JSON answer (null for 204), rejects with ApiError. */
  async function api(method, path, body) {
    const current = token();
    if (!current) {
      toLogin();
      throw new ApiError(401, "not signed in");
    }
    const init = {
      method: method,
      headers: { Authorization: "Bearer " + current, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await window.fetch(API_BASE + path, init);
    } catch (e) {
      throw new ApiError(0, "calsync did not answer (" + e.message + ")");
    }
    if (response.status === 401) {
      forgetToken();
      toLogin("expired");
      throw new ApiError(401, "the token was refused");
    }
    const data = response.status === 204 ? null : await readBody(response);
    if (response.status === 403) {
      await recheckRole(current);
      throw new ApiError(403, forbiddenMessage());
    }
    if (!response.ok) {
      const problems = data && typeof data === "object" && Array.isArray(data.problems) ? data.problems : [];
      const text = detailText(data, response.statusText || "error");
      throw new ApiError(response.status, "HTTP " + response.status + ": " + text, problems);
    }
    return data;
  }

  function errorText(error) {
    if (error instanceof ApiError) return error.message;
    return "Error: " + (error && error.message ? error.message : String(error));
  }

  // --- building the page (text only, never HTML) ---------------------------------------------------

  /** createElement with properties; string children become text nodes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function setText(el, text, kind) {
    el.textContent = text || "";
    el.classList.remove("ok", "error", "busy");
    if (kind) el.classList.add(kind);
    el.hidden = !text;
  }

  function badge(text, kind) {
    return h("span", { class: "badge " + (kind || "badge-" + String(text).replace(/[^a-z0-9_-]/gi, "")) }, text);
  }

  function isAdmin() {
    return state.role === "admin";
  }

  // --- formatting --------------------------------------------------------------------------------

  /** API times are ISO 8601 in UTC; one without a zone is taken as UTC. */
  function parseTime(iso) {
    if (!iso) return null;
    const text = /([zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : iso + "Z";
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function localTime(date, withSeconds) {
    const day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    const time = pad(date.getHours()) + ":" + pad(date.getMinutes()) + (withSeconds ? ":" + pad(date.getSeconds()) : "");
    return day + " " + time;
  }

  function seconds(value) {
    if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
    const s = Number(value);
    if (s < 10) return (Math.round(s * 10) / 10).toString() + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
  }

  function milliseconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 1000 ? Math.round(value) + " ms" : seconds(value / 1000);
  }

  function relative(date) {
    const diff = (Date.now() - date.getTime()) / 1000;
    const abs = Math.abs(diff);
    const amount = abs < 60 ? Math.round(abs) + " s" : abs < 7200 ? Math.round(abs / 60) + " min" : Math.round(abs / 3600) + " h";
    return diff >= 0 ? amount + " ago" : "in " + amount;
  }

  /** A <time> element: the short local time and how long ago; the full time as its tooltip. */
  function timeEl(iso) {
    const date = parseTime(iso);
    if (!date) return h("span", { class: "muted" }, iso ? String(iso) : "–");
    const sameDay = new Date().toDateString() === date.toDateString();
    const recent = Math.abs(Date.now() - date.getTime()) < 86400000;
    const short = sameDay ? localTime(date, true).slice(11) : localTime(date, false);
    return h(
      "time",
      { datetime: date.toISOString(), title: localTime(date, true) + " (" + date.toISOString() + ")" },
      short,
      recent ? h("span", { class: "ago" }, relative(date)) : null,
    );
  }

  // --- refreshing --------------------------------------------------------------------------------

  /** Runs fn now and every `everyMs` (every second for a while after burst()); never two at once. */
  function poll(fn, everyMs, onError) {
    let timer = null;
    let busy = false;
    let again = false;
    let fastUntil = 0;
    const schedule = () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(run, Date.now() < fastUntil ? FAST_MS : everyMs);
    };
    async function run() {
      if (state.leaving) return;
      if (busy) {
        again = true;
        return;
      }
      window.clearTimeout(timer);
      if (document.hidden) {
        schedule(); // a tab nobody looks at does not poll; it refreshes as soon as it is shown again
        return;
      }
      busy = true;
      try {
        await fn();
        if (onError) onError(null);
      } catch (e) {
        if (onError && !state.leaving) onError(e);
      } finally {
        busy = false;
      }
      if (again) {
        again = false;
        run();
        return;
      }
      schedule();
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) run();
    });
    run();
    return {
      refresh: run,
      burst(ms) {
        fastUntil = Date.now() + (ms || 15000);
        run();
      },
    };
  }

  /** For a page's refresh errors: shows them in #load-error (role=alert), clears it on success. */
  function loadErrorReporter() {
    const el = document.getElementById("load-error");
    return (error) => {
      if (!el) return;
      if (error) setText(el, "Could not load: " + errorText(error), "error");
      else setText(el, "");
    };
  }

  // --- the frame of every page -------------------------------------------------------------------

  function drawHeader(me) {
    const top = document.getElementById("top");
    if (!top) return;
    const here = currentPage();
    const who = me.name || (me.token_id !== null && me.token_id !== undefined ? "token " + me.token_id : "token");
    const links = PAGES.map(([href, label]) =>
      h("li", null, h("a", { href: href, "aria-current": href === here ? "page" : null }, label)),
    );
    top.replaceChildren(
      h("a", { class: "brand", href: "index.html" }, "calsync admin"),
      h("nav", { "aria-label": "Main" }, h("ul", null, links)),
      h(
        "div",
        { class: "who" },
        h("span", { id: "whoami" }, "Signed in as ", h("strong", null, who), " ", badge(me.role, "badge-role")),
        h("button", { type: "button", class: "secondary", onclick: logout }, "Log out"),
      ),
    );
  }

  /** Every page but login: needs a token (else login), checks it, draws the frame, then runs the page. */
  async function start(page) {
    if (!token()) {
      toLogin();
      return;
    }
    let me;
    try {
      me = await api("GET", "/me");
    } catch (e) {
      if (!state.leaving) {
        const el = document.getElementById("load-error");
        if (el) setText(el, "Could not check the token: " + errorText(e), "error");
      }
      return;
    }
    state.me = me;
    state.role = me.role;
    document.body.classList.toggle("role-admin", me.role === "admin");
    drawHeader(me);
    for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = me.role !== "admin";
    for (const el of document.querySelectorAll("[data-viewer-note]")) el.hidden = me.role === "admin";
    await page(me);
  }

  /** Runs an action from a button: the button is disabled meanwhile; errors go to `out` as text. */
  async function act(button, out, action) {
    if (button) button.disabled = true;
    if (out) setText(out, "working…", "busy");
    try {
      const result = await action();
      return result;
    } catch (e) {
      if (out && !state.leaving) setText(out, errorText(e), "error");
      return undefined;
    } finally {
      if (button) button.disabled = false;
    }
  }

  /** Keeps the page's query string in step with its filters (so a filtered view can be linked). */
  function setQuery(params) {
    const clean = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) if (value) clean.set(key, value);
    const query = clean.toString();
    window.history.replaceState(null, "", currentPage() + (query ? "?" + query : ""));
  }

  window.CalsyncAdmin = {
    ApiError,
    api,
    act,
    badge,
    detailText,
    errorText,
    forgetToken,
    h,
    isAdmin,
    loadErrorReporter,
    logout,
    milliseconds,
    parseTime,
    poll,
    safeNext,
    seconds,
    setQuery,
    setText,
    setToken,
    start,
    state,
    timeEl,
    token,
    API_BASE,
    ADMIN_BASE,
  };
})();
