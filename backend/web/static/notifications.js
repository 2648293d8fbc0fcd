/* /notifications: the destinations the token sees (GET /api/v1/notifications/destinations),
 * the chosen one's recent deliveries with each attempt, refreshed every 2 s, and a
 * "Send test" button for admins (the API decides either way). */
"use strict";

(function () {
  const { el, api, poll, statusBadge, timeCell, fmtTime, flash, me } = IAC;
  let chosen = null; // the destination whose deliveries are shown
  let admin = false;

  async function sendTest(destination, button) {
    button.disabled = true;
    try {
      const sent = await api(`/notifications/destinations/${destination.id}/test`, { method: "POST" });
      flash(`Test queued for ${destination.name}: delivery ${sent.delivery_id}.`, "info");
      chosen = destination.id;
      await load();
    } catch (err) {
      if (err instanceof IAC.ApiError) flash(`Sending a test failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  function destinationRow(d) {
    const counts = d.deliveries || {};
    const show = el("button", { type: "button", class: "link show" }, "Deliveries");
    show.addEventListener("click", () => {
      chosen = d.id;
      load();
    });
    const actions = el("td", { class: "actions" }, show);
    if (admin) {
      const test = el("button", { type: "button", class: "send-test" }, "Send test");
      test.disabled = !d.enabled;
      test.addEventListener("click", () => sendTest(d, test));
      actions.append(" ", test);
    }
    return el(
      "tr",
      { dataset: { destination: d.name, id: d.id }, class: d.id === chosen ? "chosen" : "" },
      el("td", {}, d.name),
      el("td", {}, d.kind, d.signed ? el("span", { class: "tag" }, "signed") : ""),
      el("td", {}, el("code", {}, d.url_host)),
      el("td", {}, d.deployment || "every deployment"),
      el("td", { class: "events" }, d.events.map((e) => el("span", { class: "tag" }, e))),
      el("td", {}, d.enabled ? "yes" : "no"),
      el(
        "td",
        { class: "counts", title: "delivered / pending / failed" },
        `${counts.delivered || 0} / ${counts.pending || 0} / ${counts.failed || 0}`,
      ),
      actions,
    );
  }

  function attempt(a) {
    const what = a.status_code === null ? "no answer" : `HTTP ${a.status_code}`;
    return el(
      "li",
      { class: a.error ? "attempt failed" : "attempt" },
      timeCell(a.at),
      ` ${what} · ${a.duration_ms} ms · ${a.backend_id}`,
      a.error ? el("div", { class: "error" }, a.error) : "",
    );
  }

  function deliveryRow(d) {
    const run = d.run_id ? el("a", { href: `/runs/${d.run_id}` }, `#${d.run_id}`) : "";
    const status = el("td", {}, statusBadge(d.status));
    if (d.status === "pending" && d.next_attempt_at) {
      status.append(el("div", { class: "wait-reason" }, `next attempt ${fmtTime(d.next_attempt_at)}`));
    }
    return el(
      "tr",
      { dataset: { delivery: d.id, status: d.status } },
      el("td", { class: "num" }, String(d.id)),
      el("td", {}, el("code", {}, d.event)),
      el("td", {}, run),
      status,
      el("td", { class: "num" }, String(d.attempts)),
      el("td", {}, el("ol", { class: "attempts" }, d.attempt_log.map(attempt))),
      el("td", {}, timeCell(d.created_at)),
    );
  }

  async function load() {
    const destinations = await api("/notifications/destinations");
    if (!destinations.some((d) => d.id === chosen)) chosen = destinations.length ? destinations[0].id : null;
    const rows = destinations.map(destinationRow);
    if (rows.length === 0) {
      rows.push(
        el("tr", { class: "placeholder" }, el("td", { colspan: 8 }, "No destination. Add one with `iac notifications add NAME --url URL` or POST /api/v1/notifications/destinations.")),
      );
    }
    document.querySelector("#destinations tbody").replaceChildren(...rows);
    const body = document.querySelector("#deliveries tbody");
    const current = destinations.find((d) => d.id === chosen);
    document.getElementById("deliveries-of").textContent = current ? `to ${current.name}` : "";
    if (current) {
      const deliveries = await api(`/notifications/destinations/${current.id}/deliveries?limit=20`);
      const list = deliveries.map(deliveryRow);
      if (list.length === 0) {
        list.push(el("tr", { class: "placeholder" }, el("td", { colspan: 7 }, "Nothing sent yet.")));
      }
      body.replaceChildren(...list);
    } else {
      body.replaceChildren(el("tr", { class: "placeholder" }, el("td", { colspan: 7 }, "No destination.")));
    }
    document.getElementById("refreshed").textContent = `updated ${fmtTime(new Date())}`;
  }

  document.addEventListener("DOMContentLoaded", async () => {
    if (!IAC.getToken()) return IAC.toLogin("missing");
    const token = await me();
    admin = Boolean(token && token.may.admin);
    poll(load, 2000);
  });
})();
