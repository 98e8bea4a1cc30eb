"""docker-compose.yml: Compose-spec validity, wiring and environment variables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from eventflow.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
APP_SERVICES = ("migrate", "api", "worker")


def tool(name: str) -> str:
    """A dev tool from the running virtual environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found; install the dev dependencies (.[dev])")
    return found


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, whether written as a mapping or as a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def settings_env_names() -> set[str]:
    """Every environment variable name Settings reads (upper case)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def test_compose_matches_compose_spec() -> None:
    result = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_settings_env_names_include_the_known_ones() -> None:
    names = settings_env_names()
    assert {"DATABASE_URL", "REDIS_URL", "EVENTFLOW_STREAM_NAME"} <= names
    assert "EVENTFLOW_WORKER_METRICS_PORT" in names


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_only_set_variables_settings_reads(service: str) -> None:
    env = environment(load_compose()["services"][service])
    assert env, f"{service} sets no environment"
    unknown = sorted(set(map(str.upper, env)) - settings_env_names())
    assert not unknown, f"{service} sets variables Settings ignores: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_get_both_connection_urls(service: str) -> None:
    env = environment(load_compose()["services"][service])
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379")


def test_startup_order() -> None:
    services = load_compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy"
    )
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
    for name in ("postgres", "redis"):
        assert "test" in services[name]["healthcheck"]


def test_worker_can_be_scaled() -> None:
    worker = load_compose()["services"]["worker"]
    assert worker["command"] == ["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_data_services() -> None:
    services = load_compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert environment(postgres)["POSTGRES_DB"] == "eventflow"
    assert (
        "./scripts/init_db.sql:/docker-entrypoint-initdb.d/init.sql:ro"
        in postgres["volumes"]
    )
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"]
    assert "8000:8000" in services["api"]["ports"]
    grafana = environment(services["grafana"])
    assert grafana["GF_SECURITY_ADMIN_USER"] == "admin"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin"


def test_mounted_monitoring_paths_exist() -> None:
    services = load_compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_the_worker_metrics_port() -> None:
    worker_env = environment(load_compose()["services"]["worker"])
    port = int(
        worker_env.get(
            "EVENTFLOW_WORKER_METRICS_PORT",
            Settings.model_fields["worker_metrics_port"].default,
        )
    )
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_sd = jobs["eventflow-worker"]["dns_sd_configs"][0]
    assert worker_sd["names"] == ["worker"]
    assert worker_sd["type"] == "A"
    assert worker_sd["port"] == port
    assert jobs["eventflow-api"]["static_configs"][0]["targets"] == ["api:9101"]
    assert config["rule_files"] == ["alerts.yml"]
