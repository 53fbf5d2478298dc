"""The independence rules of the design, checked on the source: the emulator is written from the protocol
(it imports no EWS client and nothing of calsync's own sync side), the sync side never imports the
emulator, and SQL stays in the store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "calsync"


def imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py") if (SRC / package).is_dir() else [SRC / f"{package}.py"]:
        names: set[str] = set()
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # resolve relative imports against the module's package
                    base = module.split(".")[: -node.level]
                    names.add(".".join([*base, node.module] if node.module else base))
                elif node.module:
                    names.add(node.module)
        found[str(path.relative_to(SRC))] = names
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path, names in imports(package).items():
        hits = sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))
        if hits:
            bad[path] = hits
    return bad


def test_the_emulator_imports_no_ews_client_and_nothing_of_the_sync_side() -> None:
    forbidden = (
        "exchangelib",
        "calsync.sources",
        "calsync.engine",
        "calsync.jobs",
        "calsync.store",
        "calsync.listener",
        "calsync.calendar",
        "calsync.runtime",
    )
    assert offenders("emulator", forbidden) == {}


@pytest.mark.parametrize("package", ["engine", "sources", "jobs", "store", "listener", "api", "calendar"])
def test_the_sync_side_never_imports_the_emulator(package: str) -> None:
    assert offenders(package, ("calsync.emulator",)) == {}


@pytest.mark.parametrize("package", ["engine", "jobs", "listener", "api", "sources", "calendar", "alerts"])
def test_no_sql_outside_the_store(package: str) -> None:
    if not (SRC / package).exists():
        pytest.skip(f"no {package} package")
    assert offenders(package, ("sqlalchemy", "psycopg", "sqlite3", "alembic")) == {}
