"""``eventflow export``: the stored events of a time range as JSON lines, CSV or
Parquet, straight from the database (``DATABASE_URL``).

Rows come from a server-side cursor ``chunk_rows`` at a time (5,000 by default),
and each chunk is written (a Parquet row group) before the next one is read, so
memory stays bounded however many rows the range holds. The export reads one
snapshot (a read-only REPEATABLE READ transaction): rows committed after it starts
are not in it. A file is written under a temporary name and renamed when complete,
so a failed or interrupted export leaves no truncated file behind.

``jsonb`` columns (``properties``, ``enrichment``) are read as PostgreSQL's own
text, so numbers keep every digit (``2345.6789123456789``): nested JSON in JSON
lines, JSON text in CSV and Parquet.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

import orjson
import uvloop
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    Select,
    String,
    Table,
    Text,
    cast,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow import jsoncodec
from eventflow.config import Settings
from eventflow.store.tables import (
    engine_for,
    failed_events,
    processed_events,
    raw_events,
)

TableName = Literal["processed", "raw", "failed"]
Format = Literal["jsonl", "csv", "parquet"]

TABLES: dict[TableName, Table] = {
    "processed": processed_events,
    "raw": raw_events,
    "failed": failed_events,
}

# The time a range selects on, for each table: when EventFlow accepted the event
# (the column the tables are partitioned by, so a range reads only its days). For
# failed_events it is the failed event's acceptance time, or the failure time of
# an entry that held no event (migration 0006). Chosen here and nowhere else.
TIME_COLUMNS: dict[TableName, str] = {
    "processed": "received_at",
    "raw": "received_at",
    "failed": "received_at",
}

CHUNK_ROWS = 5000

# "other": a column type added later that no format knows yet, written as text.
Kind = Literal[
    "json", "time", "uuid", "int32", "int64", "float64", "bool", "text", "other"
]


@dataclass(frozen=True)
class ExportColumn:
    """One exported column: its name and how each format writes it."""

    name: str
    kind: Kind


def _kind(column: Any) -> Kind:
    kind = column.type
    if isinstance(kind, JSONB):
        return "json"
    if isinstance(kind, DateTime):
        return "time"
    if isinstance(kind, UUID):
        return "uuid"
    if isinstance(kind, BigInteger):
        return "int64"
    if isinstance(kind, Integer):
        return "int32"
    if isinstance(kind, Float):
        return "float64"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, String):  # Text too
        return "text"
    return "other"


def fields(table: TableName) -> list[ExportColumn]:
    """Every column of the table, in its order."""
    return [ExportColumn(str(c.name), _kind(c)) for c in TABLES[table].columns]


def parse_time(value: object) -> object:
    """An ISO 8601 date or date and time; without an offset it is UTC."""
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date or time: {value!r} "
            "(e.g. 2026-11-26 or 2026-11-26T10:15:00+01:00)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class ExportOptions(BaseModel):
    """What to export; ``start`` inclusive, ``end`` exclusive."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    start: datetime
    end: datetime
    event_type: str | None = Field(default=None, min_length=1)
    table: TableName = "processed"
    format: Format
    output: str = Field(default="-", min_length=1, description="a file, or - (stdout)")
    chunk_rows: int = Field(default=CHUNK_ROWS, ge=1, le=1_000_000)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: object) -> object:
        return parse_time(value)

    @model_validator(mode="after")
    def _range(self) -> ExportOptions:
        if self.start >= self.end:
            raise ValueError(
                f"--from ({self.start.isoformat()}) must be before "
                f"--to ({self.end.isoformat()})"
            )
        return self


# What each field of ExportOptions is called on the command line.
FLAGS = {
    "start": "--from",
    "end": "--to",
    "event_type": "--type",
    "table": "--table",
    "format": "--format",
    "output": "--output",
    "chunk_rows": "--chunk-rows",
}


def query(options: ExportOptions) -> Select[Any]:
    """The rows of the range, oldest first (ties in key order)."""
    table = TABLES[options.table]
    when = table.c[TIME_COLUMNS[options.table]]
    columns = [
        cast(table.c[f.name], Text).label(f.name)
        if f.kind == "json"
        else table.c[f.name]
        for f in fields(options.table)
    ]
    stmt = select(*columns).where(when >= options.start, when < options.end)
    if options.event_type is not None:
        stmt = stmt.where(table.c.event_type == options.event_type)
    keys = [c for c in table.primary_key.columns if c is not when]
    return stmt.order_by(when, *keys)


def count_query(options: ExportOptions) -> Select[tuple[int]]:
    return select(func.count()).select_from(query(options).order_by(None).subquery())


class Writer:
    """Writes chunks of rows (in ``fields`` order) to a binary sink."""

    def __init__(self, sink: IO[bytes], columns: list[ExportColumn]) -> None:
        self.sink = sink
        self.columns = columns

    def write(self, rows: Sequence[Row[Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sink.flush()


class JsonLinesWriter(Writer):
    """One object per line; jsonb columns nested as PostgreSQL wrote them."""

    def write(self, rows: Sequence[Row[Any]]) -> None:
        json_columns = [f.name for f in self.columns if f.kind == "json"]
        names = [f.name for f in self.columns]
        # One buffer per chunk: orjson's results each hold a 4 kB allocation, so
        # a list of 5,000 of them would weigh 20 MB.
        buffer = bytearray()
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for name in json_columns:
                if record[name] is not None:
                    record[name] = orjson.Fragment(record[name])
            # datetimes as RFC 3339 with their offset, asyncpg UUIDs as strings
            buffer += jsoncodec.dumps(record)
            buffer += b"\n"
        self.sink.write(buffer)


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value  # csv writes str() of the rest, and None as an empty field


class CsvWriter(Writer):
    """A header line, then one record per row (RFC 4180); jsonb as JSON text."""

    def __init__(self, sink: IO[bytes], columns: list[ExportColumn]) -> None:
        super().__init__(sink, columns)
        self.text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
        self.csv = csv.writer(self.text)
        self.csv.writerow([f.name for f in columns])

    def write(self, rows: Sequence[Row[Any]]) -> None:
        self.csv.writerows([_csv_value(v) for v in row] for row in rows)

    def close(self) -> None:
        self.text.flush()
        self.text.detach()  # leaves the sink open (it may be stdout)
        super().close()


def _pyarrow() -> tuple[Any, Any]:
    """pyarrow and pyarrow.parquet (the ``export`` extra); ImportError without."""
    # Unless told otherwise, Arrow allocates with malloc: with the wheels' default
    # (mimalloc) an export's peak memory rose twice as far (40 MiB instead of 19,
    # docs/tools.md). Arrow reads this when pyarrow is first imported.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    import pyarrow
    import pyarrow.parquet

    return pyarrow, pyarrow.parquet


class ParquetWriter(Writer):
    """One row group per chunk; jsonb and UUIDs as strings, times in UTC."""

    def __init__(self, sink: IO[bytes], columns: list[ExportColumn]) -> None:
        super().__init__(sink, columns)
        pa, pq = _pyarrow()
        types = {
            "json": pa.string(),
            "text": pa.string(),
            "uuid": pa.string(),
            "other": pa.string(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
            "time": pa.timestamp("us", tz="UTC"),
            "int32": pa.int32(),
            "int64": pa.int64(),
        }
        self.pa = pa
        self.schema = pa.schema([pa.field(f.name, types[f.kind]) for f in columns])
        self.writer = pq.ParquetWriter(sink, self.schema)

    def write(self, rows: Sequence[Row[Any]]) -> None:
        arrays = []
        for i, f in enumerate(self.columns):
            values = [row[i] for row in rows]
            if f.kind in ("uuid", "other"):
                values = [None if v is None else str(v) for v in values]
            arrays.append(self.pa.array(values, type=self.schema.field(i).type))
        self.writer.write_batch(
            self.pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        )

    def close(self) -> None:
        self.writer.close()
        super().close()


WRITERS: dict[Format, type[Writer]] = {
    "jsonl": JsonLinesWriter,
    "csv": CsvWriter,
    "parquet": ParquetWriter,
}


async def export(
    engine: AsyncEngine,
    options: ExportOptions,
    sink: IO[bytes],
    progress: Progress | None = None,
) -> int:
    """Write the rows ``options`` selects to ``sink``; returns how many.

    With ``progress``, the rows are counted first (in the same snapshot) and a
    task of that total advances chunk by chunk.
    """
    rows = 0
    async with engine.connect() as conn:
        snapshot = await conn.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with snapshot.begin():
            task = None
            if progress is not None:
                total = await snapshot.scalar(count_query(options))
                task = progress.add_task("exporting", total=total or 0)
            writer = WRITERS[options.format](sink, fields(options.table))
            result = await snapshot.stream(
                query(options).execution_options(yield_per=options.chunk_rows)
            )
            # Not result.partitions(): it keeps a chunk while reading the next.
            while chunk := await result.fetchmany(options.chunk_rows):
                writer.write(chunk)
                rows += len(chunk)
                if progress is not None and task is not None:
                    progress.advance(task, len(chunk))
                del chunk  # before the next one is read
            writer.close()
    return rows


@contextlib.contextmanager
def open_output(output: str) -> Iterator[IO[bytes]]:
    """stdout for ``-``; otherwise a temporary file next to ``output``, renamed to
    it once everything is written (and removed if anything fails)."""
    if output == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(output)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as sink:
            yield sink
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write the stored events of a time range as JSON lines, CSV or Parquet",
        description="Stream stored events whose acceptance time (received_at) is "
        "in [--from, --to) to a file or stdout, without holding them in memory. "
        "Times are ISO 8601 dates or date-times; without an offset they are UTC.",
    )
    p.add_argument("--from", dest="start", required=True, metavar="TIME")
    p.add_argument("--to", dest="end", required=True, metavar="TIME")
    p.add_argument("--type", dest="event_type", help="only this event type")
    p.add_argument(
        "--table",
        default="processed",
        choices=list(TABLES),
        help="processed_events (default), raw_events or failed_events",
    )
    p.add_argument("--format", required=True, choices=list(WRITERS))
    p.add_argument(
        "--output", "-o", default="-", metavar="FILE", help="default: - (stdout)"
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=CHUNK_ROWS,
        metavar="N",
        help=f"rows read and written at a time, a Parquet row group (default "
        f"{CHUNK_ROWS})",
    )


def _usage_error(message: str) -> int:
    print(f"eventflow export: {message}", file=sys.stderr)
    return 2


def _options(args: argparse.Namespace) -> ExportOptions | str:
    try:
        return ExportOptions.model_validate(vars(args))
    except ValidationError as exc:
        messages = []
        for error in exc.errors(include_url=False):
            cause = error.get("ctx", {}).get("error")
            text = str(cause) if cause is not None else error["msg"]
            flag = FLAGS.get(str(error["loc"][0])) if error["loc"] else None
            messages.append(f"{flag}: {text}" if flag else text)
        return "; ".join(messages)


def _summary(options: ExportOptions, rows: int, elapsed: float) -> str:
    table = TABLES[options.table].name
    what = f" of type {options.event_type}" if options.event_type else ""
    where = "stdout" if options.output == "-" else options.output
    return (
        f"exported {rows} rows of {table}{what} with "
        f"{TIME_COLUMNS[options.table]} in [{options.start.isoformat()}, "
        f"{options.end.isoformat()}) to {where} ({options.format}) "
        f"in {elapsed:.2f} s"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``eventflow export``: 0, 1 (it failed) or 2 (bad usage)."""
    options = _options(args)
    if isinstance(options, str):
        return _usage_error(options)
    if options.format == "parquet":
        try:
            _pyarrow()
        except ImportError:
            return _usage_error(
                "--format parquet needs pyarrow: pip install 'eventflow[export]'"
            )
        if options.output == "-" and sys.stdout.isatty():
            return _usage_error("Parquet is binary: give --output FILE or redirect")
    if options.output != "-":
        target = Path(options.output)
        if target.is_dir():
            return _usage_error(f"--output: {target} is a directory")
        if not target.resolve().parent.is_dir():
            return _usage_error(f"--output: no such directory: {target.parent}")
    settings = Settings()
    if not settings.database_dsn:
        return _usage_error("DATABASE_URL is not set")
    err = Console(stderr=True)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    engine = engine_for(settings, settings.database_dsn, pool_size=1)

    async def main() -> int:
        try:
            with open_output(options.output) as sink:
                if not err.is_terminal:
                    return await export(engine, options, sink)
                with progress:
                    return await export(engine, options, sink, progress)
        finally:
            await engine.dispose()

    started = time.monotonic()
    try:
        rows = uvloop.run(main())
    except KeyboardInterrupt:
        print("eventflow export: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except TimeoutError:
        print(
            "eventflow export: the database did not answer in time "
            "(EVENTFLOW_DB_CONNECT_TIMEOUT_S / EVENTFLOW_DB_COMMAND_TIMEOUT_S: "
            f"{settings.db_connect_timeout_s:g} / {settings.db_command_timeout_s:g} s)",
            file=sys.stderr,
        )
        return 1
    except (OSError, SQLAlchemyError) as exc:
        # A database error's own message, without the statement around it.
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
        print(f"eventflow export: {cause or type(cause).__name__}", file=sys.stderr)
        return 1
    print(_summary(options, rows, time.monotonic() - started), file=sys.stderr)
    return 0
