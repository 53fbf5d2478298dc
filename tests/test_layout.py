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


def calsync_packages() -> list[str]:
    return sorted(p.stem for p in SRC.iterdir() if p.name != "__init__.py" and (p.suffix == ".py" or p.is_dir()))


def test_the_emulator_imports_no_client_and_no_other_calsync_package() -> None:
    """Written from the protocols: no EWS or Graph client, and nothing of calsync outside calsync.emulator."""
    others = tuple(f"calsync.{name}" for name in calsync_packages() if name != "emulator")
    clients = ("exchangelib", "msal", "msgraph", "kiota_abstractions", "azure")
    assert offenders("emulator", (*clients, *others)) == {}


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("listener", ("calsync.sources", "calsync.engine", "calsync.jobs", "calsync.api")),  # the reader comes in
        ("jobs", ("calsync.listener", "calsync.api")),
        ("store", ("calsync.sources", "calsync.engine", "calsync.settings", "calsync.jobs", "calsync.api")),
        ("api", ("calsync.jobs", "calsync.engine", "calsync.listener")),  # a job is asked to run through the store
        ("engine", ("calsync.listener", "calsync.api", "calsync.jobs", "calsync.settings")),
        ("sources", ("calsync.store", "calsync.engine", "calsync.jobs", "calsync.api", "calsync.settings")),
        ("calendar", ("calsync.sources", "calsync.store", "calsync.engine", "calsync.settings")),
        ("metrics", ("calsync.alerts",)),
    ],
)
def test_the_rooms_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == {}


@pytest.mark.parametrize("package", ["engine", "sources", "jobs", "store", "listener", "api", "calendar"])
def test_the_sync_side_never_imports_the_emulator(package: str) -> None:
    assert offenders(package, ("calsync.emulator",)) == {}


@pytest.mark.parametrize("package", ["engine", "jobs", "listener", "api", "sources", "calendar", "alerts"])
def test_no_sql_outside_the_store(package: str) -> None:
    if not (SRC / package).exists():
        pytest.skip(f"no {package} package")
    assert offenders(package, ("sqlalchemy", "psycopg", "sqlite3", "alembic")) == {}
