"""scripts/render_dashboard.py: the queries it takes from the real dashboard.

Pure functions only: no Prometheus, no network, no matplotlib.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "render_dashboard.py"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventflow.json"


@pytest.fixture(scope="module")
def rd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_dashboard", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def variables(rd: ModuleType, dashboard: dict[str, Any]) -> dict[str, str]:
    return {
        **rd.template_variables(dashboard),
        **rd.builtin_variables("1m", step_s=5, range_s=600),
    }


def test_every_timeseries_panel_yields_substituted_expressions(
    rd: ModuleType, dashboard: dict[str, Any]
) -> None:
    panels = rd.extract_panels(dashboard, variables(rd, dashboard))
    raw = [
        p
        for top in dashboard["panels"]
        for p in [top, *top.get("panels", [])]
        if p["type"] == "timeseries"
    ]
    assert [p.title for p in panels] == [p["title"] for p in raw]
    for panel in panels:
        assert panel.queries, panel.title
        for query in panel.queries:
            assert query.expr.strip(), panel.title
            assert "$" not in query.expr, (panel.title, query.expr)
            assert "[[" not in query.expr, (panel.title, query.expr)
    rates = [q.expr for p in panels for q in p.queries if "rate(" in q.expr]
    assert rates
    assert all("[1m]" in expr for expr in rates)


def test_default_panels_exist_and_keep_the_dashboard_order(
    rd: ModuleType, dashboard: dict[str, Any]
) -> None:
    panels = rd.extract_panels(dashboard, variables(rd, dashboard))
    chosen = rd.select_panels(panels, rd.DEFAULT_PANELS)
    assert {p.title for p in chosen} == set(rd.DEFAULT_PANELS)
    order = [p.title for p in panels]
    assert [p.title for p in chosen] == [t for t in order if t in rd.DEFAULT_PANELS]
    with pytest.raises(SystemExit):
        rd.select_panels(panels, ["No such panel"])


def test_partition_panels_query_the_partition_metrics(
    rd: ModuleType, dashboard: dict[str, Any]
) -> None:
    panels = {
        p.title: p for p in rd.extract_panels(dashboard, variables(rd, dashboard))
    }
    for title, metric in (
        ("Lag per partition", "eventflow_partition_lag_entries"),
        ("Pending per partition", "eventflow_partition_pending_entries"),
        ("Length per partition", "eventflow_partition_length_entries"),
    ):
        (query,) = panels[title].queries
        assert query.expr == f"max by (partition) ({metric})", title
        assert rd.legend_text(query.legend, {"partition": "3"}, query.expr) == "3"
    (query,) = panels["Partitions per worker"].queries
    assert "eventflow_worker_partitions_owned" in query.expr
    # Only time series are drawn: the owner table and the stat are not.
    assert "Owner per partition" not in panels
    assert "Partitions without owner" not in panels
    order = list(panels)
    assert order.index("Pending entries") < order.index("Lag per partition")
    assert order.index("Partitions per worker") < order.index("End-to-end latency")


def test_variable_syntaxes(rd: ModuleType) -> None:
    dashboard = {
        "templating": {
            "list": [
                {"name": "job", "current": {"value": "eventflow-api"}},
                {"name": "inst", "current": {"value": ["a:1", "b:2"]}},
                {"name": "all", "current": {"value": ["$__all"]}},
            ]
        }
    }
    values = {
        **rd.template_variables(dashboard),
        **rd.builtin_variables("1m", step_s=30, range_s=3600),
    }
    expr = (
        'rate(x{job="$job", instance=~"${inst:regex}", z=~"[[all]]", u=~"$unknown"}'
        "[$__rate_interval]) * $__range_s / $__interval"
    )
    assert rd.substitute(expr, values) == (
        'rate(x{job="eventflow-api", instance=~"(a:1|b:2)", z=~".*", u=~".*"}'
        "[1m]) * 3600 / 30s"
    )


def test_legend(rd: ModuleType) -> None:
    labels = {"status": "202", "route": "/events"}
    assert rd.legend_text("{{ status }} on {{route}}", labels, "e") == "202 on /events"
    assert rd.legend_text("", labels, "e") == '{route="/events", status="202"}'
    assert rd.legend_text("", {}, "sum(x)") == "sum(x)"


def test_durations_and_header_wrapping(rd: ModuleType) -> None:
    assert [rd.format_duration(s) for s in (5, 90, 300, 3600)] == [
        "5s",
        "90s",
        "5m",
        "1h",
    ]
    assert rd.human_duration(500) == "8 min 20 s"
    wrapped = rd.wrap_items("Markers:", ["1 aaaa", "2 bbbb", "3 cccc"], width=22)
    assert wrapped.split("\n") == ["Markers: 1 aaaa", "2 bbbb   3 cccc"]
