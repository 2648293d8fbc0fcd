/* /schedules: every schedule of the deployments the token may see (GET /api/v1/schedules),
 * refreshed every 5 s, each with its next due times and its last run or skip; "Run now"
 * for a token that may start its kind of run. */
"use strict";

(function () {
  const { el, api, poll, timeCell, fmtTime, flash } = IAC;
  let token = null;

  function kind(schedule) {
    if (schedule.kind === "apply" && schedule.auto_approve !== "never") {
      return `apply (auto-approve ${schedule.auto_approve})`;
    }
    return schedule.kind;
  }

  function next(schedule) {
    if (!schedule.enabled) return el("span", { class: "muted" }, "disabled");
    // The next few, in the schedule's own zone as well as the browser's.
    const title = schedule.upcoming.map((t) => t.replace("T", " ")).join("\n");
    return el("span", { title }, timeCell(schedule.next_run_at));
  }

  function last(schedule) {
    const parts = [];
    if (schedule.last_run_id != null) {
      parts.push(el("a", { href: `/runs/${schedule.last_run_id}` }, `#${schedule.last_run_id}`), " ");
      parts.push(timeCell(schedule.last_run_at));
    }
    if (schedule.last_skipped) {
      parts.push(el("div", { class: "wait-reason skipped" }, `skipped ${schedule.last_skipped}`));
    }
    return parts.length ? parts : "-";
  }

  function mayRun(schedule) {
    if (!token) return false;
    return schedule.kind === "apply" ? token.may.operator : token.may.planner;
  }

  async function runNow(schedule, button) {
    button.disabled = true;
    try {
      const path = `/deployments/${encodeURIComponent(schedule.deployment)}/schedules/${schedule.id}/trigger`;
      const out = await api(path, { method: "POST" });
      flash(`Schedule ${schedule.id} queued run #${out.run_id}.`, "info");
      await load();
    } catch (err) {
      if (!(err instanceof IAC.AuthError)) flash(`Could not run schedule ${schedule.id}: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function row(schedule) {
    let action = "";
    if (mayRun(schedule)) {
      action = el("button", { type: "button", class: "run-now" }, "Run now");
      action.addEventListener("click", () => runNow(schedule, action));
    }
    return el(
      "tr",
      { dataset: { schedule: schedule.id, deployment: schedule.deployment, enabled: schedule.enabled } },
      el("td", { class: "num" }, String(schedule.id)),
      el("td", {}, schedule.deployment),
      el("td", { title: schedule.description }, el("code", {}, schedule.cron)),
      el("td", {}, schedule.timezone),
      el("td", { class: "kind" }, kind(schedule)),
      el("td", { class: "next" }, next(schedule)),
      el("td", { class: "last" }, last(schedule)),
      el("td", {}, action),
    );
  }

  async function load() {
    const schedules = await api("/schedules");
    const rows = schedules.map(row);
    if (rows.length === 0) {
      rows.push(
        el("tr", { class: "placeholder" }, el("td", { colspan: 8 }, "No schedule. Add one with `iac schedules add` or POST /api/v1/deployments/{name}/schedules.")),
      );
    }
    document.querySelector("#schedules tbody").replaceChildren(...rows);
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!IAC.getToken()) return IAC.toLogin("missing");
    IAC.me().then((me) => {
      token = me;
      poll(load, 5000);
    });
  });
})();
