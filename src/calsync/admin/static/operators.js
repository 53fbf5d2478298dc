/* The operators page: GET /api/v1/operators?state= every 5 s; add, enable, disable, move, verify, delete. */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const h = A.h;
  const tbody = document.querySelector("#operators tbody");
  const filter = document.getElementById("state-filter");
  const rows = new Map(); // email -> {tr, cells, actionsKey, result}
  let poller = null;

  const enc = encodeURIComponent;
  const COLUMNS = ["name", "source", "state", "subscription", "last-sync", "pending", "lag", "appointments", "incident"];

  function subscriptionCell(sub) {
    if (!sub) return [A.badge("missing", "badge-missing")];
    const state = sub.state || "unknown";
    const parts = [A.badge(state === "not_yet_heard" ? "not yet heard from" : state, "badge-" + state)];
    if (sub.last_heard) parts.push(h("span", { class: "small" }, " heard "), A.timeEl(sub.last_heard));
    else if (sub.subscribed_at) parts.push(h("span", { class: "small" }, " subscribed "), A.timeEl(sub.subscribed_at));
    return parts;
  }

  function incidentCell(op) {
    const incident = op.incident;
    if (incident) {
      const title = [incident.title, incident.message].filter(Boolean).join(": ");
      return [
        h("span", { class: "code", title: title }, incident.code),
        incident.opened === false ? h("span", { class: "muted small" }, " (streak)") : null,
      ];
    }
    if (op.last_error) {
      return [h("span", { class: "muted small", title: op.last_error.message || "" }, "last error: " + op.last_error.code)];
    }
    return [h("span", { class: "muted" }, "–")];
  }

  function sourceCell(op) {
    const source = op.source || "ews";
    if (!op.moving_from) return [source];
    return [source, h("span", { class: "muted small" }, " (moving from " + op.moving_from + ")")];
  }

  function dataCells(op) {
    return [
      [op.display_name || h("span", { class: "muted" }, "–")],
      sourceCell(op),
      [A.badge(op.state, "badge-" + op.state)],
      subscriptionCell(op.subscription),
      [A.timeEl(op.last_sync)],
      [String(op.pending_notifications ?? 0)],
      [A.seconds(op.lag_seconds ?? 0)],
      [String(op.appointments ?? 0)],
      incidentCell(op),
    ];
  }

  function afterChange() {
    if (poller) poller.burst();
  }

  function actionButtons(op, result) {
    const email = op.email;
    const toggle = op.enabled
      ? h("button", { type: "button", class: "secondary", "aria-label": "Disable " + email }, "Disable")
      : h("button", { type: "button", "aria-label": "Enable " + email }, "Enable");
    toggle.addEventListener("click", () =>
      A.act(toggle, result, async () => {
        const action = op.enabled ? "disable" : "enable";
        await A.api("POST", "/operators/" + enc(email) + "/" + action);
        A.setText(result, action === "enable" ? "enabled" : "disabled", "ok");
        afterChange();
      }),
    );
    const verify = h("button", { type: "button", class: "secondary", "aria-label": "Verify " + email }, "Verify");
    verify.addEventListener("click", () =>
      A.act(verify, result, async () => {
        const r = await A.api("POST", "/operators/" + enc(email) + "/verify");
        if (r && r.ok) {
          A.setText(result, "verify: ok" + (r.display_name ? " (" + r.display_name + ")" : ""), "ok");
        } else {
          A.setText(result, "verify: " + ((r && r.code) || "failed") + ": " + ((r && r.message) || ""), "error");
        }
      }),
    );
    const target = op.source === "graph" ? "ews" : "graph";
    const move = h("button", { type: "button", class: "secondary", "aria-label": "Move " + email + " to " + target }, "Move to " + target);
    move.addEventListener("click", () => {
      const question = "Read " + email + "'s calendar through " + target + " from now on? Its appointments and their ids stay; the next pass reads the whole calendar again.";
      if (!window.confirm(question)) return;
      A.act(move, result, async () => {
        await A.api("POST", "/operators/" + enc(email) + "/move", { to: target });
        A.setText(result, "moving to " + target, "ok");
        afterChange();
      });
    });
    const remove = h("button", { type: "button", class: "danger", "aria-label": "Delete " + email }, "Delete");
    remove.addEventListener("click", () => {
      if (!window.confirm("Delete operator " + email + "? Their appointments in calsync are deleted too.")) return;
      A.act(remove, result, async () => {
        await A.api("DELETE", "/operators/" + enc(email));
        A.setText(result, "deleted", "ok");
        afterChange();
      });
    });
    return [toggle, move, verify, remove];
  }

  function rowFor(op) {
    let row = rows.get(op.email);
    if (!row) {
      const tr = h("tr", { "data-email": op.email });
      const cells = [];
      tr.append(h("th", { scope: "row" }, op.email));
      for (let i = 0; i < COLUMNS.length; i += 1) {
        const td = h("td", { class: i >= 5 && i <= 7 ? "num" : null, "data-col": COLUMNS[i] });
        cells.push(td);
        tr.append(td);
      }
      // actions and their result (admins only): the buttons, and below them what the last one gave
      const buttons = h("div", { class: "buttons" });
      const result = h("output", { class: "result", "aria-label": "Result for " + op.email, hidden: true });
      if (A.isAdmin()) tr.append(h("td", { class: "actions" }, buttons, result));
      row = { tr, cells, actions: buttons, result, actionsKey: null };
      rows.set(op.email, row);
    }
    return row;
  }

  function render(list) {
    const seen = new Set();
    list.forEach((op) => {
      const row = rowFor(op);
      seen.add(op.email);
      const contents = dataCells(op);
      row.cells.forEach((td, i) => td.replaceChildren(...contents[i].filter((c) => c !== null)));
      row.tr.className = "state-" + op.state;
      const key = op.enabled + "/" + op.source;
      if (A.isAdmin() && row.actionsKey !== key) {
        row.actions.replaceChildren(...actionButtons(op, row.result));
        row.actionsKey = key;
      }
    });
    for (const [email, row] of rows) {
      if (!seen.has(email)) {
        row.tr.remove();
        rows.delete(email);
      }
    }
    // keep the API's order; move rows only when it changed (moving would take the focus away)
    const wanted = list.map((op) => rows.get(op.email).tr);
    const current = Array.from(tbody.children).filter((el) => el.dataset.email !== undefined);
    if (wanted.length !== current.length || wanted.some((tr, i) => tr !== current[i])) {
      tbody.replaceChildren(...wanted);
    }
    const empty = tbody.querySelector("tr.empty");
    if (!list.length && !empty) {
      const columns = document.querySelectorAll("#operators thead th:not([hidden])").length;
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: columns }, filter.value ? "No operators in state " + filter.value + "." : "No operators yet.")));
    } else if (list.length && empty) {
      empty.remove();
    }
    document.getElementById("operator-count").textContent = list.length + " operator(s)";
  }

  async function refresh() {
    const state = filter.value;
    const list = await A.api("GET", "/operators" + (state ? "?state=" + enc(state) : ""));
    render(Array.isArray(list) ? list : []);
  }

  const initial = new URLSearchParams(window.location.search).get("state");
  if (initial && Array.from(filter.options).some((o) => o.value === initial)) filter.value = initial;

  filter.addEventListener("change", () => {
    A.setQuery({ state: filter.value });
    tbody.replaceChildren();
    rows.clear();
    if (poller) poller.refresh();
  });
  document.getElementById("filter").addEventListener("submit", (e) => e.preventDefault());

  const form = document.getElementById("add-operator");
  const addResult = document.getElementById("add-result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const email = document.getElementById("add-email").value.trim();
    const name = document.getElementById("add-name").value.trim();
    const enabled = document.getElementById("add-enabled").checked;
    const source = document.getElementById("add-source").value;
    if (!email) {
      A.setText(addResult, "Enter the operator's e-mail address.", "error");
      return;
    }
    const body = { email: email, enabled: enabled };
    if (name) body.display_name = name;
    if (source) body.source = source;
    A.act(form.querySelector("button[type=submit]"), addResult, async () => {
      const op = await A.api("POST", "/operators", body);
      const via = op && op.source ? " through " + op.source : "";
      A.setText(addResult, "Added " + ((op && op.email) || email) + via + (enabled ? " (sync enabled)" : ""), "ok");
      form.reset();
      document.getElementById("add-enabled").checked = true;
      afterChange();
    });
  });

  A.start(() => {
    poller = A.poll(refresh, 5000, A.loadErrorReporter());
  });
})();
