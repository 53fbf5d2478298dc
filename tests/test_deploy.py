"""The files in deploy/ are what docs/deployment.md says: the systemd units pass ``systemd-analyze verify`` and
start real ``calsync`` commands with the documented layout and hardening; the nginx server block passes
``nginx -t`` (when nginx is installed); nginx and Caddy publish exactly the paths calsync serves."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calsync.admin.pages import PREFIX as ADMIN_PREFIX
from calsync.api.app import PREFIX as API_PREFIX
from calsync.sources.registry import push_readers

from .cli_lines import calsync_invocations, check_arguments

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
NGINX_CONF = DEPLOY / "nginx" / "calsync.conf"
CADDYFILE = DEPLOY / "caddy" / "Caddyfile"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, each key with its values in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_there_are_units_for_serve_and_worker() -> None:
    assert [u.name for u in UNITS] == ["calsync-serve.service", "calsync-worker.service"]


# --- systemd-analyze verify -----------------------------------------------------------------------------------


def _testable_copy(unit: Path, directory: Path) -> Path:
    """The unit as ``systemd-analyze verify`` can check it on this machine: ExecStart's program is the calsync of
    this Python environment (verify refuses a program that does not exist), and User=/Group= are root (the
    ``calsync`` user of a real installation does not exist here). Nothing else changes."""
    calsync = Path(sys.prefix) / "bin" / "calsync"
    program = str(calsync) if calsync.exists() else sys.executable
    text = unit.read_text(encoding="utf-8")
    text = text.replace("/opt/calsync/venv/bin/calsync", program)
    text = re.sub(r"(?m)^(User|Group)=calsync$", r"\1=root", text)
    copy = directory / unit.name
    copy.write_text(text, encoding="utf-8")
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.skip(
            f"systemd-analyze not found at {SYSTEMD_ANALYZE}: cannot verify the systemd units (Debian: systemd)"
        )
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    result = _verify(_testable_copy(unit, tmp_path))
    # verify exits 0 even for unknown keys and bad values, and only says so: any output is a finding
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify {unit.name}:\n{output}"


def test_systemd_analyze_verify_finds_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    unit = _testable_copy(UNITS[0], tmp_path)
    unit.write_text(
        unit.read_text(encoding="utf-8").replace("ProtectSystem=strict", "ProtectSystem=stricter\nRestartt=always"),
        encoding="utf-8",
    )
    result = _verify(unit)
    output = result.stdout + result.stderr
    assert "stricter" in output
    assert "Restartt" in output


# --- what the units run ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_starts_a_real_calsync_command(unit: Path) -> None:
    (exec_start,) = unit_settings(unit)["ExecStart"]
    (args,) = calsync_invocations("ExecStart=" + exec_start)
    assert exec_start.startswith("/opt/calsync/venv/bin/calsync -c /etc/calsync/calsync.toml ")
    assert check_arguments(args) == [], exec_start
    command = unit.stem.removeprefix("calsync-")
    assert args[2] == command
    if command == "serve":
        assert args[3:] == ["--host", "127.0.0.1", "--port", "8080"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_runs_as_documented_with_its_hardening(unit: Path) -> None:
    settings = {key: values[-1] for key, values in unit_settings(unit).items()}
    expected = {
        "User": "calsync",
        "Group": "calsync",
        "WorkingDirectory": "/var/lib/calsync",
        "EnvironmentFile": "/etc/calsync/secrets.env",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/calsync",
        "StateDirectory": "calsync",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "WantedBy": "multi-user.target",
    }
    assert {key: settings.get(key) for key in expected} == expected


# --- the reverse proxies --------------------------------------------------------------------------------------


def served_prefixes() -> list[str]:
    """The path prefixes calsync serves that a proxy in front of it must forward: each protocol's notification
    (and lifecycle) door, the API and the web admin."""
    doors = []
    for reader in push_readers().values():
        doors.append(f"/{reader.door}/notifications/")
        if reader.lifecycle:
            doors.append(f"/{reader.door}/lifecycle/")
    return [*doors, API_PREFIX + "/", ADMIN_PREFIX + "/"]


def nginx_locations(text: str) -> dict[str, str]:
    """The ``location`` blocks of the 443 server of an nginx configuration: path (or regex) -> block body."""
    server = text[text.index("listen 443") :]
    found: dict[str, str] = {}
    for match in re.finditer(r"location\s+(?:~\s+)?(\S+)\s*\{(.*?)\n    \}", server, re.S):
        found[match[1]] = match[2]
    return found


def test_nginx_forwards_every_path_calsync_serves() -> None:
    locations = nginx_locations(NGINX_CONF.read_text(encoding="utf-8"))
    for prefix in served_prefixes():
        covering = [path for path in locations if not path.startswith("^") and prefix.startswith(path)]
        assert covering, f"no location of {NGINX_CONF.name} forwards {prefix}"
        assert "proxy_pass http://calsync;" in locations[max(covering, key=len)], prefix
    assert "return 404;" in locations["/"]


def test_nginx_keeps_the_api_the_admin_and_the_operations_routes_internal() -> None:
    locations = nginx_locations(NGINX_CONF.read_text(encoding="utf-8"))
    for path in ("/api/", "/admin/", "^/(metrics|healthz|readyz)$"):
        assert "deny all;" in locations[path], path
        assert "allow all" not in locations[path], path
    for door in ("/ews/notifications/", "/graph/"):  # Exchange and Graph must get through
        assert "deny" not in locations[door], door


def test_nginx_uses_real_certificate_lines_and_replaces_x_forwarded_for() -> None:
    text = NGINX_CONF.read_text(encoding="utf-8")
    assert "ssl_certificate /etc/letsencrypt/live/calsync.example.com/fullchain.pem;" in text
    assert "ssl_certificate_key /etc/letsencrypt/live/calsync.example.com/privkey.pem;" in text
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "$proxy_add_x_forwarded_for" not in text  # appending would let a client write the address calsync uses


def test_caddy_forwards_the_same_paths() -> None:
    text = CADDYFILE.read_text(encoding="utf-8")
    forwarded = re.findall(r"(/[\w/]*/)\*", text)  # handle /ews/notifications/* ..., path /api/* /admin/*
    for prefix in served_prefixes():
        assert any(prefix.startswith(p) for p in forwarded), f"{CADDYFILE.name} does not forward {prefix}"
    assert re.search(r"path /api/\* /admin/\* /metrics /healthz /readyz\n\s+remote_ip ", text)
    assert "respond 404" in text


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for calsync.example.com and its key (the emulator's test certificate authority makes them)."""
    from calsync.emulator.tls import make_tls_files

    files = make_tls_files(directory, "calsync.example.com")
    return files.cert_file, files.key_file


def _nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        pytest.skip(
            f"nginx is not installed: {NGINX_CONF.relative_to(ROOT)} was not checked with `nginx -t` "
            '(install it with "apt-get install nginx" to check it)'
        )
    return found


def test_nginx_accepts_the_server_block(tmp_path: Path) -> None:
    nginx = _nginx()
    cert, key = _self_signed(tmp_path)
    server = NGINX_CONF.read_text(encoding="utf-8")
    server = server.replace("/etc/letsencrypt/live/calsync.example.com/fullchain.pem", str(cert))
    server = server.replace("/etc/letsencrypt/live/calsync.example.com/privkey.pem", str(key))
    (tmp_path / "calsync.conf").write_text(server, encoding="utf-8")
    (tmp_path / "logs").mkdir()
    temp = tmp_path / "temp"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        f"error_log {tmp_path}/logs/error.log;\n"
        "events {}\n"
        "http {\n"
        f"    access_log {tmp_path}/logs/access.log;\n"
        + "".join(
            f"    {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp_path}/calsync.conf;\n"
        "}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [nginx, "-t", "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_deploy_file_the_docs_name_exists() -> None:
    named = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named |= set(re.findall(r"\bdeploy/[\w./-]*\w", doc.read_text(encoding="utf-8")))
    assert {"deploy/systemd/calsync-serve.service", "deploy/nginx/calsync.conf", "deploy/caddy/Caddyfile"} <= named
    assert sorted(name for name in named if not (ROOT / name).exists()) == []
