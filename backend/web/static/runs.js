/* /: the runs overview, refreshed every 2 s from GET /api/v1/runs. */
"use strict";

(function () {
  const { el, api, poll, statusBadge, timeCell, fmtSeconds, fmtTime, counts } = IAC;

  function row(run) {
    const link = el("a", { href: `/runs/${run.id}` }, `#${run.id}`);
    const status = el("td", {}, statusBadge(run.status));
    if (run.status === "queued" && run.wait_reason) {
      status.append(el("div", { class: "wait-reason" }, run.wait_reason));
    }
    return el(
      "tr",
      { dataset: { runId: run.id, status: run.status } },
      el("td", {}, link),
      el("td", {}, el("a", { href: `/runs/${run.id}` }, run.deployment)),
      el("td", {}, run.operation, run.auto_approve !== "never" ? [" ", el("span", { class: "tag" }, `auto: ${run.auto_approve}`)] : ""),
      status,
      el("td", { class: "changes" }, counts(run.changes)),
      el("td", {}, run.runner_id || ""),
      el("td", { class: "num" }, run.priority),
      el("td", {}, timeCell(run.created_at)),
      el("td", {}, timeCell(run.started_at)),
      el("td", {}, timeCell(run.ended_at)),
      el("td", { class: "num running" }, run.started_at ? fmtSeconds(run.running_seconds) : ""),
      el("td", { class: "num waiting" }, fmtSeconds(run.waiting_seconds)),
    );
  }

  async function load() {
    const runs = await api("/runs?limit=200");
    const body = document.querySelector("#runs tbody");
    const rows = runs.map(row);
    if (rows.length === 0) {
      rows.push(
        el("tr", { class: "placeholder" }, el("td", { colspan: 12 }, "No runs yet. Start one with `iac plan <deployment>` or POST /api/v1/runs.")),
      );
    }
    body.replaceChildren(...rows);
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 2000));
})();
