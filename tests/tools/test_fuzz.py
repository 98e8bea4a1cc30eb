"""schemathesis against the running API, with authentication on and an admin key:
every operation, a bounded number of generated requests, no 5xx, and every
answer as the OpenAPI document says (status code, content type, body schema)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from eventflow.security.keys import Scope, create_key
from tests.tools.helpers import Live

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)


@pytest.fixture
def live_env() -> dict[str, str]:
    return {"EVENTFLOW_AUTH_REQUIRED": "true"}


async def test_generated_requests_never_get_5xx(live: Live, tmp_path: Path) -> None:
    _, key = await create_key(live.engine, "fuzz", Scope.admin)
    schemathesis = Path(sys.executable).with_name("schemathesis")
    process = await asyncio.create_subprocess_exec(
        str(schemathesis), "run", f"{live.url}/openapi.json",
        "--checks", CHECKS, "--max-examples", "25", "--seed", "20261127",
        "--header", f"Authorization: Bearer {key}", "--no-color",
        "--phases", "examples,coverage,fuzzing",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    report = out.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    assert " passed" in report
