/* Shared by every page: the API token, authenticated calls, polling, formatting,
 * ANSI colours to HTML and a Server-Sent Events parser. Exposed as window.IAC. */
"use strict";

(function () {
  const TOKEN_KEY = "iac.apiToken";
  const API = "/api/v1";
  const TERMINAL = new Set(["succeeded", "failed", "canceled", "timed_out", "discarded"]);

  /** "+2 ~1 -0" (and "±1" for replacements), each count in its action's colour. */
  function counts(changes) {
    if (!changes) return el("span", { class: "counts muted" }, "");
    const part = (cls, text) => el("span", { class: cls }, text);
    const parts = [
      part("add", `+${changes.add}`), " ",
      part("change", `~${changes.change}`), " ",
      part("destroy", `-${changes.destroy}`),
    ];
    if (changes.replace) parts.push(" ", part("replace", `±${changes.replace}`));
    return el("span", { class: "counts" }, ...parts);
  }

  // -- the token: sessionStorage only (this tab; never a URL or a cookie) ------------------
  function getToken() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function setToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  }

  function clearToken() {
    sessionStorage.removeItem(TOKEN_KEY);
  }

  class AuthError extends Error {}

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  /** Leave for /login, saying why and where to come back to (a path of this site). */
  function toLogin(reason) {
    clearToken();
    const params = new URLSearchParams({ reason });
    if (location.pathname !== "/login") {
      params.set("next", location.pathname + location.search);
    }
    location.replace("/login?" + params.toString());
  }

  /** The error text of a failed API response: its JSON `detail`, else the status line. */
  async function detailOf(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (body.detail !== undefined) return JSON.stringify(body.detail);
    } catch (_) {
      /* not JSON */
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  /** fetch() against the API with the bearer token; a refused token goes to /login. */
  async function apiFetch(path, options = {}) {
    const token = getToken();
    if (!token) {
      toLogin("missing");
      throw new AuthError("no API token");
    }
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", "Bearer " + token);
    if (!headers.has("Accept")) headers.set("Accept", "application/json");
    const response = await fetch(API + path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      toLogin("invalid");
      throw new AuthError(await detailOf(response));
    }
    return response;
  }

  /** An API call whose JSON body is returned; a non-2xx answer throws ApiError(detail). */
  async function api(path, options = {}) {
    const response = await apiFetch(path, options);
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    return response.status === 204 ? null : response.json();
  }

  // -- messages --------------------------------------------------------------------------
  function flash(text, kind = "error") {
    const box = document.getElementById("flash");
    if (!box) return;
    if (!text) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
  }

  /** Call `load` now and every `intervalMs` after the previous call finished. A failed
   * call shows why and keeps polling; `load` returning false stops the polling. */
  function poll(load, intervalMs) {
    let stopped = false;
    let failing = false;
    async function tick() {
      let again = true;
      try {
        again = (await load()) !== false;
        if (failing) flash(null);
        failing = false;
      } catch (err) {
        if (err instanceof AuthError) return;
        failing = true;
        flash(`Cannot load from the backend: ${err.message}. Retrying…`);
      }
      if (again && !stopped) setTimeout(tick, intervalMs);
    }
    tick();
    return () => {
      stopped = true;
    };
  }

  // -- formatting ------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === "") continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    );
  }

  function timeCell(iso) {
    return iso ? el("time", { datetime: iso, title: iso }, fmtTime(iso)) : "";
  }

  function fmtSeconds(value) {
    const seconds = Number(value) || 0;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const s = Math.floor(seconds);
    if (s < 3600) return `${Math.floor(s / 60)} m ${pad(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} m`;
  }

  function statusBadge(status, id) {
    return el("span", { class: "status", id, dataset: { status } }, status.replace(/_/g, " "));
  }

  function escapeHtml(text) {
    return text
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  // -- ANSI SGR colours to <span class="ansi-..."> ---------------------------------------
  // Terraform colours its output with SGR sequences; the state (colour, bold...) carries
  // over from one line to the next, as on a terminal. Other escape sequences are dropped.
  // Only classes are emitted, no inline styles (the page's CSP forbids them).
  const ESCAPE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-_]?)/g;
  const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

  class AnsiRenderer {
    constructor() {
      this.reset();
    }

    reset() {
      this.fg = null;
      this.bg = null;
      this.bold = false;
      this.dim = false;
      this.italic = false;
      this.underline = false;
    }

    apply(params) {
      const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => Number(p) || 0);
      for (let i = 0; i < codes.length; i++) {
        const c = codes[i];
        if (c === 0) this.reset();
        else if (c === 1) this.bold = true;
        else if (c === 2) this.dim = true;
        else if (c === 3) this.italic = true;
        else if (c === 4) this.underline = true;
        else if (c === 22) this.bold = this.dim = false;
        else if (c === 23) this.italic = false;
        else if (c === 24) this.underline = false;
        else if (c >= 30 && c <= 37) this.fg = c - 30;
        else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
        else if (c === 39) this.fg = null;
        else if (c >= 40 && c <= 47) this.bg = c - 40;
        else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
        else if (c === 49) this.bg = null;
        else if (c === 38 || c === 48) {
          // 256 colours (5;n): the 16 basic ones are kept; truecolor (2;r;g;b) is skipped.
          if (codes[i + 1] === 5) {
            const n = codes[i + 2];
            if (n < 16) this[c === 38 ? "fg" : "bg"] = n;
            i += 2;
          } else if (codes[i + 1] === 2) {
            i += 4;
          }
        }
      }
    }

    classes() {
      const names = [];
      if (this.fg !== null) names.push(`ansi-fg-${this.fg}`);
      if (this.bg !== null) names.push(`ansi-bg-${this.bg}`);
      if (this.bold) names.push("ansi-bold");
      if (this.dim) names.push("ansi-dim");
      if (this.italic) names.push("ansi-italic");
      if (this.underline) names.push("ansi-underline");
      return names.join(" ");
    }

    segment(text) {
      text = text.replace(CONTROL, "");
      if (!text) return "";
      const names = this.classes();
      const html = escapeHtml(text);
      return names ? `<span class="${names}">${html}</span>` : html;
    }

    /** One line of tool output as HTML: text escaped, colours as spans. */
    toHtml(line) {
      let html = "";
      let last = 0;
      ESCAPE.lastIndex = 0;
      let m;
      while ((m = ESCAPE.exec(line)) !== null) {
        html += this.segment(line.slice(last, m.index));
        if (m[2] === "m") this.apply(m[1]);
        last = ESCAPE.lastIndex;
        if (m[0] === "") ESCAPE.lastIndex++; // never loop on an empty match
      }
      return html + this.segment(line.slice(last));
    }
  }

  function stripAnsi(text) {
    return text.replace(ESCAPE, "").replace(CONTROL, "");
  }

  // -- Server-Sent Events over fetch() ---------------------------------------------------
  // EventSource cannot send an Authorization header, so the run page reads the stream with
  // fetch() and parses it here, as the HTML standard's EventSource would.
  class SseParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.type = "";
      this.data = [];
      this.lastEventId = "";
      this.skipLF = false;
    }

    feed(text) {
      if (!text) return;
      // A CR that ended the previous chunk may be the first half of a CRLF.
      if (this.skipLF && text.startsWith("\n")) text = text.slice(1);
      this.skipLF = false;
      this.buffer += text;
      const eol = /\r\n|\r|\n/g;
      let start = 0;
      let m;
      while ((m = eol.exec(this.buffer)) !== null) {
        this.line(this.buffer.slice(start, m.index));
        start = eol.lastIndex;
        if (start === this.buffer.length && m[0] === "\r") this.skipLF = true;
      }
      this.buffer = this.buffer.slice(start);
    }

    line(line) {
      if (line === "") return this.dispatch();
      if (line.startsWith(":")) return; // a comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.type = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    }

    dispatch() {
      const type = this.type || "message";
      const data = this.data.join("\n");
      const had = this.data.length > 0;
      this.type = "";
      this.data = [];
      if (had) this.onEvent({ type, data, lastEventId: this.lastEventId });
    }
  }

  // -- who is signed in: the token's name, role and scope (GET /me) ----------------------
  // Pages hide what the token may not do; the API decides either way.
  let mePromise = null;
  function me() {
    if (!mePromise) mePromise = api("/me").catch(() => null);
    return mePromise;
  }

  // -- every page but /login: sign out, and who is signed in ------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    const who = document.getElementById("whoami");
    if (who && getToken()) {
      me().then((token) => {
        if (!token) return;
        who.textContent = `${token.name} · ${token.role} · ${token.scope_text}`;
        // The audit log is an unscoped admin's (the API refuses everyone else).
        const audit = document.getElementById("nav-audit");
        if (audit) audit.hidden = !(token.may.admin && !token.scope);
      });
    }
    const signOut = document.getElementById("sign-out");
    if (signOut) {
      signOut.addEventListener("click", () => {
        clearToken();
        location.assign("/login?reason=signed_out");
      });
    }
  });

  window.IAC = {
    TERMINAL,
    counts,
    me,
    getToken,
    setToken,
    clearToken,
    toLogin,
    AuthError,
    ApiError,
    apiFetch,
    api,
    flash,
    poll,
    el,
    fmtTime,
    timeCell,
    fmtSeconds,
    statusBadge,
    escapeHtml,
    AnsiRenderer,
    stripAnsi,
    SseParser,
  };
})();
