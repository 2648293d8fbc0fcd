/* /audit: the audit log, newest first, new entries added every 2 s (GET /api/v1/audit with
 * after_id), and whether its hash chain holds (GET /api/v1/audit/verify, once). */
"use strict";

(function () {
  const { el, api, poll, timeCell, fmtTime, flash } = IAC;
  let after = 0;

  function row(entry) {
    const refused = !/^2/.test(entry.result);
    return el(
      "tr",
      { dataset: { id: entry.id, actor: entry.actor }, class: refused ? "refused" : "" },
      el("td", { class: "num" }, String(entry.id)),
      el("td", {}, timeCell(entry.at)),
      el("td", {}, entry.actor),
      el("td", {}, entry.source || ""),
      el("td", {}, el("code", {}, entry.action)),
      el("td", {}, entry.target || ""),
      el("td", { class: "result" }, entry.result),
    );
  }

  async function load() {
    const body = document.querySelector("#audit tbody");
    for (;;) {
      const entries = await api(`/audit?after_id=${after}&limit=1000`);
      if (after === 0) body.replaceChildren();
      if (entries.length) {
        body.prepend(...entries.reverse().map(row));
        after = entries[0].id;
      }
      if (entries.length < 1000) break;
    }
    if (!body.childElementCount) {
      body.append(el("tr", { class: "placeholder" }, el("td", { colspan: 7 }, "No entries yet.")));
    }
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  async function chain() {
    const verdict = await api("/audit/verify");
    document.getElementById("chain").textContent = verdict.ok
      ? `hash chain holds (${verdict.entries} entries)`
      : `hash chain BROKEN at entry ${verdict.broken_at}: ${verdict.reason}`;
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!IAC.getToken()) return IAC.toLogin("missing");
    // The chain first: a token that may not read the log is told so once, not polled.
    chain().then(
      () => poll(load, 2000),
      (err) => {
        if (err instanceof IAC.ApiError) flash(`The audit log is not yours to read: ${err.message}`);
      },
    );
  });
})();
