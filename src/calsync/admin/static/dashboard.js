/* The dashboard: GET /api/v1/dashboard every 5 s; the notifications chart is an SVG drawn here. */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const h = A.h;
  const SVG = "http://www.w3.org/2000/svg";

  function count(label, value, opts) {
    const o = opts || {};
    const number = o.href ? h("a", { href: o.href }, String(value)) : String(value);
    const cls = "count" + (o.alert && Number(value) > 0 ? " alert-count" : "");
    return [h("dt", null, label), h("dd", { class: cls, id: o.id || null }, number)];
  }

  function fill(id, items) {
    document.getElementById(id).replaceChildren(...items.flat());
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    if (text !== undefined) el.textContent = String(text);
    return el;
  }

  function minuteLabel(iso) {
    const date = A.parseTime(iso);
    if (!date) return String(iso);
    return String(date.getHours()).padStart(2, "0") + ":" + String(date.getMinutes()).padStart(2, "0");
  }

  /** A bar per minute, oldest on the left; each bar has a tooltip; the whole has a text summary. */
  function drawChart(series) {
    const width = 1100;
    const height = 190;
    const left = 36;
    const bottom = 22;
    const top = 10;
    const plotWidth = width - left - 8;
    const plotHeight = height - top - bottom;
    const points = Array.isArray(series) ? series : [];
    const max = Math.max(1, ...points.map((p) => Number(p.count) || 0));
    const total = points.reduce((sum, p) => sum + (Number(p.count) || 0), 0);
    const busiest = points.reduce((best, p) => (best === null || (Number(p.count) || 0) > (Number(best.count) || 0) ? p : best), null);
    const summary =
      total + " notification(s) in the last " + points.length + " minute(s)" +
      (busiest && Number(busiest.count) > 0 ? "; most in one minute: " + busiest.count + " at " + minuteLabel(busiest.minute) : "");

    const root = svg("svg", {
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-labelledby": "chart-svg-title chart-svg-desc",
      class: "bars",
    });
    root.append(svg("title", { id: "chart-svg-title" }, "Notifications per minute"));
    root.append(svg("desc", { id: "chart-svg-desc" }, summary));
    // grid: baseline, the top value and the middle
    for (const fraction of [0, 0.5, 1]) {
      const y = top + plotHeight - fraction * plotHeight;
      root.append(svg("line", { x1: left, x2: width - 8, y1: y, y2: y, class: "grid" }));
      const value = fraction === 0.5 ? Math.round((max / 2) * 10) / 10 : fraction * max;
      root.append(svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, value));
    }
    const slot = plotWidth / Math.max(points.length, 1);
    points.forEach((point, i) => {
      const value = Number(point.count) || 0;
      const barHeight = value > 0 ? Math.max(2, (value / max) * plotHeight) : 1;
      const rect = svg("rect", {
        x: left + i * slot + slot * 0.15,
        y: top + plotHeight - barHeight,
        width: Math.max(1, slot * 0.7),
        height: barHeight,
        class: value > 0 ? "bar" : "bar empty",
      });
      rect.append(svg("title", {}, minuteLabel(point.minute) + ": " + value + " notification(s)"));
      root.append(rect);
    });
    if (points.length) {
      root.append(svg("text", { x: left, y: height - 6, class: "axis" }, minuteLabel(points[0].minute)));
      root.append(
        svg("text", { x: width - 8, y: height - 6, class: "axis", "text-anchor": "end" }, minuteLabel(points[points.length - 1].minute)),
      );
    }
    const chart = document.getElementById("chart");
    chart.replaceChildren(root, h("p", { class: "muted small", id: "chart-summary" }, summary));
  }

  async function refresh() {
    const d = await A.api("GET", "/dashboard");
    const ops = d.operators || {};
    fill("operators-counts", [
      count("Total", ops.total ?? 0, { href: "operators.html", id: "operators-total" }),
      count("Synced", ops.synced ?? 0, { href: "operators.html?state=synced", id: "operators-synced" }),
      count("Syncing", ops.syncing ?? 0, { href: "operators.html?state=syncing", id: "operators-syncing" }),
      count("Failing", ops.failing ?? 0, { href: "operators.html?state=failing", id: "operators-failing", alert: true }),
      count("Disabled", ops.disabled ?? 0, { href: "operators.html?state=disabled", id: "operators-disabled" }),
    ]);
    const subs = d.subscriptions || {};
    fill("subscription-counts", [
      count("Healthy", subs.healthy ?? 0, { id: "subscriptions-healthy" }),
      count("Not yet heard from", subs.not_yet_heard ?? 0, { id: "subscriptions-not-yet-heard" }),
      count("Dying", subs.dying ?? 0, { id: "subscriptions-dying", alert: true }),
      count("Missing", subs.missing ?? 0, { id: "subscriptions-missing", alert: true }),
    ]);
    const lag = d.sync_lag_seconds || {};
    fill("sync-counts", [
      count("Notifications, last minute", d.notifications_last_minute ?? 0, { id: "notifications-last-minute" }),
      count("Sync lag (max)", A.seconds(lag.max ?? 0), { id: "sync-lag" }),
      count("Dirty mailboxes", d.dirty_mailboxes ?? 0, { id: "dirty-mailboxes" }),
    ]);
    fill("incident-counts", [
      count("Open incidents", d.open_incidents ?? 0, { href: "failures.html?state=open", id: "open-incidents", alert: true }),
      // permanent failures (no such mailbox, access denied): no retry helps, an administrator must act
      count("Need an administrator", ops.failing_permanently ?? 0, {
        href: "failures.html?state=open",
        id: "operators-failing-permanently",
        alert: true,
      }),
    ]);
    drawChart(d.notifications_per_minute);
    const now = new Date();
    document.getElementById("updated").textContent =
      "Updated " + now.toLocaleTimeString() + "; refreshes every 5 seconds.";
  }

  A.start(() => {
    A.poll(refresh, 5000, A.loadErrorReporter());
  });
})();
