/* /login: check the pasted token against the API, keep it in sessionStorage, go back. */
"use strict";

(function () {
  /** Where to go after signing in: a path of this site only (no "//host" or "/\host"). */
  function nextPath() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    if (!next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
    if (next.startsWith("/login")) return "/";
    return next;
  }

  function say(text) {
    const message = document.getElementById("login-message");
    message.textContent = text;
    message.hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("login-form");
    const input = document.getElementById("token");
    const button = form.querySelector("button");
    input.focus();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return say("Paste an API token.");
      button.disabled = true;
      try {
        const response = await fetch("/api/v1/runs?limit=1", {
          headers: { Authorization: "Bearer " + token, Accept: "application/json" },
          cache: "no-store",
        });
        if (response.status === 401) {
          say("The API token was refused (invalid, expired or revoked). Paste a valid token.");
          input.select();
          return;
        }
        if (!response.ok) {
          say(`Cannot check the token: the backend answered HTTP ${response.status}.`);
          return;
        }
        IAC.setToken(token);
        location.replace(nextPath());
      } catch (err) {
        say(`Cannot reach the backend: ${err.message}`);
      } finally {
        button.disabled = false;
      }
    });
  });
})();
