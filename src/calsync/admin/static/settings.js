/* The settings page: GET /api/v1/settings (the changeable ones editable, PATCH /api/v1/settings) and the
 * audit log (GET /api/v1/audit). */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const h = A.h;
  const form = document.getElementById("settings-form");
  const result = document.getElementById("settings-result");
  const problemsBox = document.getElementById("settings-problems");
  let current = null; // the last GET/PATCH answer
  let editors = new Map(); // name -> {input, original, read()}

  function shown(value) {
    if (value === null || value === undefined) return h("span", { class: "muted" }, "(unset)");
    if (Array.isArray(value)) return value.length ? value.join("; ") : h("span", { class: "muted" }, "(none)");
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function sameValue(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  /** An input for one changeable setting, typed after its current value. */
  function editor(name, value) {
    const id = "setting-" + name;
    let input;
    let read;
    if (typeof value === "boolean") {
      input = h("input", { id: id, name: name, type: "checkbox" });
      input.checked = value;
      read = () => input.checked;
    } else if (typeof value === "number") {
      input = h("input", { id: id, name: name, type: "number", step: Number.isInteger(value) ? "1" : "any", class: "short" });
      input.value = String(value);
      read = () => {
        const text = input.value.trim();
        return text !== "" && !Number.isNaN(Number(text)) ? Number(text) : text;
      };
    } else if (Array.isArray(value)) {
      input = h("input", { id: id, name: name, type: "text", class: "long", placeholder: "separate with ;" });
      input.value = value.join("; ");
      read = () =>
        input.value
          .split(/[;,]/)
          .map((s) => s.trim())
          .filter(Boolean);
    } else {
      input = h("input", { id: id, name: name, type: "text", class: "long" });
      input.value = value === null || value === undefined ? "" : String(value);
      read = () => (input.value.trim() === "" && value === null ? null : input.value);
    }
    editors.set(name, { input, original: value, read });
    return input;
  }

  function settingRow(name, value, editable, changeable, overrides) {
    const nameCell = editable
      ? h("th", { scope: "row" }, h("label", { for: "setting-" + name }, name))
      : h("th", { scope: "row" }, name);
    let source;
    if (name in overrides) source = [A.badge("override", "badge-override"), h("span", { class: "sub" }, "set at run time")];
    else source = [h("span", { class: "muted small" }, changeable ? "start-up value (changeable)" : "start-up value")];
    return h(
      "tr",
      { "data-setting": name, class: name in overrides ? "overridden" : null },
      nameCell,
      h("td", null, editable ? editor(name, value) : shown(value)),
      h("td", null, ...source),
    );
  }

  function render(data) {
    current = data;
    editors = new Map();
    const settings = (data && data.settings) || {};
    const changeable = (data && data.changeable) || [];
    const overrides = (data && data.overrides) || {};
    const names = Object.keys(settings).sort();
    document.querySelector("#settings-changeable tbody").replaceChildren(
      ...changeable
        .filter((name) => name in settings)
        .map((name) => settingRow(name, settings[name], A.isAdmin(), true, overrides)),
    );
    document.querySelector("#settings-other tbody").replaceChildren(
      ...names.filter((name) => !changeable.includes(name)).map((name) => settingRow(name, settings[name], false, false, overrides)),
    );
  }

  function showProblems(error) {
    const list = document.getElementById("settings-problem-list");
    if (!error) {
      problemsBox.hidden = true;
      list.replaceChildren();
      return;
    }
    document.getElementById("settings-error").textContent = A.errorText(error);
    list.replaceChildren(...(error.problems || []).map((p) => h("li", null, typeof p === "string" ? p : JSON.stringify(p))));
    problemsBox.hidden = false;
  }

  async function loadSettings() {
    render(await A.api("GET", "/settings"));
  }

  async function loadAudit() {
    const limit = document.getElementById("audit-limit").value;
    const entries = await A.api("GET", "/audit?limit=" + encodeURIComponent(limit));
    const body = document.querySelector("#audit tbody");
    const list = Array.isArray(entries) ? entries : [];
    if (!list.length) {
      body.replaceChildren(h("tr", { class: "empty" }, h("td", { colspan: 5 }, "No changes recorded yet.")));
      return;
    }
    body.replaceChildren(
      ...list.map((e) =>
        h(
          "tr",
          { "data-id": e.id },
          h("td", null, A.timeEl(e.at)),
          h("td", null, e.actor || ""),
          h("td", null, h("span", { class: "code" }, e.action || "")),
          h("td", null, e.target || ""),
          h("td", null, e.detail && Object.keys(e.detail).length ? h("code", { class: "detail" }, JSON.stringify(e.detail)) : ""),
        ),
      ),
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!A.isAdmin()) return;
    const changes = {};
    for (const [name, ed] of editors) {
      const value = ed.read();
      if (!sameValue(value, ed.original)) changes[name] = value;
    }
    showProblems(null);
    if (!Object.keys(changes).length) {
      A.setText(result, "Nothing changed.", "ok");
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    A.setText(result, "saving…", "busy");
    A.api("PATCH", "/settings", changes)
      .then((data) => {
        render(data);
        const said = Object.entries(changes).map(([k, v]) => k + " = " + (Array.isArray(v) ? v.join("; ") : String(v)));
        A.setText(result, "Saved: " + said.join(", "), "ok");
        return loadAudit();
      })
      .catch((error) => {
        A.setText(result, "");
        showProblems(error);
      })
      .finally(() => {
        button.disabled = false;
      });
  });

  document.getElementById("settings-reset").addEventListener("click", () => {
    showProblems(null);
    A.setText(result, "");
    if (current) render(current);
  });

  document.getElementById("audit-controls").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAudit().catch((e) => A.loadErrorReporter()(e));
  });
  document.getElementById("audit-limit").addEventListener("change", () => {
    loadAudit().catch((e) => A.loadErrorReporter()(e));
  });

  A.start(async () => {
    const report = A.loadErrorReporter();
    try {
      await loadSettings();
      await loadAudit();
      report(null);
    } catch (e) {
      report(e);
    }
  });
})();
