/* /drift: every deployment's drift status, drifted first, refreshed every 5 s; a check
   can be started from each row. */
"use strict";

(function () {
  const { el, api, poll, statusBadge, timeCell, fmtTime } = IAC;

  function what(detail) {
    if (!detail) return "";
    if (detail.reason) return detail.reason;
    const parts = (detail.resources || []).map((r) => `${r.address} (${r.action})`);
    return parts.concat((detail.outputs || []).map((o) => `output.${o}`)).join(", ");
  }

  async function checkNow(button, name) {
    button.disabled = true;
    try {
      const run = await api(`/deployments/${encodeURIComponent(name)}/drift`, { method: "POST" });
      button.replaceWith(el("a", { href: `/runs/${run.id}` }, `run ${run.id} queued`));
    } catch (error) {
      button.disabled = false;
      button.title = String(error.message || error);
      button.textContent = "Check failed to start";
    }
  }

  function row(d) {
    const button = el("button", { type: "button", class: "small" }, "Check now");
    button.addEventListener("click", () => checkNow(button, d.deployment));
    return el(
      "tr",
      { dataset: { deployment: d.deployment, status: d.status } },
      el("td", {}, d.deployment),
      el("td", { class: "drift-status" }, statusBadge(d.status)),
      el("td", {}, d.checked_at ? timeCell(d.checked_at) : "never"),
      el("td", {}, d.run_id ? el("a", { href: `/runs/${d.run_id}` }, `#${d.run_id}`) : ""),
      el("td", { class: "what" }, what(d.detail)),
      el("td", {}, button),
    );
  }

  async function load() {
    const fleet = await api("/drift");
    const counts = {};
    for (const d of fleet) counts[d.status] = (counts[d.status] || 0) + 1;
    document.getElementById("drift-summary").textContent = ["drifted", "check_failed", "unknown", "in_sync"]
      .filter((s) => counts[s])
      .map((s) => `${counts[s]} ${s.replace("_", " ")}`)
      .join(" · ");
    const rows = fleet.map(row);
    if (rows.length === 0) {
      rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: 6 }, "No deployment yet.")));
    }
    document.querySelector("#drift tbody").replaceChildren(...rows);
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 5000));
})();
