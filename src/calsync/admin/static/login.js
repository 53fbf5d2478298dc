/* The login page: the pasted token is checked with GET /api/v1/me, then kept in sessionStorage. */
"use strict";

(function () {
  const A = window.CalsyncAdmin;
  const params = new URLSearchParams(window.location.search);
  const info = document.getElementById("login-info");
  const error = document.getElementById("login-error");
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");

  const reasons = {
    logout: "You are signed out.",
    expired: "Your token was refused (401): it is unknown or has been revoked. Sign in again.",
  };
  if (reasons[params.get("reason")]) A.setText(info, reasons[params.get("reason")], "ok");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    A.setText(error, "");
    const value = input.value.trim();
    if (!value) {
      A.setText(error, "Paste a token first.", "error");
      input.focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    let response;
    try {
      response = await window.fetch(A.API_BASE + "/me", {
        headers: { Authorization: "Bearer " + value, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      A.setText(error, "calsync did not answer (" + e.message + ").", "error");
      button.disabled = false;
      return;
    }
    button.disabled = false;
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (response.status === 401) {
      A.setText(
        error,
        "Wrong token: calsync does not accept it (401 Unauthorized). It is unknown or has been revoked; " +
          "check that you pasted all of it.",
        "error",
      );
      input.select();
      return;
    }
    if (!response.ok || !data || typeof data !== "object") {
      A.setText(error, "Could not sign in: HTTP " + response.status + ": " + A.detailText(data, response.statusText), "error");
      return;
    }
    if (data.role !== "admin" && data.role !== "viewer") {
      A.setText(
        error,
        "This token's role (" + data.role + ") may only read calendars; the admin pages need an admin or viewer token.",
        "error",
      );
      return;
    }
    A.setToken(value);
    input.value = "";
    window.location.replace(A.ADMIN_BASE + A.safeNext(params.get("next")));
  });

  input.focus();
})();
