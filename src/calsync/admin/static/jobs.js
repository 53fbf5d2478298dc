/* The jobs page: GET /api/v1/jobs every 5 s; run now, enable/disable, change the interval (PATCH). */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const h = A.h;
  const tbody = document.querySelector("#jobs tbody");
  const rows = new Map(); // job name -> row parts
  let poller = null;

  const enc = encodeURIComponent;

  function afterChange() {
    if (poller) poller.burst();
  }

  function nextRun(job) {
    if (job.run_requested) return [A.badge("run requested", "badge-syncing")];
    if (!job.enabled) return [h("span", { class: "muted" }, "– (disabled)")];
    return [A.timeEl(job.next_run_at)];
  }

  /** The interval as the API will take it: an integer when it looks like one, else the text as typed. */
  function intervalValue(text) {
    const trimmed = text.trim();
    return /^-?\d+$/.test(trimmed) ? Number(trimmed) : trimmed;
  }

  function makeRow(job) {
    const name = job.name;
    const tr = h("tr", { "data-job": name });
    const cells = {
      enabled: h("td", { "data-col": "enabled" }),
      interval: h("td", { class: "interval", "data-col": "interval" }),
      lastRun: h("td", { "data-col": "last-run" }),
      outcome: h("td", { class: "outcome", "data-col": "outcome" }),
      duration: h("td", { class: "num", "data-col": "duration" }),
      next: h("td", { "data-col": "next-run" }),
      runs: h("td", { class: "num", "data-col": "runs" }),
      actions: h("div", { class: "buttons" }),
    };
    const result = h("output", { class: "result", "aria-label": "Result for " + name, hidden: true });
    const row = { tr, cells, result, name, enabled: null, input: null, dirty: false };

    if (A.isAdmin()) {
      const id = "interval-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
      const input = h("input", { id: id, type: "number", min: "1", step: "1", inputmode: "numeric", class: "short" });
      input.addEventListener("input", () => {
        row.dirty = true;
      });
      const save = h("button", { type: "button", class: "secondary", "aria-label": "Save interval of " + name }, "Save");
      const submit = () =>
        A.act(save, result, async () => {
          const job2 = await A.api("PATCH", "/jobs/" + enc(name), { interval_seconds: intervalValue(input.value) });
          row.dirty = false;
          A.setText(result, "interval saved: " + (job2 ? job2.interval_seconds : input.value) + " s", "ok");
          if (job2) update(row, job2);
          afterChange();
        });
      save.addEventListener("click", submit);
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") {
          event.preventDefault();
          submit();
        }
      });
      cells.interval.append(
        h("label", { for: id, class: "sr-only" }, "Interval of " + name + " in seconds"),
        input,
        h("span", { class: "muted small" }, " s "),
        save,
      );
      row.input = input;
    }

    tr.append(h("th", { scope: "row" }, name), cells.enabled, cells.interval, cells.lastRun, cells.outcome, cells.duration);
    tr.append(cells.next, cells.runs);
    if (A.isAdmin()) tr.append(h("td", { class: "actions" }, cells.actions, result));
    return row;
  }

  function actionButtons(row, job) {
    const name = job.name;
    const run = h("button", { type: "button", "aria-label": "Run " + name + " now" }, "Run now");
    run.addEventListener("click", () =>
      A.act(run, row.result, async () => {
        const job2 = await A.api("POST", "/jobs/" + enc(name) + "/run");
        A.setText(row.result, "run requested", "ok");
        if (job2) update(row, job2);
        afterChange();
      }),
    );
    const toggle = h(
      "button",
      { type: "button", class: "secondary", "aria-label": (job.enabled ? "Disable " : "Enable ") + name },
      job.enabled ? "Disable" : "Enable",
    );
    toggle.addEventListener("click", () =>
      A.act(toggle, row.result, async () => {
        const job2 = await A.api("PATCH", "/jobs/" + enc(name), { enabled: !job.enabled });
        A.setText(row.result, job.enabled ? "disabled" : "enabled", "ok");
        if (job2) update(row, job2);
        afterChange();
      }),
    );
    return [run, toggle];
  }

  function update(row, job) {
    const c = row.cells;
    c.enabled.replaceChildren(job.enabled ? A.badge("enabled", "badge-synced") : A.badge("disabled", "badge-disabled"));
    if (row.input) {
      const editing = document.activeElement === row.input || row.dirty;
      if (!editing) row.input.value = String(job.interval_seconds);
    } else {
      c.interval.replaceChildren(A.seconds(job.interval_seconds));
    }
    c.lastRun.replaceChildren(A.timeEl(job.last_run_at));
    c.outcome.replaceChildren(job.last_outcome ? String(job.last_outcome) : h("span", { class: "muted" }, "–"));
    c.duration.replaceChildren(A.milliseconds(job.last_duration_ms));
    c.next.replaceChildren(...nextRun(job));
    c.runs.replaceChildren(String(job.runs ?? 0));
    if (A.isAdmin() && row.enabled !== job.enabled) {
      c.actions.replaceChildren(...actionButtons(row, job));
      row.enabled = job.enabled;
    }
  }

  async function refresh() {
    const list = await A.api("GET", "/jobs");
    const jobs = Array.isArray(list) ? list : [];
    for (const job of jobs) {
      let row = rows.get(job.name);
      if (!row) {
        row = makeRow(job);
        rows.set(job.name, row);
        tbody.append(row.tr);
      }
      update(row, job);
    }
  }

  A.start(() => {
    poller = A.poll(refresh, 5000, A.loadErrorReporter());
  });
})();
