"""The OpenAPI document holds: schemathesis generates requests for every API operation from the document,
valid ones and invalid ones, and checks that calsync never answers with a 5xx and that every answer fits the
document (status code declared, content type, body schema). Runs against a real calsync (SQLite) and the
emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from calsync.runtime import Runtime
from calsync.settings import load_settings

from .conftest import SERVICE_PASSWORD, SERVICE_USER, start_emulator

ADMIN_TOKEN = "admin-token-for-schemathesis-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(schema_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    emulator = start_emulator(schema_dir, mailboxes=[])
    emulator.add_mailbox("ann@example.com", populate_count=5, seed=3)
    settings_ = load_settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('schema') / 'calsync.sqlite3'}",
        exchange_url=emulator.url,
        username=SERVICE_USER,
        password=SERVICE_PASSWORD,
        listener_secret="s" * 32,
        api_tokens=f"admin:{ADMIN_TOKEN}",
    )
    runtime = Runtime(settings_, threads=1)
    runtime.prepare()
    yield schemathesis.openapi.from_asgi("/api/v1/openapi.json", runtime.app(run_jobs=False))
    runtime.close()
    emulator.stop()


def test_every_operation_answers_within_its_document(api_schema: Any) -> None:
    # Each operation gets its own Hypothesis run (schemathesis' pytest plugin does the same, but its lazy
    # fixture loader does not work with pytest 9).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    strategies = [
        (operation, mode) for operation in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    for operation, mode in strategies:

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_within_the_document(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        answers_within_the_document()
