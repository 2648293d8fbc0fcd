/* /runners: the runner pool (labels, health, load, draining), refreshed every 2 s. */
"use strict";

(function () {
  const { el, api, poll, statusBadge, timeCell, fmtTime } = IAC;

  function row(runner) {
    const info = runner.info || {};
    // The labels the pool matches on (registered merged with reported), with their source.
    const labels = runner.effective_labels || [];
    const active = Number(info.active || 0);
    const max = Number(info.max_concurrent || 0);
    const load = max
      ? [el("meter", { min: 0, max, value: active, title: `${active} of ${max} slots busy` }), ` ${active} / ${max}`]
      : "unknown";
    const draining = Boolean(info.draining) || runner.status === "draining";
    const tools = (info.tools || []).map((t) => el("span", { class: "tag" }, `${t.name} ${t.version}`));
    return el(
      "tr",
      { dataset: { runner: runner.name, status: runner.status } },
      el("td", {}, runner.name),
      el("td", {}, el("code", {}, runner.address), runner.tls ? el("span", { class: "tag" }, "tls") : ""),
      el(
        "td",
        { class: "labels" },
        labels.map((l) =>
          el(
            "span",
            {
              class: `tag label source-${l.source}`,
              dataset: { source: l.source },
              title: l.registered_value == null
                ? `${l.source}`
                : `reported; registered as ${l.key}=${l.registered_value}`,
            },
            `${l.key}=${l.value}`,
          ),
        ),
      ),
      el("td", { class: "health" }, statusBadge(runner.status)),
      el("td", { class: "load" }, load),
      el("td", { class: "draining" }, draining ? "yes" : "no"),
      el("td", {}, tools),
      el("td", {}, timeCell(runner.last_seen)),
    );
  }

  async function load() {
    const runners = await api("/runners");
    const rows = runners.map(row);
    if (rows.length === 0) {
      rows.push(
        el("tr", { class: "placeholder" }, el("td", { colspan: 8 }, "No runner registered. Register one with `iac runners add` or POST /api/v1/runners.")),
      );
    }
    document.querySelector("#runners tbody").replaceChildren(...rows);
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  document.addEventListener("DOMContentLoaded", () => poll(load, 2000));
})();
