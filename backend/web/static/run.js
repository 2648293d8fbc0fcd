/* /runs/{id}: the run's facts, its plan (counts, resource changes, drift), history,
 * approve/discard/cancel buttons, and the live log.
 *
 * The log is GET /api/v1/runs/{id}/logs?follow=true read with fetch() (EventSource cannot
 * send the Authorization header). Each message event carries {"seq": first, "text": "..."}
 * (a block of lines joined by newlines, as stored) with `id: <last seq>`; after a dropped connection the page reconnects with
 * `Last-Event-ID: <last seq shown>`, so the log resumes with no gap and no line twice. */
"use strict";

(function () {
  const { el, api, apiFetch, flash, statusBadge, timeCell, fmtSeconds, TERMINAL, counts } = IAC;
  const EXECUTING = new Set(["running", "applying"]);

  let runId = 0;
  let run = null;
  let mayOperate = false; // the token's role includes operator (GET /me)

  // -- the run's facts -------------------------------------------------------------------
  function fact(name, ...value) {
    return [el("dt", {}, name), el("dd", { dataset: { fact: name.toLowerCase() } }, ...value)];
  }

  function render() {
    document.getElementById("run-title").textContent = `${run.operation} of ${run.deployment}`;
    document.getElementById("run-status").replaceWith(statusBadge(run.status, "run-status"));
    const changes = run.changes ? counts(run.changes) : run.has_changes === null ? "" : run.has_changes ? "yes" : "no";
    document
      .getElementById("run-facts")
      .replaceChildren(
        ...fact("Deployment", run.deployment),
        ...fact("Operation", run.operation),
        ...fact("Approval", run.auto_approve === "never" ? "by a person" : `auto: ${run.auto_approve}`),
        ...fact("Created by", run.created_by || "—"),
        ...fact("Runner", run.runner_id || "—"),
        ...fact("Priority", String(run.priority)),
        ...fact("Tool", run.tool_version || "—"),
        ...fact("Config", `v${run.config_version}`),
        ...fact("Queued", timeCell(run.created_at)),
        ...fact("Started", timeCell(run.started_at) || "—"),
        ...fact("Ended", timeCell(run.ended_at) || "—"),
        ...fact("Running", run.started_at ? fmtSeconds(run.running_seconds) : "—"),
        ...fact("Waiting", `${fmtSeconds(run.waiting_seconds)} (queued and awaiting approval)`),
        ...fact("Changes", changes || "—"),
        ...fact("Exit code", run.exit_code === null ? "—" : String(run.exit_code)),
        ...(run.status === "queued" && run.wait_reason ? fact("Wait reason", run.wait_reason) : []),
        ...(run.cancel_requested ? fact("Cancel", `${run.cancel_requested} cancel requested`) : []),
      );
    const error = document.getElementById("run-error");
    error.textContent = run.error_msg || "";
    error.hidden = !run.error_msg;
    document
      .getElementById("events")
      .replaceChildren(
        ...(run.events || []).map((e) =>
          el(
            "li",
            { dataset: { kind: e.kind } },
            timeCell(e.at), " ", el("b", {}, e.kind),
            e.message ? ` ${e.message}` : "",
            e.actor && e.actor !== "system" ? el("span", { class: "actor" }, ` by ${e.actor}`) : "",
            e.comment ? el("q", { class: "comment" }, e.comment) : "",
          ),
        ),
      );
    const ended = TERMINAL.has(run.status);
    // What the token may not do is not offered (the API refuses it anyway).
    const deciding = run.status === "awaiting_approval" && mayOperate;
    document.getElementById("approve").hidden = !deciding;
    document.getElementById("discard").hidden = !deciding;
    if (run.plan_sha256 && run.plan_sha256 !== shownPlan) loadPlan(run.plan_sha256);
    if (ended && !outputsShown && run.status === "succeeded" && run.operation !== "plan") loadOutputs();
    if (ended && mayOperate && !lockChecked) checkLock();
    const cancel = document.getElementById("cancel");
    cancel.hidden = ended || !mayOperate;
    cancel.disabled = Boolean(run.cancel_requested);
    cancel.textContent = run.cancel_requested ? "Cancel requested…" : "Cancel";
    document.getElementById("force-cancel").hidden = ended || !mayOperate || !EXECUTING.has(run.status);
  }

  // -- the plan: counts, resource changes (replacements and deletions first), drift --------
  const SYMBOLS = { create: "+", update: "~", delete: "-", replace: "-/+", read: "<=" };
  let shownPlan = "";

  function show(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function changeRow(change) {
    const before = change.before || {};
    const after = change.after || {};
    const forcing = new Set(change.forces_replacement || []);
    const attributes = (change.changed || []).map((path) => {
      const top = path.split(/[.[]/)[0];
      return el(
        "li",
        {},
        el("code", {}, path),
        forcing.has(path) ? el("span", { class: "forces" }, " forces replacement") : "",
        el("div", { class: "diff" }, el("del", {}, show(before[top])), " → ", el("ins", {}, show(after[top]))),
      );
    });
    const detail = attributes.length
      ? el("details", {}, el("summary", {}, `${attributes.length} changed`), el("ul", {}, ...attributes))
      : "";
    return el(
      "tr",
      { dataset: { action: change.action, address: change.address } },
      el("td", {}, el("span", { class: `action ${change.action}` }, `${SYMBOLS[change.action] || "?"} ${change.action}`)),
      el("td", {}, el("code", {}, change.address), change.reason ? el("div", { class: "muted" }, change.reason) : ""),
      el("td", {}, detail),
    );
  }

  async function loadPlan(sha) {
    shownPlan = sha;
    let plan;
    try {
      plan = await api(`/runs/${runId}/plan`);
    } catch (err) {
      if (!(err instanceof IAC.ApiError && err.status === 404)) shownPlan = "";
      return;
    }
    document.getElementById("plan").hidden = false;
    document.getElementById("plan-counts").replaceChildren(counts(plan.counts));
    document.getElementById("plan-digest").textContent = `Saved plan SHA-256 ${sha}: the apply runs this exact plan.`;
    const rows = plan.resource_changes.map(changeRow);
    if (!rows.length) rows.push(el("tr", { class: "placeholder" }, el("td", { colspan: 3 }, "No resource changes.")));
    document.querySelector("#changes tbody").replaceChildren(...rows);
    const outputs = plan.output_changes.map((o) =>
      el("li", {}, el("span", { class: `action ${o.action}` }, SYMBOLS[o.action] || "?"), " ", el("code", {}, o.name), ": ", el("del", {}, show(o.before)), " → ", el("ins", {}, show(o.after))),
    );
    document.getElementById("output-changes").replaceChildren(...(outputs.length ? [el("h3", {}, "Outputs"), el("ul", {}, ...outputs)] : []));
    const drift = document.getElementById("drift");
    drift.hidden = plan.resource_drift.length === 0;
    drift.querySelector("tbody").replaceChildren(...plan.resource_drift.map(changeRow));
  }

  // -- after an apply: the outputs; after a run that left its state locked: a release -----
  let outputsShown = false;
  let lockChecked = false;

  async function loadOutputs() {
    outputsShown = true;
    const outputs = await api(`/deployments/${encodeURIComponent(run.deployment)}/outputs`).catch(() => []);
    const section = document.getElementById("outputs");
    section.hidden = outputs.length === 0;
    section.querySelector("tbody").replaceChildren(
      ...outputs.map((o) =>
        el("tr", { dataset: { output: o.name } }, el("td", {}, el("code", {}, o.name)), el("td", {}, show(o.value))),
      ),
    );
  }

  async function checkLock() {
    lockChecked = true;
    const state = await api(`/deployments/${encodeURIComponent(run.deployment)}/state`).catch(() => null);
    // A lock still held by this run, which has ended: its holder is gone.
    document.getElementById("unlock").hidden = !(state && state.lock && state.lock.run_id === run.id);
  }

  async function refresh() {
    run = await api(`/runs/${runId}`);
    render();
    return !TERMINAL.has(run.status);
  }

  // -- actions ---------------------------------------------------------------------------
  function confirmText(action) {
    const what = `run ${run.id} (${run.operation} of ${run.deployment})`;
    if (action === "approve") {
      return `Approve ${what}? Terraform will apply the saved plan.`;
    }
    if (action === "unlock") {
      return `Release the state lock of ${run.deployment}, which ${what} still holds? Only do this when no terraform of this run is running any more.`;
    }
    if (action === "discard") {
      return `Discard ${what}? Its plan is not applied; the deployment's next run may start.`;
    }
    if (action === "cancel") {
      return `Cancel ${what}? Terraform is interrupted and stops cleanly, releasing its state lock.`;
    }
    return (
      `Force-cancel ${what}? Its processes are killed at once; the backend releases the ` +
      `state lock, and a resource being changed may be left tainted.`
    );
  }

  async function act(action) {
    if (!run || !window.confirm(confirmText(action))) return;
    const path = {
      approve: `/runs/${runId}/approve`,
      discard: `/runs/${runId}/discard`,
      unlock: `/deployments/${encodeURIComponent(run.deployment)}/state/unlock`,
      cancel: `/runs/${runId}/cancel`,
      force: `/runs/${runId}/cancel?force=true`,
    }[action];
    try {
      await api(path, { method: "POST" });
      flash(null);
      if (action === "unlock") lockChecked = false;
      await refresh();
    } catch (err) {
      if (!(err instanceof IAC.AuthError)) flash(`Could not ${action === "force" ? "force-cancel" : action}: ${err.message}`);
    }
  }

  // -- the log ---------------------------------------------------------------------------
  // The page keeps the last MAX_LINES lines (a browser slows down with millions of nodes);
  // the whole log is one click away (Download). sessionStorage "iac.maxLogLines" changes
  // the limit for this tab (the tests lower it).
  const MAX_LINES = Number(sessionStorage.getItem("iac.maxLogLines")) || 20000;
  const ansi = new IAC.AnsiRenderer();
  let lastSeq = 0;
  let following = true;
  let dropped = 0;

  function logBox() {
    return document.getElementById("log");
  }

  function streamState(text) {
    document.getElementById("stream-state").textContent = text;
  }

  function appendBatch(first, lines) {
    let html = "";
    for (let i = 0; i < lines.length; i++) {
      const seq = first + i;
      if (seq <= lastSeq) continue; // already shown (a replay overlapping a resume)
      if (seq > lastSeq + 1) {
        html += `<span class="line gap">[lines ${lastSeq + 1}–${seq - 1} missing]</span>`;
      }
      // The backend's own header lines ("==> plan phase: terraform init ...").
      const kind = lines[i].startsWith("==> ") ? "line phase" : "line";
      html += `<span class="${kind}" data-seq="${seq}">${ansi.toHtml(lines[i])}</span>`;
      lastSeq = seq;
    }
    if (!html) return;
    const box = logBox();
    // Where the user is now, not what the last scroll event said: a scroll up whose event
    // has not been handled yet must not be undone by this batch.
    if (box.scrollHeight - box.scrollTop - box.clientHeight >= 24) following = false;
    box.insertAdjacentHTML("beforeend", html);
    trim(box);
    if (following) box.scrollTop = box.scrollHeight;
    else document.getElementById("follow").hidden = false;
  }

  function trim(box) {
    let excess = box.childElementCount - MAX_LINES;
    if (excess <= 0) return;
    dropped += excess;
    while (excess-- > 0) box.firstElementChild.remove();
    const note = document.getElementById("log-trimmed");
    note.textContent = `${dropped} earlier lines are not shown here; Download has the whole log.`;
    note.hidden = false;
  }

  /** Save the whole stored log as a text file (fetched with the token, so not a link). */
  async function download() {
    try {
      const response = await apiFetch(`/runs/${runId}/logs`, { headers: { Accept: "text/plain" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const text = IAC.stripAnsi(await response.text());
      const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      const link = el("a", { href: url, download: `run-${runId}.log` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      if (!(err instanceof IAC.AuthError)) flash(`Could not download the log: ${err.message}`);
    }
  }

  function onEvent(event) {
    if (event.type === "message") {
      const batch = JSON.parse(event.data);
      appendBatch(batch.seq, batch.text.split("\n"));
    } else if (event.type === "status") {
      const { status } = JSON.parse(event.data);
      if (run) {
        run.status = status;
        render();
      }
      refresh().catch(() => {});
    } else if (event.type === "end") {
      return true;
    }
    return false;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /** Follow the log until the `end` event, reconnecting (with Last-Event-ID) when the
   * connection drops: 0.5 s after the first failure, doubling up to 5 s. */
  async function followLog() {
    let delay = 500;
    for (;;) {
      let ended = false;
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastSeq > 0) headers["Last-Event-ID"] = String(lastSeq);
        streamState(lastSeq > 0 ? "reconnecting…" : "connecting…");
        const response = await apiFetch(`/runs/${runId}/logs?follow=true`, { headers });
        if (response.status === 404) {
          streamState("");
          flash(`Run ${runId} does not exist.`);
          return;
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        streamState("live");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new IAC.SseParser((event) => {
          if (onEvent(event)) ended = true;
        });
        while (!ended) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
        if (ended) {
          reader.cancel().catch(() => {});
          streamState(`end of log (${lastSeq} lines)`);
          return;
        }
      } catch (err) {
        if (err instanceof IAC.AuthError) return;
      }
      streamState(`connection lost; reconnecting in ${delay / 1000} s…`);
      await sleep(delay);
      delay = Math.min(delay * 2, 5000);
    }
  }

  function trackScroll() {
    const box = logBox();
    const followButton = document.getElementById("follow");
    box.addEventListener("scroll", () => {
      following = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      followButton.hidden = following;
    });
    followButton.addEventListener("click", () => {
      following = true;
      box.scrollTop = box.scrollHeight;
      followButton.hidden = true;
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    runId = Number(document.body.dataset.runId);
    if (!IAC.getToken()) return IAC.toLogin("missing");
    trackScroll();
    IAC.me().then((token) => {
      mayOperate = Boolean(token && token.may.operator);
      if (run) render();
    });
    document.getElementById("approve").addEventListener("click", () => act("approve"));
    document.getElementById("discard").addEventListener("click", () => act("discard"));
    document.getElementById("unlock").addEventListener("click", () => act("unlock"));
    document.getElementById("cancel").addEventListener("click", () => act("cancel"));
    document.getElementById("force-cancel").addEventListener("click", () => act("force"));
    document.getElementById("download").addEventListener("click", download);
    IAC.poll(async () => {
      try {
        return await refresh();
      } catch (err) {
        if (err instanceof IAC.ApiError && err.status === 404) {
          flash(`Run ${runId} does not exist.`);
          return false;
        }
        throw err;
      }
    }, 2000);
    followLog();
  });
})();
