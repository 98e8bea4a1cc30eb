"""``eventflow export`` on real PostgreSQL: each format read back and compared with
the stored rows (an exact decimal included), the time range and type filters,
empty ranges, bad arguments, and memory that stays bounded on 50,000 rows."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow import cli, jsoncodec
from eventflow.config import Settings
from eventflow.pipeline.worker import Worker
from eventflow.processors import EventView
from eventflow.tools.export import (
    TABLES,
    TIME_COLUMNS,
    ExportColumn,
    ExportOptions,
    TableName,
    export,
    fields,
    open_output,
    query,
)
from tests.integration.helpers import count

EXACT = "2345.6789123456789"  # 17 significant digits: not a double
FORMATS = ["jsonl", "csv", "parquet"]


def _event(event_type: str, user: str, properties: str) -> bytes:
    # Built by hand: a Python float would lose the exact decimal's digits.
    return (
        f'{{"event_id": "{uuid.uuid4()}", "event_type": "{event_type}", '
        f'"user_id": "{user}", "properties": {properties}}}'
    ).encode()


def _broken_page_view(event: EventView) -> dict[str, Any]:
    raise RuntimeError("geo lookup failed")


async def _accept_and_process(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
) -> None:
    """Purchases and sign-ups are processed; page views fail (a broken
    enrichment), so every table has rows."""
    bodies = [
        _event("purchase", "u1", f'{{"amount": {EXACT}, "currency": "EUR"}}'),
        _event("purchase", "u2", '{"amount": 49.90, "items": [1, 2, {"sku": "a"}]}'),
        _event("purchase", "u3", '{"amount": 1e400, "note": "line\\nbreak, \\"q\\""}'),
        _event("user_signup", "u4", '{"plan": "pro", "nested": {"a": {"b": null}}}'),
        _event("page_view", "u5", '{"page": "/home"}'),
        _event("page_view", "u6", '{"page": "/about"}'),
    ]
    for body in bodies:
        answer = await client.post(
            "/events", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 202, answer.text
    worker = make_worker()
    worker.processors["page_view"] = _broken_page_view
    await worker.run(until_empty=True)
    assert await count(engine, "processed_events") == 4
    assert await count(engine, "failed_events") == 2


async def _export(
    engine: AsyncEngine, path: Path, **options: Any
) -> tuple[ExportOptions, int]:
    opts = ExportOptions.model_validate(options)
    with open_output(str(path)) as sink:
        rows = await export(engine, opts, sink)
    return opts, rows


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [jsoncodec.loads(line) for line in path.read_bytes().splitlines()]
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return list(pq.read_table(path).to_pylist())


def _partial_files(folder: Path) -> list[Path]:
    return list(folder.glob(".*.partial"))


def _normal(column: ExportColumn, value: Any) -> Any:
    """One form for a value read back from any format or from the database."""
    if value is None or value == "":  # CSV writes None as an empty field
        return None
    if column.kind == "json":
        return jsoncodec.loads(value) if isinstance(value, str) else value
    if column.kind == "time":
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if column.kind in ("int32", "int64"):
        return int(value)
    return str(value)


async def _stored(engine: AsyncEngine, table: TableName) -> list[dict[str, Any]]:
    """Every row as PostgreSQL renders it in JSON (exact numbers), oldest first:
    an oracle independent of the export's own query and decoding."""
    t = TABLES[table]
    keys = ", ".join(c.name for c in t.primary_key.columns)
    async with engine.connect() as conn:
        rows = await conn.scalars(
            text(
                f"SELECT CAST(to_jsonb(x) AS text) FROM {t.name} x "
                f"ORDER BY {TIME_COLUMNS[table]}, {keys}"
            )
        )
        return [jsoncodec.loads(row) for row in rows]


def _normalised(table: TableName, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    columns = fields(table)
    return [{c.name: _normal(c, row[c.name]) for c in columns} for row in rows]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_each_table_round_trips_with_exact_numbers(
    fmt: str,
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    await _accept_and_process(client, engine, make_worker)
    now = datetime.now(UTC)
    expected_rows = {"processed": 4, "raw": 6, "failed": 2}
    for table in ("processed", "raw", "failed"):
        path = tmp_path / f"{table}.{fmt}"
        _, exported = await _export(
            engine,
            path,
            start=(now - timedelta(hours=1)).isoformat(),
            end=(now + timedelta(hours=1)).isoformat(),
            table=table,
            format=fmt,
        )
        assert exported == expected_rows[table]
        read = _read(path, fmt)
        for row in read:  # every column, in the table's order
            assert list(row) == [c.name for c in fields(table)]
        back = _normalised(table, read)
        assert back == _normalised(table, await _stored(engine, table))
        assert _partial_files(tmp_path) == []  # renamed into place

    # The exact decimal is written digit for digit, not through a double.
    processed = tmp_path / f"processed.{fmt}"
    if fmt != "parquet":
        assert EXACT.encode() in processed.read_bytes()
    amounts = [
        _normal(ExportColumn("properties", "json"), row["properties"]).get("amount")
        for row in _read(processed, fmt)
    ]
    assert Decimal(EXACT) in amounts
    assert Decimal("1e400") in amounts  # beyond a double's range
    if fmt == "jsonl":  # nested JSON, not JSON in a string
        first = jsoncodec.loads(processed.read_bytes().splitlines()[0])
        assert isinstance(first["properties"], dict)
        assert isinstance(first["enrichment"], dict)
    if fmt == "parquet":
        schema = pq.read_schema(processed)
        assert str(schema.field("received_at").type) == "timestamp[us, tz=UTC]"
        assert str(schema.field("properties").type) == "string"
        assert pq.ParquetFile(processed).metadata.num_row_groups == 1


T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


async def _insert_timeline(engine: AsyncEngine) -> None:
    """Eight processed events half an hour apart from T0 (2026-03-01 22:00 UTC),
    purchases on even steps and page views on odd ones; user ``u<step>``."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(TABLES["processed"]),
            [
                {
                    "event_id": uuid.uuid4(),
                    "event_type": "purchase" if i % 2 == 0 else "page_view",
                    "user_id": f"u{i}",
                    "event_timestamp": T0 + timedelta(minutes=30 * i),
                    "properties": {"step": i},
                    "enrichment": {},
                    "received_at": T0 + timedelta(minutes=30 * i),
                    "processed_by": "test",
                }
                for i in range(8)
            ],
        )


@pytest.mark.parametrize(
    ("start", "end", "event_type", "steps"),
    [
        # naive = UTC; --from inclusive, --to exclusive
        ("2026-03-01T23:00:00", "2026-03-02T00:30:00Z", None, [2, 3, 4]),
        # dates are midnight UTC
        ("2026-03-02", "2026-03-03", None, [4, 5, 6, 7]),
        ("2026-02-01", "2026-03-02", None, [0, 1, 2, 3]),
        # offsets are converted: 01:00+02:00 is 23:00 UTC the day before
        ("2026-03-02T01:00:00+02:00", "2026-03-02T00:00:00+00:00", None, [2, 3]),
        ("2026-03-01", "2026-03-03", "purchase", [0, 2, 4, 6]),
        ("2026-03-01T22:30Z", "2026-03-01T23:30Z", "page_view", [1]),
        ("2026-03-01", "2026-03-03", "user_signup", []),
        ("2026-03-05", "2026-03-06", None, []),
    ],
)
async def test_time_range_and_type(
    start: str,
    end: str,
    event_type: str | None,
    steps: list[int],
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    await _insert_timeline(engine)
    path = tmp_path / "out.jsonl"
    _, exported = await _export(
        engine, path, start=start, end=end, event_type=event_type, format="jsonl"
    )
    assert exported == len(steps)
    assert [row["user_id"] for row in _read(path, "jsonl")] == [f"u{i}" for i in steps]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_empty_range_is_a_valid_empty_file(
    fmt: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await _insert_timeline(engine)
    path = tmp_path / f"empty.{fmt}"
    _, exported = await _export(
        engine, path, start="2027-01-01", end="2027-02-01", format=fmt
    )
    assert exported == 0
    names = [c.name for c in fields("processed")]
    if fmt == "jsonl":
        assert path.read_bytes() == b""
    elif fmt == "csv":
        assert path.read_text().splitlines() == [",".join(names)]
    else:
        table = pq.read_table(path)
        assert table.num_rows == 0 and table.column_names == names


def _env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": str(settings.database_dsn)}


def _run(settings: Settings, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "eventflow", "export", *args],
        env=_env(settings),
        capture_output=True,
        timeout=60,
    )


async def test_command_line_writes_stdout_and_a_summary(
    engine: AsyncEngine, settings: Settings
) -> None:
    await _insert_timeline(engine)
    done = _run(
        settings,
        ["--from", "2026-03-01", "--to", "2026-03-02", "--type", "purchase",
         "--format", "jsonl"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # stdout holds the rows and nothing else (no log lines)
    lines = done.stdout.splitlines()
    assert [jsoncodec.loads(line)["user_id"] for line in lines] == ["u0", "u2"]
    # stderr is not a terminal: no progress bar, one summary line with the count
    summary = done.stderr.decode().strip()
    assert summary.startswith("exported 2 rows of processed_events of type purchase")
    assert "\n" not in summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "yesterday", "--to", "2026-03-02", "--format", "jsonl"],
         "--from: not an ISO 8601 date or time: 'yesterday'"),
        (["--from", "2026-03-01", "--to", "2026-02-30", "--format", "csv"],
         "--to: not an ISO 8601 date or time: '2026-02-30'"),
        (["--from", "2026-03-02", "--to", "2026-03-01", "--format", "jsonl"],
         "--from (2026-03-02T00:00:00+00:00) must be before --to"),
        (["--from", "2026-03-01T01:00+01:00", "--to", "2026-03-01T00:00Z",
          "--format", "jsonl"], "must be before --to"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--format", "xml"],
         "argument --format: invalid choice: 'xml'"),
        (["--from", "2026-03-01", "--to", "2026-03-02"],
         "the following arguments are required: --format"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--format", "csv",
          "--table", "audit"], "argument --table: invalid choice"),
        (["--from", "2026-03-01", "--to", "2026-03-02", "--format", "csv",
          "--output", "/no/such/folder/out.csv"], "--output: no such directory"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_a_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code: object
    try:
        code = cli.main(["export", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_missing_database_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("EVENTFLOW_DATABASE_URL", raising=False)
    args = ["export", "--from", "2026-03-01", "--to", "2026-03-02", "--format", "csv"]
    assert cli.main(args) == 2
    assert "DATABASE_URL is not set" in capsys.readouterr().err


def test_bad_arguments_show_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventflow", "export", "--from", "2026-13-01",
         "--to", "2026-03-02", "--format", "parquet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("eventflow export: --from: not an ISO 8601")
    assert "Traceback" not in done.stderr and done.stdout == ""


MANY = 50_000


async def _insert_many(engine: AsyncEngine) -> None:
    """MANY small processed events (about 300 bytes of JSON each) on 2026-02-01."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO processed_events (event_id, event_type, user_id, "
                "event_timestamp, properties, enrichment, correlation_id, "
                "received_at, processed_by) "
                "SELECT gen_random_uuid(), 'purchase', 'user-' || (i % 1000), t, "
                "jsonb_build_object('amount', 2345.6789123456789, 'i', i, "
                "'note', repeat('x', 100)), '{\"tier\": \"gold\"}', 'cid-' || i, "
                "t, 'test' FROM generate_series(1, :n) AS i, "
                "LATERAL (SELECT timestamptz '2026-02-01' + i * interval '1 s') "
                "AS at(t)"
            ),
            {"n": MANY},
        )


async def _bytes_per_row(engine: AsyncEngine) -> float:
    """Python memory per fetched row (the export's own query): what holding
    every row of an export would cost at the least."""
    options = ExportOptions.model_validate(
        {"start": "2026-02-01", "end": "2026-02-02", "format": "jsonl"}
    )
    async with engine.connect() as conn:
        tracemalloc.start()
        try:
            result = await conn.execute(query(options).limit(5000))
            rows = result.all()
            held, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(rows) == 5000
    return held / len(rows)


# Starts a command and prints its peak resident memory. A child's ru_maxrss
# starts at the resident size of the process it was forked from (Linux keeps the
# high-water mark across exec), so the command is forked from this small
# interpreter rather than from pytest.
MEASURE = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def _peak_rss_kib(settings: Settings, args: list[str], log: Path) -> int:
    """Peak resident memory of ``python -m eventflow export ARGS``, in KiB."""
    command = [sys.executable, "-m", "eventflow", "export", *args]
    with log.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, *command],
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=120,
        )
    assert done.returncode == 0, log.read_text()
    return int(done.stdout.split()[-1])  # KiB on Linux


@pytest.mark.parametrize("fmt", FORMATS)
async def test_memory_stays_bounded(
    fmt: str, engine: AsyncEngine, settings: Settings, tmp_path: Path
) -> None:
    await _insert_many(engine)
    out = tmp_path / f"many.{fmt}"
    # The same command over an empty range: interpreter, imports, connection.
    base = _peak_rss_kib(
        settings,
        ["--from", "2026-03-01", "--to", "2026-03-02", "--format", fmt, "-o", str(out)],
        tmp_path / "base.log",
    )
    peak = _peak_rss_kib(
        settings,
        ["--from", "2026-02-01", "--to", "2026-02-02", "--format", fmt, "-o", str(out)],
        tmp_path / "export.log",
    )
    assert f"exported {MANY} rows" in (tmp_path / "export.log").read_text()
    growth = (peak - base) * 1024
    all_rows = await _bytes_per_row(engine) * MANY
    print(
        f"{fmt}: peak RSS {peak / 1024:.1f} MiB, {growth / 2**20:.1f} MiB over an "
        f"empty export; holding all {MANY} rows: at least {all_rows / 2**20:.1f} MiB"
    )
    # Chunks of 5,000 rows: a tenth of the rows, plus the writer's buffers.
    assert growth < all_rows / 2
