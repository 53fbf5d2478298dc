/* The failures page: GET /api/v1/failures?operator=&code=&state=&limit= every 5 s. */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const h = A.h;
  const tbody = document.querySelector("#failures tbody");
  const form = document.getElementById("failure-filter");
  const fields = {
    operator: document.getElementById("filter-operator"),
    code: document.getElementById("filter-code"),
    state: document.getElementById("filter-state"),
    limit: document.getElementById("filter-limit"),
  };
  const codesSeen = new Set();
  let poller = null;

  function filters() {
    return {
      operator: fields.operator.value.trim(),
      code: fields.code.value.trim(),
      state: fields.state.value,
      limit: fields.limit.value.trim(),
    };
  }

  function options(datalist, values) {
    datalist.replaceChildren(...Array.from(values).sort().map((v) => h("option", { value: v })));
  }

  function stateCell(f) {
    if (f.resolved_at || f.open === false) return [A.badge("resolved", "badge-synced"), h("span", { class: "sub" }, A.timeEl(f.resolved_at))];
    if (f.opened_at) return [A.badge("open incident", "badge-failing"), h("span", { class: "sub" }, "since ", A.timeEl(f.opened_at))];
    return [A.badge("open streak", "badge-dying"), h("span", { class: "sub" }, "not an incident yet")];
  }

  function row(f) {
    return h(
      "tr",
      { "data-id": f.id, class: f.open === false ? "resolved" : null },
      h("th", { scope: "row" }, f.operator),
      h("td", null, h("span", { class: "code" }, f.code), f.title ? h("span", { class: "sub" }, f.title) : null),
      h("td", null, f.kind || "", f.origin ? h("span", { class: "sub" }, "in " + f.origin) : null),
      h("td", { class: "message" }, f.message || ""),
      h("td", { class: "num" }, String(f.failures ?? "")),
      h("td", null, A.timeEl(f.first_failure_at)),
      h("td", null, A.timeEl(f.last_failure_at)),
      h("td", null, f.notified_at ? A.timeEl(f.notified_at) : h("span", { class: "muted" }, "–")),
      h("td", null, ...stateCell(f)),
    );
  }

  async function refresh() {
    const f = filters();
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(f)) if (value) params.set(key, value);
    const list = await A.api("GET", "/failures?" + params.toString());
    const failures = Array.isArray(list) ? list : [];
    failures.forEach((x) => codesSeen.add(x.code));
    options(document.getElementById("code-options"), codesSeen);
    if (failures.length) {
      tbody.replaceChildren(...failures.map(row));
    } else {
      tbody.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 9 }, "No failures match these filters.")));
    }
    document.getElementById("failure-count").textContent = failures.length + " failure streak(s)";
  }

  async function loadOperators() {
    try {
      const ops = await A.api("GET", "/operators");
      options(document.getElementById("operator-options"), (ops || []).map((o) => o.email));
    } catch (e) {
      // only suggestions: the filter works without them
    }
  }

  const initial = new URLSearchParams(window.location.search);
  for (const key of ["operator", "code", "limit"]) if (initial.get(key)) fields[key].value = initial.get(key);
  if (["open", "resolved", "all"].includes(initial.get("state"))) fields.state.value = initial.get("state");

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const f = filters();
    A.setQuery({ operator: f.operator, code: f.code, state: f.state, limit: f.limit === "100" ? "" : f.limit });
    if (poller) poller.refresh();
  });
  fields.state.addEventListener("change", () => form.requestSubmit());

  A.start(() => {
    loadOperators();
    poller = A.poll(refresh, 5000, A.loadErrorReporter());
  });
})();
