"""A processor installed with pip enriches its event type; ``eventflow schemas``
registers and checks the type's schema against a live API and worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.tools.helpers import REPO, Live, run_tool

PLUGIN = REPO / "examples" / "processor-plugin"

CHECKOUT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "required": ["country"],
            "properties": {
                "country": {"type": "string", "minLength": 2, "maxLength": 2},
                "items": {"type": "array"},
            },
        }
    },
}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, built and installed by pip into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
            "--no-index", "--no-build-isolation", "--target", str(target), str(PLUGIN),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    assert (target / "eventflow_geo").is_dir()
    return target


@pytest.fixture
def live_env(plugin_site: Path) -> dict[str, str]:
    path = [str(plugin_site), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


async def _enrichment(live: Live, event_id: str, within_s: float = 15.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        async with live.engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT enrichment FROM processed_events WHERE event_id = :id"),
                {"id": event_id},
            )
        if found is not None:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{event_id} was not processed in {within_s} s")


async def test_installed_plugin_enriches_and_cli_manages_schemas(
    live: Live, tmp_path: Path
) -> None:
    schema_file = tmp_path / "checkout.json"
    schema_file.write_text(json.dumps(CHECKOUT))
    cli = ("-m", "eventflow", "schemas")
    checked = await run_tool(
        *cli, "check", "checkout", str(schema_file), "--api-url", live.url
    )
    assert checked.returncode == 0, checked.stderr
    assert "would be version 1" in checked.stdout
    pushed = await run_tool(
        *cli, "push", "checkout", str(schema_file), "--url", live.url
    )
    assert pushed.returncode == 0, pushed.stderr
    assert "registered version 1" in pushed.stdout

    event_id = "2d9c7c8e-0000-4000-8000-00000000c0de"
    async with httpx.AsyncClient(base_url=live.url) as client:
        response = await client.post(
            "/events",
            json={
                "event_id": event_id,
                "event_type": "checkout",
                "properties": {"country": "de", "items": [1, 2, 3]},
            },
        )
    assert response.status_code == 202, response.text
    enrichment = await _enrichment(live, event_id)
    assert enrichment["region"] == "eu"
    assert enrichment["item_count"] == 3
    assert enrichment["schema_version"] == 1

    # A required property is refused, and the CLI says why.
    stricter = {**CHECKOUT}
    stricter["properties"] = {
        "properties": {
            **CHECKOUT["properties"]["properties"],
            "required": ["country", "zip"],
        }
    }
    schema_file.write_text(json.dumps(stricter))
    refused = await run_tool(
        *cli, "check", "checkout", str(schema_file), "--url", live.url
    )
    assert refused.returncode == 1
    assert "$.properties.zip: becomes required" in refused.stdout
    not_pushed = await run_tool(
        *cli, "push", "checkout", str(schema_file), "--url", live.url
    )
    assert not_pushed.returncode == 1 and "NOT backward compatible" in not_pushed.stdout

    listed = await run_tool(*cli, "list", "--url", live.url)
    assert listed.returncode == 0 and "checkout" in listed.stdout
    shown = await run_tool(
        *cli, "show", "checkout", "--version", "1", "--url", live.url
    )
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["schema"] == CHECKOUT
