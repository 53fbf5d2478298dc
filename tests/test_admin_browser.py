"""The web admin (/admin/) in a real browser: Debian's chromium driven by Playwright against a real
``calsync serve`` (a child process on a temporary SQLite database, tokens from CALSYNC_API_TOKENS) and a
real, strict EWS emulator.

Covered: signing in (token checked with GET /api/v1/me, kept in sessionStorage only), a wrong token, pages
without a token or with a refused one going to the login page, logging out; adding and enabling an operator
and seeing its first sync finish; verify, disable, enable, delete (with its confirm()); running a job and
seeing its last run and outcome change; an invalid job interval answered with the API's 422 detail, a valid
one saved; an operator whose mailbox Exchange does not have showing up on the failures page with its
catalogue code, then fixed and resolved; Exchange throttling one mailbox (the emulator's fault injection)
showing as an open streak until it passes; the failure filters; a settings change (override marked), a
rejected one (problems listed), the audit log; the dashboard's counts and chart; a viewer seeing no action
buttons; a 403 changing nothing; values shown as text, never as HTML; the pages' security headers.

With ``CALSYNC_SCREENSHOTS=1``, ``test_screenshots`` also writes docs/screenshots/*.png (1280x800).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from calsync.emulator import Emulator

from .conftest import CHROMIUM, SERVICE_PASSWORD, SERVICE_USER, chromium_missing, start_emulator

try:
    import playwright.sync_api as playwright_sync
except ImportError:  # a dev dependency: `pip install -e '.[dev]'` (scripts/test does) brings it
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "playwright is not installed: install the development tools with pip install -e '.[dev]' to run the "
        "browser tests",
        allow_module_level=True,
    )
expect = playwright_sync.expect
Page = playwright_sync.Page

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_TOKEN = "admin-token-" + "a1" * 12
VIEWER_TOKEN = "viewer-token-" + "v2" * 12
CALENDAR_TOKEN = "calendar-token-" + "c3" * 12
TOKEN_KEY = "calsync.admin.token"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}

EXPECT_MS = 5_000  # an ordinary page update (the pages poll every second for a while after an action)
SYNC_MS = 20_000  # subscribe + first sync of a small mailbox, seen through the page's polling

pytestmark = pytest.mark.timeout(120)


# --- calsync serve and the emulator ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``calsync serve`` child process against an emulator, with an admin client for setting up and checking."""

    def __init__(self, emulator: Emulator, workdir: Path) -> None:
        self.emulator = emulator
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        settings = {
            "database_url": f"sqlite:///{workdir / 'calsync.sqlite3'}",
            "exchange_url": emulator.url,
            "username": SERVICE_USER,
            "password": SERVICE_PASSWORD,
            "listener_url": self.base,
            "listener_secret": "L" * 32,
            "log_level": "WARNING",
            "api_tokens": f"admin:{ADMIN_TOKEN},viewer:{VIEWER_TOKEN},calendar:{CALENDAR_TOKEN}",
            # Exchange Online beside it: the same emulated tenant through Microsoft Graph
            "graph_tenant_id": GRAPH_TENANT,
            "graph_client_id": GRAPH_CLIENT,
            "graph_client_secret": GRAPH_SECRET,
            "graph_authority": str(emulator.https_base_url),
            "graph_endpoint": emulator.graph_url,
            "graph_ca_file": str(emulator.ca_file),
        }
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CALSYNC_")}
        env.update({f"CALSYNC_{k.upper()}": v for k, v in settings.items()})
        self.log = workdir / "serve.log"
        command = [
            sys.executable,
            "-m",
            "calsync",
            "serve",
            "--create-database",
            "--port",
            str(self.port),
            "--threads",
            "2",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        self.api = httpx.Client(
            base_url=self.base + "/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"calsync serve did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.api.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    # --- through the API, for setting up and checking ------------------------------------------------

    def operator(self, email: str) -> dict[str, Any] | None:
        answer = self.api.get(f"/operators/{email}")
        return answer.json() if answer.status_code == 200 else None

    def ensure_operator(self, email: str, *, enabled: bool = True, display_name: str | None = None) -> None:
        if self.operator(email) is None:
            body: dict[str, Any] = {"email": email, "enabled": enabled}
            if display_name:
                body["display_name"] = display_name
            assert self.api.post("/operators", json=body).status_code == 201

    def job(self, name: str) -> dict[str, Any]:
        answer = self.api.get(f"/jobs/{name}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.2)

    def wait_synced(self, email: str) -> None:
        self.wait_for(lambda: (self.operator(email) or {}).get("state") == "synced")


GRAPH_TENANT, GRAPH_CLIENT, GRAPH_SECRET = "contoso.onmicrosoft.com", "admin-test-app", "admin-test-secret~1"
MAILBOXES = [  # address, display name, appointments
    ("ann@example.com", "Ann Example", 14),
    ("bob@example.com", "Bob Example", 9),
    ("cyd@example.com", "Cyd Example", 6),
    ("dan@example.com", "Dan Example", 12),
    ("eve@example.com", "Eve Example", 5),
    ("fay@example.com", "Fay Example", 4),
    ("gil@example.com", "Gil Example", 7),  # read through Graph
    ("hal@example.com", "Hal Example", 8),  # moved from EWS to Graph
]


@contextmanager
def serving(schema_dir: Path, workdir: Path) -> Iterator[Server]:
    """A strict emulator with :data:`MAILBOXES` and a ``calsync serve`` against it."""
    emulator = start_emulator(
        schema_dir,
        mailboxes=[],
        https_port=0,
        graph_apps=[f"{GRAPH_TENANT}:{GRAPH_CLIENT}:{GRAPH_SECRET}"],
        graph_allow_http=True,
    )
    for address, name, count in MAILBOXES:
        emulator.add_mailbox(address, name, populate_count=count, seed=7)
    try:
        srv = Server(emulator, workdir)
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        emulator.stop()
    assert emulator.violations == [], emulator.violations[:2]


@pytest.fixture(scope="module")
def server(schema_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(schema_dir, tmp_path_factory.mktemp("admin-serve")) as srv:
        yield srv


# --- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = chromium_missing(CHROMIUM)
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)  # conftest.py repeats it at the end of the run, with the install line
    expect.set_options(timeout=EXPECT_MS)
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on(
        "console",
        lambda message: errors.append(message.text) if "Content Security Policy" in message.text else None,
    )
    try:
        yield tab
    finally:
        context.close()
    assert errors == [], errors  # no uncaught JavaScript error and nothing the page's CSP had to block


def login(page: Page, server: Server, token: str, *, start: str = "index.html") -> None:
    page.goto(f"{server.base}/admin/{start}")
    expect(page).to_have_url(re.compile(r"/admin/login\.html"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page).to_have_url(re.compile(re.escape(start)))


def stored_token(page: Page) -> Any:
    return page.evaluate(f"() => window.sessionStorage.getItem({TOKEN_KEY!r})")


def operator_row(page: Page, email: str) -> Any:
    return page.locator(f'#operators tbody tr[data-email="{email}"]')


def job_row(page: Page, name: str) -> Any:
    return page.locator(f'#jobs tbody tr[data-job="{name}"]')


# --- the tests -------------------------------------------------------------------------------------


def test_pages_are_served_with_their_security_headers(server: Server) -> None:
    redirect = httpx.get(server.base + "/admin", follow_redirects=False)
    assert redirect.status_code in (301, 302, 307, 308) and redirect.headers["location"].endswith("/admin/")
    for path in ("", "login.html", "operators.html", "app.js", "admin.css"):
        answer = httpx.get(f"{server.base}/admin/{path}")
        assert answer.status_code == 200, path
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
    assert httpx.get(server.base + "/admin/nothing-here.html").status_code == 404
    assert httpx.get(server.base + "/admin/%2e%2e/pages.py").status_code == 404


def test_login_wrong_token_no_token_refused_token_and_logout(page: Page, server: Server) -> None:
    # every page sends a visitor without a token to the login page, remembering where they wanted to go
    page.goto(f"{server.base}/admin/failures.html?state=all")
    expect(page).to_have_url(re.compile(r"/admin/login\.html\?next=failures\.html"))

    # a wrong token: a clear message, nothing kept
    page.get_by_label("API token").fill("not-a-token-of-this-calsync-at-all")
    page.get_by_role("button", name="Sign in").click()
    error = page.get_by_role("alert")
    expect(error).to_contain_text("Wrong token")
    expect(error).to_contain_text("401")
    assert stored_token(page) is None
    expect(page).to_have_url(re.compile(r"/admin/login\.html"))

    # a calendar token may not use the admin pages
    page.get_by_label("API token").fill(CALENDAR_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(error).to_contain_text("role (calendar)")
    assert stored_token(page) is None

    # the right token: on to the page asked for; the token is in sessionStorage, not localStorage nor a cookie
    page.get_by_label("API token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin/failures\.html\?state=all$"))
    expect(page.get_by_role("heading", name="Failures")).to_be_visible()
    assert stored_token(page) == ADMIN_TOKEN
    assert page.evaluate("() => window.localStorage.length") == 0
    assert page.context.cookies() == []
    expect(page.locator("#whoami")).to_contain_text("admin")

    # a token the API stops accepting (401) sends the page back to the login page with a message
    page.evaluate(f"() => window.sessionStorage.setItem({TOKEN_KEY!r}, 'revoked-token-revoked-token-revoked')")
    page.goto(f"{server.base}/admin/jobs.html")
    expect(page).to_have_url(re.compile(r"/admin/login\.html\?next=jobs\.html&reason=expired"))
    expect(page.get_by_role("status")).to_contain_text("refused (401)")
    assert stored_token(page) is None

    # logging out forgets the token
    login(page, server, ADMIN_TOKEN)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/admin/login\.html\?reason=logout"))
    expect(page.get_by_role("status")).to_contain_text("signed out")
    assert stored_token(page) is None
    page.goto(f"{server.base}/admin/operators.html")
    expect(page).to_have_url(re.compile(r"/admin/login\.html"))


def test_admin_adds_an_operator_sees_it_sync_and_manages_it(page: Page, server: Server) -> None:
    login(page, server, ADMIN_TOKEN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Operators").click()
    expect(page.get_by_role("heading", name="Operators", exact=True)).to_be_visible()

    page.get_by_label("E-mail").fill("dan@example.com")
    page.get_by_label("Display name").fill("Dan Example")
    expect(page.get_by_label("Enable sync now")).to_be_checked()
    page.get_by_role("button", name="Add operator").click()
    expect(page.locator("#add-result")).to_contain_text("Added dan@example.com")

    row = operator_row(page, "dan@example.com")
    expect(row.locator("[data-col=state]")).to_have_text("synced", timeout=SYNC_MS)
    expect(row.locator("[data-col=appointments]")).to_have_text(re.compile(r"^[1-9]\d*$"))
    shown = int(row.locator("[data-col=appointments]").inner_text())
    assert shown == server.operator("dan@example.com")["appointments"]  # type: ignore[index]
    expect(row.locator("[data-col=subscription]")).to_contain_text("not yet heard from")  # no push yet
    expect(row.locator("[data-col=name]")).to_have_text("Dan Example")

    # verify asks Exchange; its result shows next to the row
    row.get_by_role("button", name="Verify dan@example.com").click()
    expect(row.get_by_role("status")).to_contain_text("verify: ok")

    # disable, then enable again
    row.get_by_role("button", name="Disable dan@example.com").click()
    expect(row.locator("[data-col=state]")).to_have_text("disabled")
    assert server.operator("dan@example.com")["enabled"] is False  # type: ignore[index]
    row.get_by_role("button", name="Enable dan@example.com").click()
    expect(row.locator("[data-col=state]")).to_have_text("synced", timeout=SYNC_MS)

    # the state filter (and the URL keeps it)
    page.get_by_label("State").select_option("disabled")
    expect(row).to_have_count(0)
    expect(page).to_have_url(re.compile(r"operators\.html\?state=disabled$"))
    page.get_by_label("State").select_option("synced")
    expect(row).to_have_count(1)
    page.get_by_label("State").select_option("")

    # delete asks first: dismissed, nothing happens; accepted, the operator goes
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Delete dan@example.com").click()
    page.wait_for_timeout(300)
    assert server.operator("dan@example.com") is not None
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete dan@example.com").click()
    expect(row).to_have_count(0)
    assert server.operator("dan@example.com") is None


def test_admin_adds_a_graph_operator_and_moves_another_from_ews(page: Page, server: Server) -> None:
    login(page, server, ADMIN_TOKEN, start="operators.html")
    # an Exchange Online mailbox, added with the Source field
    page.get_by_label("E-mail").fill("gil@example.com")
    page.get_by_label("Source").select_option("graph")
    page.get_by_role("button", name="Add operator").click()
    expect(page.locator("#add-result")).to_contain_text("Added gil@example.com through graph")
    gil = operator_row(page, "gil@example.com")
    expect(gil.locator("[data-col=source]")).to_have_text("graph")
    expect(gil.locator("[data-col=state]")).to_have_text("synced", timeout=SYNC_MS)
    expect(gil.locator("[data-col=subscription]")).to_contain_text("healthy")  # Graph: alive until it expires

    # an EWS operator moved to Graph with its button: its appointments (and their ids) stay
    server.ensure_operator("hal@example.com")
    server.wait_synced("hal@example.com")
    window = {"start": "2026-01-01T00:00:00Z", "end": "2028-12-01T00:00:00Z"}
    ids = {
        a["id"] for a in server.api.get("/operators/hal@example.com/appointments", params=window).json()["appointments"]
    }
    hal = operator_row(page, "hal@example.com")
    expect(hal.locator("[data-col=source]")).to_have_text("ews")
    page.once("dialog", lambda dialog: dialog.dismiss())  # asked first: dismissed, nothing happens
    hal.get_by_role("button", name="Move hal@example.com to graph").click()
    page.wait_for_timeout(300)
    assert server.operator("hal@example.com")["source"] == "ews"  # type: ignore[index]
    page.once("dialog", lambda dialog: dialog.accept())
    hal.get_by_role("button", name="Move hal@example.com to graph").click()
    expect(hal.get_by_role("status")).to_contain_text("moving to graph")
    expect(hal.locator("[data-col=source]")).to_have_text("graph", timeout=SYNC_MS)
    expect(hal.locator("[data-col=state]")).to_have_text("synced", timeout=SYNC_MS)
    after = server.api.get("/operators/hal@example.com/appointments", params=window).json()["appointments"]
    assert ids and {a["id"] for a in after} == ids
    expect(hal.get_by_role("button", name="Move hal@example.com to ews")).to_be_visible()


def test_admin_runs_a_job_and_changes_its_interval(page: Page, server: Server) -> None:
    login(page, server, ADMIN_TOKEN, start="jobs.html")
    for name in ("ProcessPushNotifications", "ManagePushSubscriptions", "Reconciliation"):
        expect(job_row(page, name)).to_have_count(1)

    row = job_row(page, "Reconciliation")
    before = server.job("Reconciliation")
    expect(row.locator("[data-col=runs]")).to_have_text(str(before["runs"]))
    row.get_by_role("button", name="Run Reconciliation now").click()
    expect(row.locator("[data-col=runs]")).to_have_text(str(before["runs"] + 1))
    after = server.job("Reconciliation")
    assert after["last_run_at"] != before["last_run_at"]
    expect(row.locator("[data-col=last-run] time")).to_have_attribute("datetime", re.compile(r"^\d{4}-"))
    expect(row.locator("[data-col=outcome]")).to_have_text(after["last_outcome"])

    # an interval the API refuses: its 422 detail, verbatim; nothing changes
    interval = row.get_by_label("Interval of Reconciliation in seconds")
    interval.fill("0")
    row.get_by_role("button", name="Save interval of Reconciliation").click()
    result = row.get_by_role("status")
    expect(result).to_contain_text("HTTP 422: ")
    detail = server.api.patch("/jobs/Reconciliation", json={"interval_seconds": 0}).json()["detail"]
    expect(result).to_contain_text(str(detail))
    assert server.job("Reconciliation")["interval_seconds"] == before["interval_seconds"]

    interval.fill("1234")
    interval.press("Enter")
    expect(result).to_contain_text("interval saved: 1234 s")
    assert server.job("Reconciliation")["interval_seconds"] == 1234

    # disable and enable a job
    row.get_by_role("button", name="Disable Reconciliation").click()
    expect(row.locator("[data-col=enabled]")).to_have_text("disabled")
    assert server.job("Reconciliation")["enabled"] is False
    row.get_by_role("button", name="Enable Reconciliation").click()
    expect(row.locator("[data-col=enabled]")).to_have_text("enabled")


def test_a_failure_shows_up_with_its_catalogue_code(page: Page, server: Server) -> None:
    login(page, server, ADMIN_TOKEN, start="operators.html")
    page.get_by_label("E-mail").fill("ghost@example.com")  # no such mailbox in the emulator
    page.get_by_role("button", name="Add operator").click()
    row = operator_row(page, "ghost@example.com")
    expect(row.locator("[data-col=state]")).to_have_text("failing", timeout=SYNC_MS)
    expect(row.locator("[data-col=incident]")).to_contain_text("mailbox_not_found")
    row.get_by_role("button", name="Verify ghost@example.com").click()
    expect(row.get_by_role("status")).to_contain_text("verify: mailbox_not_found: ")

    page.get_by_role("link", name="Failures").click()
    failure = page.locator("#failures tbody tr", has=page.get_by_role("rowheader", name="ghost@example.com"))
    expect(failure).to_have_count(1)
    expect(failure).to_contain_text("mailbox_not_found")
    expect(failure).to_contain_text("open incident")

    # filters: by code, by operator, by state
    page.get_by_label("Code").fill("server_busy")
    page.get_by_role("button", name="Apply filters").click()
    expect(failure).to_have_count(0)
    expect(page.locator("#failures tbody")).to_contain_text("No failures match")
    page.get_by_label("Code").fill("mailbox_not_found")
    page.get_by_label("Operator").fill("ghost@example.com")
    page.get_by_role("button", name="Apply filters").click()
    expect(failure).to_have_count(1)
    expect(page).to_have_url(re.compile(r"code=mailbox_not_found"))
    page.get_by_label("State").select_option("resolved")
    expect(failure).to_have_count(0)
    page.get_by_label("State").select_option("all")
    expect(failure).to_have_count(1)

    # the dashboard counts it
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#operators-failing")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#operators-failing")).not_to_have_text("0")
    expect(page.locator("#open-incidents")).not_to_have_text("0")
    # no such mailbox is permanent: it needs an administrator
    expect(page.locator("#operators-failing-permanently")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.locator("#chart svg[role=img] rect")).to_have_count(
        len(server.api.get("/dashboard").json()["notifications_per_minute"])
    )


def test_throttling_shows_as_an_open_streak_while_it_lasts(page: Page, server: Server) -> None:
    """Exchange throttles one mailbox (the emulator's fault injection) until told to stop: the failures page
    shows an open streak (not an incident yet); when the throttling ends, the next pass succeeds and the
    streak, which never became an incident, goes away."""
    server.ensure_operator("fay@example.com")
    server.wait_synced("fay@example.com")
    server.emulator.set_faults(server_busy=-1, server_busy_backoff_ms=100, server_busy_mailbox="fay@example.com")
    try:
        server.emulator.outlook("fay@example.com").create(
            {"subject": "Throttled", "start": "2026-12-20T09:00:00", "timezone": "Europe/Berlin"}
        )
        login(page, server, ADMIN_TOKEN, start="failures.html?operator=fay%40example.com")
        expect(page.get_by_label("Operator")).to_have_value("fay@example.com")
        failure = page.locator("#failures tbody tr", has=page.get_by_role("rowheader", name="fay@example.com"))
        expect(failure).to_have_count(1, timeout=SYNC_MS)
        expect(failure).to_contain_text("server_busy")
        expect(failure).to_contain_text("open streak")
        expect(failure).to_contain_text("transient")
    finally:
        server.emulator.clear_faults()
    expect(failure).to_have_count(0, timeout=30_000)  # retried with back-off: 1, 2, 4 ... s
    assert server.operator("fay@example.com")["state"] == "synced"  # type: ignore[index]


def test_a_fixed_failure_shows_as_resolved(page: Page, server: Server) -> None:
    """An incident (no such mailbox) is fixed (the mailbox appears) and ManagePushSubscriptions is run from
    the jobs page: the incident is resolved and the operator syncs."""
    server.ensure_operator("gus@example.com")
    open_ = {"operator": "gus@example.com", "state": "open"}
    server.wait_for(lambda: bool(server.api.get("/failures", params=open_).json()))
    server.emulator.add_mailbox("gus@example.com", "Gus Example", populate_count=3, seed=7)

    login(page, server, ADMIN_TOKEN, start="jobs.html")
    job_row(page, "ManagePushSubscriptions").get_by_role("button", name="Run ManagePushSubscriptions now").click()
    expect(job_row(page, "ManagePushSubscriptions").get_by_role("status")).to_contain_text("run requested")

    page.goto(f"{server.base}/admin/failures.html?operator=gus%40example.com&state=resolved")
    failure = page.locator("#failures tbody tr", has=page.get_by_role("rowheader", name="gus@example.com"))
    expect(failure).to_have_count(1, timeout=SYNC_MS)
    expect(failure).to_contain_text("mailbox_not_found")
    expect(failure).to_contain_text("resolved")
    page.get_by_label("State").select_option("open")
    expect(failure).to_have_count(0)

    page.get_by_role("link", name="Operators").click()
    expect(operator_row(page, "gus@example.com").locator("[data-col=state]")).to_have_text("synced", timeout=SYNC_MS)


def test_admin_changes_a_setting_and_sees_it_in_the_audit_log(page: Page, server: Server) -> None:
    login(page, server, ADMIN_TOKEN, start="settings.html")
    expect(page.locator('#settings-other tr[data-setting="password"] td').first).to_have_text("********")

    # a value the API refuses: its problems listed, nothing changed
    page.get_by_label("past_window_days").fill("-1")
    page.get_by_role("button", name="Save changes").click()
    problems = page.locator("#settings-problems")
    expect(problems).to_be_visible()
    expect(problems.get_by_role("listitem")).to_contain_text(["past_window_days"])
    assert server.api.get("/settings").json()["settings"]["past_window_days"] != -1

    page.get_by_role("button", name="Undo edits").click()
    page.get_by_label("batch_size").fill("100")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#settings-result")).to_contain_text("Saved: batch_size = 100")
    batch = page.locator('#settings-changeable tr[data-setting="batch_size"]')
    expect(batch).to_contain_text("override")
    assert server.api.get("/settings").json()["overrides"].get("batch_size") == 100

    audit = page.locator("#audit tbody tr").first
    expect(audit).to_contain_text("settings")
    expect(audit).to_contain_text("batch_size")


def test_viewer_sees_everything_but_no_action_buttons(page: Page, server: Server) -> None:
    hostile = 'Cyd <img src=x onerror="window.__injected = 1"><b>bold</b>'
    server.ensure_operator("cyd@example.com", display_name=hostile)
    login(page, server, VIEWER_TOKEN, start="operators.html")
    expect(page.locator("#whoami")).to_contain_text("viewer")
    expect(operator_row(page, "cyd@example.com")).to_have_count(1)
    # values are shown as text, never parsed as HTML
    expect(operator_row(page, "cyd@example.com").locator("[data-col=name]")).to_have_text(hostile)
    expect(page.locator("#operators img, #operators b")).to_have_count(0)
    assert page.evaluate("() => window.__injected") is None
    expect(page.get_by_role("button", name=re.compile(r"^(Enable|Disable|Verify|Delete) "))).to_have_count(0)
    expect(page.get_by_role("button", name="Add operator")).to_have_count(0)
    expect(page.get_by_label("E-mail")).to_be_hidden()

    page.get_by_role("link", name="Jobs").click()
    expect(job_row(page, "Reconciliation")).to_have_count(1)
    expect(page.get_by_role("button", name=re.compile("Run .* now"))).to_have_count(0)
    expect(page.get_by_role("spinbutton")).to_have_count(0)

    page.get_by_role("link", name="Settings").click()
    expect(page.locator('#settings-changeable tr[data-setting="batch_size"]')).to_have_count(1)
    expect(page.get_by_role("button", name="Save changes")).to_have_count(0)
    expect(page.locator("#settings-changeable input")).to_have_count(0)

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#operators-total")).to_have_text(re.compile(r"^[1-9]\d*$"))


def test_a_forbidden_action_says_so_and_changes_nothing(page: Page, server: Server) -> None:
    """A page drawn for an admin while the token is a viewer's (GET /api/v1/me faked once): the API's 403
    shows the role message and nothing changes."""
    server.ensure_operator("eve@example.com")
    server.wait_synced("eve@example.com")

    def pretend_admin(route: Any) -> None:
        route.fulfill(json={"name": "viewer pretending", "role": "admin", "token_id": None})

    login(page, server, VIEWER_TOKEN, start="operators.html")
    page.route("**/api/v1/me", pretend_admin, times=1)
    page.reload()
    row = operator_row(page, "eve@example.com")
    row.get_by_role("button", name="Disable eve@example.com").click()
    expect(row.get_by_role("status")).to_contain_text("Your token's role (viewer) may not do this")
    assert server.operator("eve@example.com")["enabled"] is True  # type: ignore[index]

    runs = server.job("ManagePushSubscriptions")["runs"]
    page.route("**/api/v1/me", pretend_admin, times=1)
    page.goto(f"{server.base}/admin/jobs.html")
    row = job_row(page, "ManagePushSubscriptions")
    row.get_by_role("button", name="Run ManagePushSubscriptions now").click()
    expect(row.get_by_role("status")).to_contain_text("Your token's role (viewer) may not do this")
    job = server.job("ManagePushSubscriptions")
    assert job["run_requested"] is False and job["runs"] == runs


@pytest.mark.skipif(os.environ.get("CALSYNC_SCREENSHOTS") != "1", reason="set CALSYNC_SCREENSHOTS=1 to write them")
def test_screenshots(page: Page, schema_dir: Path, tmp_path: Path) -> None:
    """docs/screenshots/{dashboard,operators,jobs,failures,settings}.png at 1280x800, from a calsync of its own
    (so that the other tests' operators do not show)."""
    with serving(schema_dir, tmp_path) as server:
        take_screenshots(page, server)


def take_screenshots(page: Page, server: Server) -> None:
    for email, name in [("ann@example.com", "Ann Example"), ("bob@example.com", "Bob Example")]:
        server.ensure_operator(email, display_name=name)
    server.ensure_operator("ghost@example.com")
    for email in ("ann@example.com", "bob@example.com"):
        server.wait_synced(email)
    ann = server.emulator.outlook("ann@example.com")
    for i in range(6):  # a few changes, so that the chart shows notifications
        ann.create({"subject": f"Planning {i}", "start": f"2026-12-{10 + i:02d}T09:00:00", "timezone": "Europe/Berlin"})
    server.wait_for(lambda: server.api.get("/dashboard").json()["notifications_last_minute"] > 0)
    assert server.api.patch("/settings", json={"batch_size": 256}).status_code == 200  # shows as an override

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    login(page, server, ADMIN_TOKEN)
    shots = {
        "dashboard": ("index.html", "#chart svg"),
        "operators": ("operators.html", '#operators tr[data-email="ann@example.com"]'),
        "jobs": ("jobs.html", '#jobs tr[data-job="Reconciliation"]'),
        "failures": ("failures.html", "#failures tbody th"),
        "settings": ("settings.html", '#settings-changeable tr[data-setting="batch_size"]'),
    }
    for name, (path, ready) in shots.items():
        page.goto(f"{server.base}/admin/{path}")
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(300)
        target = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(target))
        assert target.stat().st_size > 10_000
