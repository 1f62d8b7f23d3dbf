"""The committed openapi.yaml is the app's schema, and fuzzing the API from it finds no 5xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.service_helpers import ServerThread

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


def test_committed_openapi_equals_the_apps_schema() -> None:
    from behaviorlm.service.openapi import schema

    committed = yaml.safe_load(OPENAPI.read_text())
    current = json.loads(json.dumps(schema()))
    assert committed == current, "openapi.yaml is stale: run `make openapi`"


schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

fuzz_schema = schemathesis.openapi.from_path(str(OPENAPI))


@fuzz_schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzing_finds_no_server_errors(case: Any, server: ServerThread) -> None:
    """Schema-driven inputs, valid and invalid: never a 5xx, and every response (errors
    included) matches its documented schema."""
    headers = case.headers or {}
    deadline = str(headers.get("X-Deadline-Ms", ""))
    if deadline.isdigit():
        # A client asking for a 1 ms deadline rightly gets 504: not a server error to find.
        headers["X-Deadline-Ms"] = str(max(int(deadline), 30_000))
    case.call_and_validate(
        base_url=server.url,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        timeout=30,
    )
