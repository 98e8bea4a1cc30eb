"""Prometheus configuration, alert rules and the Grafana dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventflow.config import Settings
from eventflow.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "eventflow.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "eventflow.yml"

METRIC_NAME = re.compile(r"\beventflow_[a-z_]+")
# Every API process exports the same per-partition gauges: queries must take
# max by (partition) (or by partition and owner) over the instances.
PARTITION_METRIC = re.compile(r"\beventflow_partition_[a-z_]+")
PARTITION_AGGREGATE = re.compile(
    r"max by \(partition(?:, owner)?\) \(eventflow_partition_[a-z_]+\)"
)
DURATION = re.compile(r"(?P<value>\d+)(?P<unit>[smh])")
# Grafana's built-in variables, replaced so promtool can parse panel queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


def exported_series_names() -> set[str]:
    """Names of the series that Metrics() exports, as PromQL sees them."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def row_panels(title: str) -> list[dict[str, Any]]:
    """The panels laid out below the row ``title``, up to the next row."""
    panels = sorted(
        dashboard_panels(), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])
    )
    start = next(
        i
        for i, panel in enumerate(panels)
        if panel["type"] == "row" and panel["title"] == title
    )
    below: list[dict[str, Any]] = []
    for panel in panels[start + 1 :]:
        if panel["type"] == "row":
            break
        below.append(panel)
    return below


def seconds(duration: str) -> int:
    match = DURATION.fullmatch(duration)
    assert match, duration
    return int(match["value"]) * {"s": 1, "m": 60, "h": 3600}[match["unit"]]


def unknown_metrics(expressions: list[str]) -> set[str]:
    referenced = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    return referenced - exported_series_names()


# Exported metric names.


def test_exported_names_are_what_promql_sees() -> None:
    names = exported_series_names()
    assert "eventflow_events_received_total" in names
    assert "eventflow_processing_duration_seconds_bucket" in names
    assert "eventflow_stream_lag_entries" in names


def test_alerts_use_only_exported_metrics() -> None:
    expressions = [rule["expr"] for rule in alert_rules()]
    assert expressions
    assert not unknown_metrics(expressions)


def test_dashboard_uses_only_exported_metrics() -> None:
    expressions = [expr for _, expr in dashboard_queries()]
    assert expressions
    assert not unknown_metrics(expressions)


# Alerts.


def test_every_alert_has_severity_and_description() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_required_alert_conditions_are_covered() -> None:
    expressions = " ".join(rule["expr"] for rule in alert_rules())
    for needle in (
        "eventflow_stream_lag_entries",
        "eventflow_dead_letters",
        "eventflow_events_processed_total",
        "eventflow_events_received_total",
        "eventflow_dependency_up == 0",
        "up{",
        "eventflow_stream_oldest_pending_age_seconds",
        "max by (partition) (eventflow_partition_owned) == 0",
        "eventflow_partition_lag_entries",
    ):
        assert needle in expressions, needle


def test_partition_without_owner_waits_out_a_takeover() -> None:
    """A lease expires after lease_ttl_ms and is taken over within two lease
    periods; the alert must not fire during that."""
    (rule,) = [
        r for r in alert_rules() if r["alert"] == "EventFlowPartitionWithoutOwner"
    ]
    lease_ttl_s = Settings.model_fields["lease_ttl_ms"].default / 1000
    assert seconds(rule["for"]) >= 3 * lease_ttl_s
    assert rule["labels"]["severity"] == "critical"
    assert "$labels.partition" in rule["annotations"]["summary"]


def test_partition_gauges_are_aggregated_over_instances() -> None:
    expressions = [rule["expr"] for rule in alert_rules()]
    expressions += [expr for _, expr in dashboard_queries()]
    for expr in expressions:
        used = PARTITION_METRIC.findall(expr)
        assert len(PARTITION_AGGREGATE.findall(expr)) == len(used), expr


def test_every_alert_has_firing_and_silent_unit_tests() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a not-firing test"


# Grafana.


def test_dashboard_structure() -> None:
    data = dashboard()
    assert data["uid"] == "eventflow"
    panels = dashboard_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasource_uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource_uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource_uid, panel["title"]


def test_dashboard_shows_the_required_signals() -> None:
    queries = " ".join(expr for _, expr in dashboard_queries())
    for needle in (
        "rate(eventflow_events_received_total",
        "rate(eventflow_events_processed_total",
        "eventflow_stream_lag_entries",
        "eventflow_stream_pending_entries",
        "eventflow_stream_oldest_pending_age_seconds",
        "eventflow_events_failed_total",
        "eventflow_dead_letters",
        "eventflow_retries_total",
        "eventflow_reclaimed_entries_total",
        "eventflow_http_requests_total",
        "eventflow_dependency_up",
        "eventflow_partition_lag_entries",
        "eventflow_partition_pending_entries",
        "eventflow_partition_length_entries",
        "eventflow_partition_owned",
        "eventflow_partition_owner_info",
        "eventflow_worker_partitions_owned",
    ):
        assert needle in queries, needle
    for histogram in (
        "eventflow_processing_duration_seconds",
        "eventflow_end_to_end_latency_seconds",
    ):
        for quantile in ("0.5", "0.95", "0.99"):
            assert (
                f"histogram_quantile({quantile}, sum by (le) "
                f"(rate({histogram}_bucket[" in queries
            ), (histogram, quantile)


def test_dashboard_partitions_row() -> None:
    panels = {panel["title"]: panel for panel in row_panels("Partitions")}
    per_partition = {
        "Lag per partition": "eventflow_partition_lag_entries",
        "Pending per partition": "eventflow_partition_pending_entries",
        "Length per partition": "eventflow_partition_length_entries",
    }
    assert set(per_partition) | {
        "Owner per partition",
        "Partitions without owner",
        "Partitions per worker",
    } == set(panels)
    for title, metric in per_partition.items():
        panel = panels[title]
        assert panel["type"] == "timeseries", title
        (target,) = panel["targets"]
        assert target["expr"] == f"max by (partition) ({metric})", title
        assert target["legendFormat"] == "{{partition}}", title

    owners = panels["Owner per partition"]
    assert owners["type"] in {"table", "state-timeline"}
    (target,) = owners["targets"]
    owner_info = "max by (partition, owner) (eventflow_partition_owner_info)"
    assert owner_info in target["expr"]
    # Partitions without an owner are listed too, not just left out.
    assert "max by (partition) (eventflow_partition_owned) == 0" in target["expr"]

    without_owner = panels["Partitions without owner"]
    assert without_owner["type"] == "stat"
    (target,) = without_owner["targets"]
    assert target["expr"].startswith(
        "count(max by (partition) (eventflow_partition_owned) == 0)"
    )
    # 0, not "No data", when every partition has an owner.
    assert target["expr"].endswith(" or vector(0)")

    (target,) = panels["Partitions per worker"]["targets"]
    assert "eventflow_worker_partitions_owned" in target["expr"]


def test_grafana_provisioning() -> None:
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


# promtool.


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = (
            "promtool not found on PATH; run deploy/install-ci-tools.sh "
            "(installs Debian's prometheus package)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_promtool(*args: str) -> None:
    result = subprocess.run(
        [promtool(), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    run_promtool("check", "config", "deploy/prometheus/prometheus.yml")


def test_promtool_check_rules() -> None:
    run_promtool("check", "rules", "deploy/prometheus/alerts.yml")


def test_promtool_test_rules() -> None:
    run_promtool("test", "rules", "deploy/prometheus/alerts_test.yml")


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each panel query, as a recording rule, passes `promtool check rules`."""
    rules = []
    for index, (_, expr) in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))
