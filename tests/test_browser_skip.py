"""Without Debian's chromium the browser tests (test_admin_browser.py) are skipped loudly: the skip reason says
where chromium was looked for and how to install it, and the end of pytest's output repeats it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import CHROMIUM, browser_skip_notice, chromium_missing

ROOT = Path(__file__).resolve().parents[1]
INSTALL = '"apt-get install chromium"'


def test_the_reason_names_the_path_and_the_install_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-chromium"
    assert chromium_missing(str(missing)) == (
        f'chromium not found at {missing}: install it with "apt-get install chromium" (Debian) to run the browser tests'
    )
    assert CHROMIUM == "/usr/bin/chromium"


def test_an_executable_is_found_and_a_plain_file_is_not(tmp_path: Path) -> None:
    assert chromium_missing(sys.executable) is None
    plain = tmp_path / "chromium"
    plain.write_text("not a program\n")
    os.chmod(plain, 0o644)
    assert chromium_missing(str(plain)) is not None


def test_the_notice_counts_the_browser_tests_skipped_for_that_reason_only(tmp_path: Path) -> None:
    reason = chromium_missing(str(tmp_path / "chromium"))
    assert reason is not None
    assert browser_skip_notice(["set CALSYNC_SCREENSHOTS=1 to write them", "PostgreSQL is not reachable"]) is None
    notice = browser_skip_notice([reason, "set CALSYNC_SCREENSHOTS=1 to write them", reason])
    assert notice == f"2 browser test(s) did not run: {reason}"


def test_the_end_of_the_pytest_output_says_so(tmp_path: Path) -> None:
    """A run whose browser test is skipped for a missing chromium ends with the warning and the install line."""
    (tmp_path / "test_browser.py").write_text(
        "import pytest\n"
        "from tests.conftest import chromium_missing\n\n"
        "def test_in_a_browser():\n"
        "    pytest.skip(chromium_missing('/nonexistent/chromium'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_ADDOPTS": "-ra"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", "test_browser.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    heading = next((i for i, line in enumerate(lines) if "browser tests skipped" in line), None)
    assert heading is not None and heading >= len(lines) - 8, result.stdout  # at the end of the output
    assert lines[heading + 1] == (
        "1 browser test(s) did not run: chromium not found at /nonexistent/chromium: "
        f"install it with {INSTALL} (Debian) to run the browser tests"
    ), result.stdout
