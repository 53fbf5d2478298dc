"""calsync.settings: sources and their priority, every validation rule and its message, secrets kept out of sight."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

import calsync.settings as settings_module
from calsync.settings import (
    CLASSIC_NAMES,
    MASK,
    Settings,
    SettingsError,
    effective_settings,
    is_email_address,
    listener_callback_url,
    load_settings,
    new_listener_secret,
)

SECRET = "s3cr3t-Segment_0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No CALSYNC_* or classic variable from the developer's shell, and no calsync.toml from their directory."""
    classic = {name.lower() for name in CLASSIC_NAMES.values()}
    for key in list(os.environ):
        if key.upper().startswith("CALSYNC_") or key.lower() in classic:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(**kwargs: object) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load_settings(**kwargs)
    return info.value.problems


def only_problem(**kwargs: object) -> str:
    problems = problems_of(**kwargs)
    assert len(problems) == 1, problems
    return problems[0]


# --- defaults and sources -----------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings()
    assert s.exchange_url == "http://127.0.0.1:8765/EWS/Exchange.asmx"
    assert s.exchange_version == "Exchange2016"
    assert s.batch_size == 512
    assert s.listener_url == "http://127.0.0.1:8080"
    assert s.listener_secret is None
    assert s.status_frequency == 30
    assert s.failure_recipients == ()
    assert s.past_window_days == 180
    assert s.process_notifications_interval_seconds == 60
    assert s.manage_subscriptions_interval_seconds == 300
    assert s.database_url == "sqlite:///calsync.sqlite3"
    assert s.auth_type == "basic"
    assert s.username == "svc"
    assert s.password is not None and s.password.get_secret_value() == "secret"
    assert (s.oauth_tenant_id, s.oauth_client_id, s.oauth_client_secret) == (None, None, None)
    assert (s.smtp_host, s.smtp_port, s.smtp_security, s.smtp_username, s.smtp_password) == (
        None,
        25,
        "none",
        None,
        None,
    )
    assert s.smtp_sender == "calsync@localhost"
    assert s.log_level == "INFO"
    assert s.config_file is None


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.batch_size = 5


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_BATCH_SIZE", "100")
    monkeypatch.setenv("CALSYNC_EXCHANGE_VERSION", "exchange2019")
    monkeypatch.setenv("CALSYNC_FAILURE_RECIPIENTS", " ann@example.com ; bob@example.com; ")
    monkeypatch.setenv("CALSYNC_LISTENER_SECRET", SECRET)
    monkeypatch.setenv("CALSYNC_DATABASE_URL", "postgresql+psycopg://calsync@127.0.0.1:5432/test")
    monkeypatch.setenv("CALSYNC_SMTP_HOST", "")  # empty means unset
    monkeypatch.setenv("calsync_log_level", "debug")  # names and choices are matched regardless of case
    s = load_settings()
    assert s.batch_size == 100
    assert s.exchange_version == "Exchange2019"
    assert s.failure_recipients == ("ann@example.com", "bob@example.com")
    assert s.listener_secret is not None and s.listener_secret.get_secret_value() == SECRET
    assert s.database_url == "postgresql+psycopg://calsync@127.0.0.1:5432/test"
    assert s.smtp_host is None
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("classic", "value", "name", "expected"),
    [
        ("EWSNotificationsListenerURL", "https://mail.example.com/EWS/Exchange.asmx", "exchange_url", None),
        ("ExchangeVersion", "Exchange2013", "exchange_version", None),
        ("EWSBatchSize", "100", "batch_size", 100),
        ("PushNotificationsListener", "https://calsync.example.com", "listener_url", None),
        ("StatusFrequencyForEWSNotifications", "5", "status_frequency", 5),
        (
            "NotifySyncFailureTo",
            "ann@example.com;bob@example.com",
            "failure_recipients",
            ("ann@example.com", "bob@example.com"),
        ),
        ("PastWindowDays", "0", "past_window_days", 0),
        ("ProcessEWSPushNotifications", "15", "process_notifications_interval_seconds", 15),
        ("ManagePushSubscriptionsForCalendarSync", "600", "manage_subscriptions_interval_seconds", 600),
    ],
)
def test_classic_environment_names(
    monkeypatch: pytest.MonkeyPatch, classic: str, value: str, name: str, expected: object
) -> None:
    assert CLASSIC_NAMES[name] == classic
    monkeypatch.setenv(classic, value)
    assert getattr(load_settings(), name) == (value if expected is None else expected)


def test_every_classic_name_is_tested() -> None:
    assert set(CLASSIC_NAMES) == {
        "exchange_url",
        "exchange_version",
        "batch_size",
        "listener_url",
        "status_frequency",
        "failure_recipients",
        "past_window_days",
        "process_notifications_interval_seconds",
        "manage_subscriptions_interval_seconds",
    }


def test_toml_with_snake_case_and_classic_keys(tmp_path: Path) -> None:
    write_toml(
        tmp_path / "calsync.toml",
        f"""
        batch_size = 64
        ExchangeVersion = "Exchange2010"
        NotifySyncFailureTo = ["ann@example.com", "bob@example.com; cyd@example.com"]
        listener_secret = "{SECRET}"
        smtp_host = "mail.example.com"
        smtp_port = 587
        smtp_security = "STARTTLS"
        pastwindowdays = 30
        """,
    )
    s = load_settings()
    assert s.batch_size == 64
    assert s.exchange_version == "Exchange2010"
    assert s.failure_recipients == ("ann@example.com", "bob@example.com", "cyd@example.com")
    assert s.smtp_host == "mail.example.com"
    assert (s.smtp_port, s.smtp_security) == (587, "starttls")
    assert s.past_window_days == 30
    assert s.config_file == Path("calsync.toml")


def test_config_file_from_argument_and_from_calsync_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", "batch_size = 1\n")
    from_env = write_toml(tmp_path / "env.toml", "batch_size = 2\n")
    from_arg = write_toml(tmp_path / "arg.toml", "batch_size = 3\n")
    assert load_settings().batch_size == 1
    monkeypatch.setenv("CALSYNC_CONFIG", str(from_env))
    assert load_settings().batch_size == 2
    s = load_settings(from_arg)
    assert s.batch_size == 3
    assert s.config_file == from_arg


def test_priority_kwargs_over_environment_over_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", "batch_size = 10\nstatus_frequency = 10\npast_window_days = 10\n")
    monkeypatch.setenv("CALSYNC_STATUS_FREQUENCY", "20")
    monkeypatch.setenv("PastWindowDays", "20")
    s = load_settings(past_window_days=30)
    assert (s.batch_size, s.status_frequency, s.past_window_days) == (10, 20, 30)
    # A classic environment name beats a snake_case key in the file, and a keyword argument may use a classic name.
    monkeypatch.setenv("EWSBatchSize", "20")
    assert load_settings().batch_size == 20
    assert load_settings(EWSBatchSize=30).batch_size == 30


def test_same_setting_twice_in_one_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", "batch_size = 10\nEWSBatchSize = 10\n")
    assert load_settings().batch_size == 10  # same value under both names: fine
    write_toml(tmp_path / "calsync.toml", "batch_size = 10\nEWSBatchSize = 20\n")
    problem = only_problem()
    assert problem.startswith(
        "batch_size (EWSBatchSize): given twice in calsync.toml, as batch_size and as EWSBatchSize"
    )
    write_toml(tmp_path / "calsync.toml", "")
    monkeypatch.setenv("CALSYNC_BATCH_SIZE", "10")
    monkeypatch.setenv("EWSBatchSize", "20")
    assert "given twice in the environment, as CALSYNC_BATCH_SIZE and as EWSBatchSize" in only_problem()


# --- validation rules and messages --------------------------------------------------------------------------------


def test_message_format_of_the_design() -> None:
    assert only_problem(batch_size=600) == "batch_size (EWSBatchSize): 600 is out of range; allowed: 1..512"


@pytest.mark.parametrize(
    ("name", "value", "what", "allowed"),
    [
        ("batch_size", 0, "0 is out of range", "1..512"),
        ("batch_size", "abc", "'abc' is not a whole number", "1..512"),
        ("batch_size", 1.5, "1.5 is not a whole number", "1..512"),
        ("batch_size", True, "True is not a whole number", "1..512"),
        (
            "exchange_version",
            "Exchange2017",
            "'Exchange2017' is not one of the allowed values",
            "Exchange2010, Exchange2013, Exchange2016, Exchange2019, Exchange365",
        ),
        (
            "exchange_url",
            "ftp://mail.example.com/EWS",
            "is not an http:// or https:// URL",
            "an http:// or https:// URL",
        ),
        ("exchange_url", "mail.example.com", "is not an http:// or https:// URL", "an http:// or https:// URL"),
        ("exchange_url", "https:///EWS/Exchange.asmx", "has no valid host", "an http:// or https:// URL"),
        ("exchange_url", "https://mail.example.com:99999/EWS", "has an invalid port", "an http:// or https:// URL"),
        ("exchange_url", "https://mail example.com/EWS", "contains white space", "an http:// or https:// URL"),
        ("exchange_url", "", "is empty", "an http:// or https:// URL"),
        ("exchange_url", 42, "42 is not text", "an http:// or https:// URL"),
        ("listener_url", "https://calsync.example.com/?x=1", "has a query or fragment", "no query"),
        ("listener_url", "calsync.example.com", "is not an http:// or https:// URL", "an http:// or https:// base URL"),
        (
            "listener_secret",
            "too-short",
            "the value (9 characters) is not a valid secret path segment",
            "16..128 characters of A-Z a-z 0-9 _ -",
        ),
        ("listener_secret", "x" * 129, "(129 characters) is not a valid secret path segment", "16..128 characters"),
        ("listener_secret", "slash/is/not/allowed", "is not a valid secret path segment", "16..128 characters"),
        ("status_frequency", 0, "0 is out of range", "1..1440 (minutes)"),
        ("status_frequency", 1441, "1441 is out of range", "1..1440 (minutes)"),
        (
            "failure_recipients",
            "ann@example.com;nobody",
            "'nobody' is not a valid e-mail address",
            "e-mail addresses separated by ';'",
        ),
        (
            "failure_recipients",
            ["a@b@c", "Ann <ann@example.com>"],
            "'a@b@c', 'Ann <ann@example.com>' are not valid e-mail addresses",
            "separated by ';'",
        ),
        ("failure_recipients", "ann@example.com,bob@example.com", "is not a valid e-mail address", "separated by ';'"),
        ("failure_recipients", 5, "5 is not text or a list of addresses", "separated by ';'"),
        ("past_window_days", -1, "-1 is out of range", "0..3650 (days)"),
        ("past_window_days", 3651, "3651 is out of range", "0..3650 (days)"),
        ("process_notifications_interval_seconds", 0, "0 is out of range", "1..86400 (seconds)"),
        ("manage_subscriptions_interval_seconds", 86401, "86401 is out of range", "1..86400 (seconds)"),
        ("database_url", "mysql://calsync@db/calsync", "the database 'mysql' is not supported", "sqlite"),
        ("database_url", "postgres://calsync@db/calsync", "did you mean postgresql+psycopg?", "postgresql"),
        ("database_url", "calsync.sqlite3", "is not a SQLAlchemy URL", "sqlite:///PATH"),
        ("auth_type", "kerberos", "'kerberos' is not one of the allowed values", "basic, ntlm, oauth"),
        ("smtp_host", "mail server", "'mail server' is not a host name or IP address", "a host name or IP address"),
        ("smtp_port", 0, "0 is out of range", "1..65535"),
        ("smtp_port", 65536, "65536 is out of range", "1..65535"),
        ("smtp_security", "ssl", "'ssl' is not one of the allowed values", "none, starttls, tls"),
        ("smtp_sender", "calsync", "'calsync' is not a valid e-mail address", "one e-mail address"),
        ("log_level", "TRACE", "'TRACE' is not one of the allowed values", "DEBUG, INFO, WARNING, ERROR"),
    ],
)
def test_rule_messages_name_the_setting_and_the_allowed_values(
    name: str, value: object, what: str, allowed: str
) -> None:
    problem = only_problem(**{name: value})
    label = f"{name} ({CLASSIC_NAMES[name]})" if name in CLASSIC_NAMES else name
    assert problem.startswith(f"{label}: "), problem
    head, _, rule = problem.partition("; allowed: ")
    assert what in head, problem
    assert allowed in rule, problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 1),
        ("batch_size", 512),
        ("batch_size", "256"),
        ("status_frequency", 1440),
        ("past_window_days", 3650),
        ("exchange_url", "https://10.0.0.5:8443/EWS/Exchange.asmx"),
        ("exchange_url", "http://[::1]:8765/EWS/Exchange.asmx"),
        ("listener_url", "https://calsync.example.com/prefix/"),
        ("listener_secret", "a" * 16),
        ("listener_secret", "A-z_9" * 25 + "abc"),
        ("database_url", "sqlite:///:memory:"),
        ("database_url", "sqlite+pysqlite:////var/lib/calsync/db.sqlite3"),
        ("database_url", "postgresql+psycopg://calsync:pw@db.example.com:5432/calsync"),
        ("smtp_host", "127.0.0.1"),
        ("smtp_host", "smtp.example.com"),
        ("smtp_sender", "calsync+alerts@mail.example.com"),
        ("auth_type", "NTLM"),
    ],
)
def test_values_that_are_allowed(name: str, value: object) -> None:
    load_settings(**{name: value})


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("ann@example.com", True),
        ("calsync@localhost", True),
        ("ann.smith+cal@contoso.local", True),
        ("o'brien@example.co.uk", True),
        ("ann@example", True),
        ("", False),
        ("ann", False),
        ("@example.com", False),
        ("ann@", False),
        ("ann..smith@example.com", False),
        (".ann@example.com", False),
        ("ann@-example.com", False),
        ("ann@example..com", False),
        ("ann@1.2.3.4", False),
        ("ann smith@example.com", False),
        ("Ann <ann@example.com>", False),
        ("a" * 65 + "@example.com", False),
        ("ann@" + "a" * 64 + ".com", False),
        ("änn@example.com", False),
    ],
)
def test_email_address_rule(address: str, valid: bool) -> None:
    assert is_email_address(address) is valid


def test_smtp_password_required_with_smtp_username() -> None:
    problem = only_problem(smtp_username="calsync")
    assert problem.startswith("smtp_password: not set, but smtp_username is set; allowed: ")
    load_settings(smtp_username="calsync", smtp_password="pw")


def test_all_problems_are_collected_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", 'EWSBatchSize = 600\nlog_level = "TRACE"\n')
    monkeypatch.setenv("CALSYNC_STATUS_FREQUENCY", "0")
    monkeypatch.setenv("NotifySyncFailureTo", "nobody")
    with pytest.raises(SettingsError) as info:
        load_settings(smtp_port=70000, exchange_version="2016")
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == [
        "exchange_version (ExchangeVersion)",
        "batch_size (EWSBatchSize)",
        "status_frequency (StatusFrequencyForEWSNotifications)",
        "failure_recipients (NotifySyncFailureTo)",
        "smtp_port",
        "log_level",
    ]
    text = str(info.value)
    assert text.startswith("6 problems with the settings:")
    assert all(f"- {p}" in text for p in problems)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", 'EWSBatchSise = 100\nexchange_version = "Exchange2019"\n')
    problem = only_problem()
    assert problem.startswith("calsync.toml: unknown setting 'EWSBatchSise' (did you mean EWSBatchSize?); allowed: ")
    for accepted in ("batch_size", "EWSBatchSize", "exchange_url", "NotifySyncFailureTo", "log_level"):
        assert accepted in problem


def test_toml_tables_are_not_settings(tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", '[smtp]\nhost = "mail.example.com"\n')
    problem = only_problem()
    assert "unknown setting 'smtp'" in problem and "top-level keys" in problem


def test_bad_toml_and_missing_explicit_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_toml(tmp_path / "calsync.toml", "batch_size = = 3\n")
    assert "calsync.toml': not valid TOML" in only_problem()
    missing = tmp_path / "nowhere.toml"
    assert f"config file: '{missing}' does not exist" in only_problem(config_file=missing)
    monkeypatch.setenv("CALSYNC_CONFIG", str(missing))
    assert "CALSYNC_CONFIG" in only_problem()


def test_unknown_calsync_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_EWS_REFERENCE", "/somewhere")  # used by the tests: not a setting, but known
    monkeypatch.setenv("CALSYNC_BATCHSIZE", "100")
    problem = only_problem()
    assert problem.startswith("environment variable CALSYNC_BATCHSIZE is not a calsync setting")
    assert "did you mean CALSYNC_BATCH_SIZE?" in problem
    assert "batch_size" in problem and "CALSYNC_CONFIG" in problem


def test_unknown_keyword_argument() -> None:
    assert only_problem(batch=5).startswith("the keyword arguments: unknown setting 'batch'")


def test_settings_constructed_directly_still_raise_settings_error(tmp_path: Path) -> None:
    assert Settings().batch_size == 512
    write_toml(tmp_path / "calsync.toml", "bogus = 1\n")
    with pytest.raises(SettingsError):
        Settings()


# --- secrets ------------------------------------------------------------------------------------------------------


def test_secrets_masked_for_display_and_absent_from_repr() -> None:
    s = load_settings(
        listener_secret=SECRET,
        password="hunter2-password",
        oauth_client_secret="oauth-client-secret",
        smtp_username="mailer",
        smtp_password="smtp-password",
        database_url="postgresql+psycopg://calsync:db-password@db.example.com/calsync",
    )
    shown = effective_settings(s)
    assert set(shown) == set(Settings.model_fields)
    for name in ("listener_secret", "password", "oauth_client_secret", "smtp_password"):
        assert shown[name] == MASK
    assert shown["database_url"] == f"postgresql+psycopg://calsync:{MASK}@db.example.com/calsync"
    assert shown["batch_size"] == 512 and shown["username"] == "svc"
    assert isinstance(s.password, SecretStr)
    for text in (repr(s), str(s), repr(shown)):
        for secret in (SECRET, "hunter2-password", "oauth-client-secret", "smtp-password", "db-password"):
            assert secret not in text


def test_unset_secrets_show_as_none() -> None:
    shown = effective_settings(load_settings())
    assert shown["listener_secret"] is None and shown["smtp_password"] is None and shown["password"] == MASK


def test_error_messages_do_not_echo_secrets() -> None:
    problems = problems_of(
        listener_secret="my secret value!",
        exchange_url="https://svc:url-password@mail.example.com/EWS/Exchange.asmx",
        database_url="mysql://calsync:db-password@db/calsync",
        password=12345,
    )
    text = "\n".join(problems)
    for secret in ("my secret value!", "url-password", "db-password", "12345"):
        assert secret not in text
    assert len(problems) == 4


# --- credentials --------------------------------------------------------------------------------------------------


def test_credentials_only_checked_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_AUTH_TYPE", "oauth")
    s = load_settings()  # a fresh machine: `config check` still gets its settings
    assert [p.split(":")[0] for p in s.missing_credentials()] == [
        "oauth_tenant_id",
        "oauth_client_id",
        "oauth_client_secret",
    ]


def test_require_credentials_basic(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(require_credentials=True).username == "svc"  # the emulator's demo account
    monkeypatch.setenv("CALSYNC_USERNAME", "")
    monkeypatch.setenv("CALSYNC_PASSWORD", "")
    problems = problems_of(require_credentials=True)
    assert problems == [
        "username: not set, but auth_type 'basic' requires it; allowed: a user name (required for auth_type basic "
        "and ntlm)",
        "password: not set, but auth_type 'basic' requires it; allowed: a password (required for auth_type basic "
        "and ntlm)",
    ]
    assert len(problems_of(require_credentials=True, auth_type="ntlm")) == 2
    assert load_settings(require_credentials=True, username="svc-calsync", password="pw").username == "svc-calsync"


def test_require_credentials_oauth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALSYNC_AUTH_TYPE", "oauth")
    problems = problems_of(require_credentials=True, batch_size=0)
    assert [p.split(":")[0] for p in problems] == [
        "batch_size (EWSBatchSize)",
        "oauth_tenant_id",
        "oauth_client_id",
        "oauth_client_secret",
    ]
    assert "not set, but auth_type 'oauth' requires it; allowed: " in problems[1]
    s = load_settings(
        require_credentials=True, oauth_tenant_id="tenant", oauth_client_id="client", oauth_client_secret="cs"
    )
    assert s.missing_credentials() == []


# --- the listener URL ---------------------------------------------------------------------------------------------


def test_listener_callback_url() -> None:
    s = load_settings(listener_url="https://calsync.example.com/", listener_secret=SECRET)
    assert listener_callback_url(s) == f"https://calsync.example.com/ews/notifications/{SECRET}"
    s = load_settings(listener_url="https://example.com/calsync", listener_secret=SECRET)
    assert listener_callback_url(s) == f"https://example.com/calsync/ews/notifications/{SECRET}"


def test_listener_callback_url_needs_a_secret() -> None:
    with pytest.raises(SettingsError) as info:
        listener_callback_url(load_settings())
    assert info.value.problems[0].startswith("listener_secret: not set")
    assert "allowed: 16..128 characters" in info.value.problems[0]


def test_new_listener_secret_is_valid() -> None:
    secret = new_listener_secret()
    assert secret != new_listener_secret()
    assert load_settings(listener_secret=secret).listener_secret == SecretStr(secret)


def test_docstring_lists_every_setting_and_classic_name() -> None:
    doc = settings_module.__doc__ or ""
    for name in Settings.model_fields:
        assert f"``{name}``" in doc, name
    for classic in CLASSIC_NAMES.values():
        assert classic in doc, classic


# --- the Graph connection -----------------------------------------------------------------------------------------


GRAPH = {"graph_tenant_id": "contoso.onmicrosoft.com", "graph_client_id": "5f1c2a9e", "graph_client_secret": "app~pw1"}


def test_graph_is_configured_by_tenant_client_and_a_credential() -> None:
    plain = load_settings()
    assert not plain.graph_configured and plain.default_source == "ews"
    s = load_settings(**GRAPH, listener_secret=SECRET)
    assert s.graph_configured and s.default_source == "ews"  # Graph beside EWS: new operators stay on EWS
    assert load_settings(**GRAPH, exchange_version="Exchange365").default_source == "graph"
    assert (s.graph_authority, s.graph_endpoint) == (
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com/v1.0",
    )
    assert (s.graph_subscription_minutes, s.graph_renew_before_minutes, s.graph_future_days) == (4230, 360, 730)
    assert effective_settings(s)["graph_client_secret"] == MASK
    assert listener_callback_url(s, "graph") == f"http://127.0.0.1:8080/graph/notifications/{SECRET}"
    public = load_settings(**GRAPH, listener_secret=SECRET, graph_listener_url="https://calsync.example.com/")
    assert listener_callback_url(public, "graph") == f"https://calsync.example.com/graph/notifications/{SECRET}"
    assert listener_callback_url(public) == f"http://127.0.0.1:8080/ews/notifications/{SECRET}"


def test_a_graph_connection_set_up_in_part_is_refused() -> None:
    problems = problems_of(graph_client_id="5f1c2a9e")
    assert any(p.startswith("graph_tenant_id: not set") for p in problems)
    assert any(p.startswith("graph_client_secret: neither it nor graph_certificate") for p in problems)
    assert "app~pw1" not in " ".join(problems_of(graph_client_secret="app~pw1"))


def test_graph_values_are_checked(tmp_path: Path) -> None:
    assert only_problem(**GRAPH, graph_authority="http://login.example.com").startswith(
        "graph_authority: 'http://login.example.com' is not https://"
    )
    assert "less than graph_subscription_minutes" in only_problem(
        **GRAPH, graph_subscription_minutes=60, graph_renew_before_minutes=60
    )
    assert "out of range; allowed: 45..10080" in only_problem(**GRAPH, graph_subscription_minutes=20000)
    assert "is not a file" in only_problem(**GRAPH, graph_ca_file=str(tmp_path / "missing.pem"))
    key_only = tmp_path / "key.pem"
    key_only.write_text("-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n")
    certificate = {k: v for k, v in GRAPH.items() if k != "graph_client_secret"} | {"graph_certificate": str(key_only)}
    assert "holds no PEM certificate" in only_problem(**certificate)
    both = tmp_path / "app.pem"
    both.write_text(key_only.read_text() + "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    assert load_settings(**certificate | {"graph_certificate": str(both)}).graph_configured
    assert "give one of them" in only_problem(**GRAPH, graph_certificate=str(both))
