"""Apply Alembic migrations, and render them as plain SQL for container start-up."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str, output: io.StringIO | None = None) -> Config:
    cfg = Config(output_buffer=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (blocking)."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Same as ``upgrade``, from inside a running event loop."""
    await asyncio.to_thread(upgrade, url, revision)


def render_sql() -> str:
    """The whole schema as SQL (Alembic offline mode); this is scripts/init_db.sql."""
    buffer = io.StringIO()
    cfg = alembic_config("postgresql+asyncpg://eventflow@localhost/eventflow", buffer)
    command.upgrade(cfg, "head", sql=True)
    header = (
        "-- EventFlow schema, generated from the Alembic migrations by\n"
        "-- `eventflow migrate --sql`. Do not edit: change a migration instead.\n"
    )
    return header + buffer.getvalue()
