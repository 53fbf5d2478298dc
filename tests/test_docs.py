"""The docs stay true to the code: docs/settings.md lists exactly the settings there are (with their environment
and classic names), the TOML examples use only real settings, the ``CALSYNC_*`` variables the docs name exist,
every ``calsync ...`` command shown in a code block of README.md or docs/*.md exists with the options it is
given, and the links between the docs lead to a file and heading that exist. Each failure names the file and
line to fix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from calsync.settings import CLASSIC_NAMES, ENV_PREFIX, IGNORED_ENV, RUNTIME_CHANGEABLE, Settings

from .cli_lines import calsync_invocations, check_arguments

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MD = ROOT / "docs" / "settings.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)\s*(\w*)")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """Every fenced code block of a Markdown file: (language, line number of its first line, its lines)."""
    blocks: list[tuple[str, int, list[str]]] = []
    current: list[str] | None = None
    language, start = "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and current is None:
            current, language, start = [], fence.group(2), number + 1
        elif fence and current is not None:
            blocks.append((language, start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def shell_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """The lines of a code block as the shell reads them: a line ending in ``\\`` goes on with the next one
    (a ``\\`` followed by a comment does not: the shell does not join those either)."""
    joined: list[tuple[int, str]] = []
    pending, first = "", start
    for number, line in enumerate(lines, start=start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append((first, pending + line))
        pending = ""
    if pending:
        joined.append((first, pending))
    return joined


def doc_command_problems(path: Path, shown: str | None = None) -> list[str]:
    """What is wrong with the ``calsync`` commands in the code blocks of ``path``: one message per command,
    starting with ``FILE:LINE:`` (``shown`` is the file's name in the messages; default: relative to the repo)."""
    shown = shown or _rel(path)
    problems = []
    for _, start, lines in code_blocks(path):
        for number, line in shell_lines(lines, start):
            for args in calsync_invocations(line):
                problems += [f"{shown}:{number}: {line.strip()}\n    {p}" for p in check_arguments(args)]
    return problems


# --- settings.md ----------------------------------------------------------------------------------------------

NO_CLASSIC_NAME = "\N{EN DASH}"  # what the tables write for a setting without a classic name
ROW = re.compile(r"^\|\s*`(?P<name>[a-z][a-z0-9_]*)`\s*\|\s*(?P<env>[^|]*)\|\s*(?P<classic>[^|]*)\|")


def settings_md_rows() -> dict[str, tuple[int, str, str]]:
    """The reference tables of settings.md: setting name -> (line, environment cell, classic-name cell)."""
    rows: dict[str, tuple[int, str, str]] = {}
    for number, line in enumerate(SETTINGS_MD.read_text(encoding="utf-8").splitlines(), start=1):
        match = ROW.match(line)
        if match:
            rows[match["name"]] = (number, match["env"].strip(), match["classic"].strip())
    return rows


def test_every_setting_is_documented_in_settings_md() -> None:
    documented = settings_md_rows()
    missing = sorted(set(Settings.model_fields) - set(documented))
    assert missing == [], f"docs/settings.md has no row for these settings of calsync.settings.Settings: {missing}"


def test_every_setting_in_settings_md_exists_with_its_environment_and_classic_name() -> None:
    problems = []
    for name, (number, env, classic) in settings_md_rows().items():
        where = f"docs/settings.md:{number}"
        if name not in Settings.model_fields:
            problems.append(f"{where}: `{name}` is not a setting")
            continue
        if env != f"`{ENV_PREFIX}{name.upper()}`":
            problems.append(f"{where}: `{name}`'s variable is `{ENV_PREFIX}{name.upper()}`, not {env}")
        expected = CLASSIC_NAMES.get(name)
        shown = None if classic in (NO_CLASSIC_NAME, "-", "") else classic.split()[0]
        if shown != expected:
            problems.append(f"{where}: `{name}`'s classic name is {expected or 'none'}, not {classic!r}")
    assert problems == [], "\n".join(problems)


def test_the_settings_changeable_at_run_time_are_the_ones_settings_md_names() -> None:
    text = SETTINGS_MD.read_text(encoding="utf-8")
    section = text.split("## Changing settings while calsync runs", 1)[1].split("\n## ", 1)[0]
    paragraph = section.split("settings page of the web admin:", 1)[1].split(". A change", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", paragraph))
    assert named == set(RUNTIME_CHANGEABLE), f"settings.md names {sorted(named)}; the code: {RUNTIME_CHANGEABLE}"


def test_toml_examples_use_only_real_settings() -> None:
    known = {name.lower() for name in Settings.model_fields} | {c.lower() for c in CLASSIC_NAMES.values()}
    problems = []
    for path in DOCS:
        for language, start, lines in code_blocks(path):
            if language != "toml":
                continue
            try:
                keys = tomllib.loads("\n".join(line.strip() for line in lines))
            except tomllib.TOMLDecodeError as exc:
                problems.append(f"{_rel(path)}:{start}: the TOML example does not parse: {exc}")
                continue
            problems += [f"{_rel(path)}:{start}: `{key}` is not a setting" for key in keys if key.lower() not in known]
    assert problems == [], "\n".join(problems)


# Named in the docs on purpose although they are not settings: a misspelt variable in an example of the error
# message it gets, a placeholder, and the switch of the screenshot test.
NOT_SETTINGS = {"CALSYNC_BATCHSIZE", "CALSYNC_X"}


def test_calsync_variables_in_the_docs_exist() -> None:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | set(IGNORED_ENV) | NOT_SETTINGS
    problems = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for name in re.findall(r"\bCALSYNC_[A-Z0-9_]+", line):
                if name not in known:
                    problems.append(f"{_rel(path)}:{number}: {name} is not a calsync setting's variable")
    assert problems == [], "\n".join(problems)


# --- commands -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_calsync_command_in_the_docs_exists(path: Path) -> None:
    problems = doc_command_problems(path)
    assert problems == [], "unknown commands or options in the docs:\n" + "\n".join(problems)


def test_the_docs_show_calsync_commands_at_all() -> None:
    """The scan finds the commands it is meant to check (a parser that found nothing would pass anything)."""
    found = [
        args
        for path in DOCS
        for _, start, lines in code_blocks(path)
        for _, line in shell_lines(lines, start)
        for args in calsync_invocations(line)
    ]
    assert len(found) > 40
    assert [
        "-c",
        "/etc/calsync/calsync.toml",
        "init",
        "--database-url",
        "sqlite:////var/lib/calsync/calsync.sqlite3",
    ] in found


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("calsync operators frobnicate ann@example.com", "`calsync operators` has no command 'frobnicate'"),
        ("calsync serve --hots 0.0.0.0", "`calsync serve` has no option --hots"),
        ("calsync worker --no-jobs", "`calsync worker` has no option --no-jobs"),  # serve's, not worker's
        ("calsync status --version", "`calsync status` has no option --version"),  # calsync's own, before the command
        ("calsync sync ann@example.com bob@example.com", "`calsync sync` takes 1 argument(s), given more"),
        ("$ calsync jobs list && calsync job list", "`calsync` has no command 'job'"),
        ("cd /tmp && .venv/bin/calsync demo --port 8099 --fast", "`calsync demo` has no option --fast"),
        ("sudo -u calsync /opt/calsync/venv/bin/calsync db upgrade --all", "`calsync db upgrade` has no option --all"),
        ("ExecStart=/opt/calsync/venv/bin/calsync -c /x serve --threads 2 --metrics-port 9", "has no option --metrics"),
        ("calsync emulator --port 1 \\   # a comment after the backslash ends the command", "takes 0 argument(s)"),
    ],
)
def test_the_check_finds_a_wrong_command(line: str, problem: str, tmp_path: Path) -> None:
    """The check can fail, and says where: a doc with a wrong line gets a message naming its file and line."""
    doc = tmp_path / "wrong.md"
    doc.write_text(f"# A page\n\nSome text.\n\n```bash\ncalsync status\n{line}\n```\n", encoding="utf-8")
    problems = doc_command_problems(doc, "wrong.md")
    assert len(problems) == 1, problems
    assert problems[0].startswith("wrong.md:7: ")
    assert problem in problems[0]


def test_the_check_accepts_what_the_cli_takes() -> None:
    for line in (
        "calsync -c /etc/calsync/calsync.toml serve --host 127.0.0.1 --port 8080 --no-jobs",
        "calsync --config=calsync.toml operators add ann@example.com --name 'Ann Example' --enable --source graph",
        "calsync operators list [--enabled | --disabled]",
        "calsync status -c /etc/calsync/calsync.toml",  # the CLI moves -c FILE before the command
        "calsync jobs set-interval ManagePushSubscriptions 600  # seconds",
        "CALSYNC_LOG_LEVEL=DEBUG calsync worker --threads 8 --metrics-port 9108 --metrics-host 0.0.0.0",
        "sudo -u calsync /opt/calsync/venv/bin/calsync -c /etc/calsync/calsync.toml db upgrade",
        "sudo env CALSYNC_DATABASE_URL=postgresql://db/calsync /opt/calsync/venv/bin/calsync -c /x.toml init",
    ):
        found = list(calsync_invocations(line))
        assert len(found) == 1, line
        assert check_arguments(found[0]) == [], line


# --- links between the docs -----------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Markdown file outside its code blocks."""
    lines, inside = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """The anchors GitHub makes for the headings of a Markdown file: lower case, punctuation other than ``-``
    and ``_`` dropped, spaces as ``-``; a repeated one gets ``-1``, ``-2``, ..."""
    found: set[str] = set()
    for _, line in _prose_lines(path):
        if line.startswith("#"):
            base = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            slug, n = base, 0
            while slug in found:
                n += 1
                slug = f"{base}-{n}"
            found.add(slug)
    return found


def test_links_between_the_docs_lead_somewhere() -> None:
    problems = []
    for path in DOCS:
        # the text of a link may wrap onto the next line: look at each paragraph line with the next one
        lines = _prose_lines(path)
        for (number, line), (_, following) in zip(lines, [*lines[1:], (0, "")], strict=True):
            for match in LINK.finditer(line + " " + following):
                if match.start() >= len(line):
                    continue  # starts on the next line: checked there
                target = match["target"]
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists():
                    problems.append(f"{_rel(path)}:{number}: {target}: no file {file_part}")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{_rel(path)}:{number}: {target}: {_rel(linked)} has no heading #{anchor}")
    assert problems == [], "\n".join(problems)
