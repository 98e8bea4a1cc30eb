from __future__ import annotations

from pathlib import Path

import pytest

from eventflow.config import Settings


def test_twelve_factor_names_and_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/x")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    monkeypatch.setenv("EVENTFLOW_STREAM_NAME", "s1")
    s = Settings()
    assert s.database_dsn == "postgresql+asyncpg://u:p@db:5432/x"
    assert s.require_urls()[1] == "redis://r:6379/0"
    # Secrets never show in a repr (and so in a log line or a traceback).
    assert "u:p@db" not in repr(s) and "r:6379" not in repr(s)
    assert s.stream_name == "s1"


def test_missing_urls_error_names_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(RuntimeError, match="DATABASE_URL and REDIS_URL"):
        Settings().require_urls()


def test_consumer_name_is_configurable_or_unique() -> None:
    assert Settings(consumer_name="w-7").resolved_consumer_name() == "w-7"
    s = Settings()
    assert s.resolved_consumer_name() != s.resolved_consumer_name()


def test_every_setting_is_read_and_documented() -> None:
    root = Path(__file__).parents[2]
    code = "\n".join(p.read_text() for p in (root / "src" / "eventflow").rglob("*.py"))
    readme = (root / "README.md").read_text()
    for name in Settings.model_fields:
        assert f".{name}" in code, f"setting {name} is never read"
        env = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(
            name, f"EVENTFLOW_{name.upper()}"
        )
        assert env in readme, f"{env} is not documented in the README"
