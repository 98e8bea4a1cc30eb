#!/usr/bin/env python3
"""Draw the Grafana dashboard's time series panels from a live Prometheus as a PNG.

Grafana is not needed: the panels' queries are read from the dashboard JSON, their
Grafana variables are replaced, each query is run through Prometheus's HTTP API
(``/api/v1/query_range``) and the results are drawn with matplotlib.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --minutes 10 --out docs/dashboard.png

Needs matplotlib (the ``docs`` extra) besides EventFlow's own dependencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import sys
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventflow.json"
DEFAULT_OUT = ROOT / "docs" / "dashboard.png"

# The panels drawn by default, by title; they are drawn in the dashboard's order.
DEFAULT_PANELS = (
    "Throughput in / out",
    "Consumer lag",
    "Pending entries",
    "Oldest pending age",
    "Processing latency (per batch)",
    "End-to-end latency",
    "HTTP latency p95 by route",
    "Failures by event type and reason",
    "Dead letters",
    "Retries by operation",
    "Reclaimed and republished",
    "HTTP requests by status",
)

# Grafana variable references: ${name}, ${name:format}, [[name]] and $name.
VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]"
    r"|\$(?P<plain>\w+)"
)
# What an unknown or "All" variable becomes: it is nearly always a label matcher.
MATCH_ANY = ".*"
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")

# Grafana unit id -> axis label. Time units are handled apart (seconds may become ms).
UNIT_LABELS = {
    "ops": "per second",
    "reqps": "requests / s",
    "short": "count",
    "none": "value",
    "percent": "%",
    "percentunit": "ratio",
    "bytes": "bytes",
}


@dataclass(frozen=True)
class Query:
    """One target of a panel, with its variables already replaced."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]


@dataclass(frozen=True)
class Marker:
    """A moment worth pointing at (like a Grafana annotation)."""

    at: datetime
    text: str


@dataclass
class Series:
    label: str
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


# --- Dashboard -> panels and expressions (pure) ---------------------------------------


def format_duration(seconds: float) -> str:
    """A PromQL duration: 90 -> '90s', 300 -> '5m', 3600 -> '1h'."""
    whole = max(1, round(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def human_duration(seconds: float) -> str:
    """For people: 500 -> '8 min 20 s'."""
    minutes, rest = divmod(round(seconds), 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def builtin_variables(
    rate_interval: str, step_s: float, range_s: float
) -> dict[str, str]:
    """Grafana's global variables that can appear in a query."""
    return {
        "__rate_interval": rate_interval,
        "__interval": format_duration(step_s),
        "__interval_ms": str(round(step_s * 1000)),
        "__range": format_duration(range_s),
        "__range_s": str(round(range_s)),
        "__range_ms": str(round(range_s * 1000)),
    }


def template_variables(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """The dashboard's own variables with their saved current values.

    Several values become a regex alternation and "All" matches anything, as
    Grafana does for ``=~`` matchers.
    """
    values: dict[str, str] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if not name:
            continue
        current = variable.get("current", {}).get("value", variable.get("query", ""))
        chosen = current if isinstance(current, list) else [current]
        chosen = [str(v) for v in chosen if v is not None and str(v) != ""]
        if not chosen or "$__all" in chosen:
            values[name] = variable.get("allValue") or MATCH_ANY
        elif len(chosen) == 1:
            values[name] = chosen[0]
        else:
            values[name] = "(" + "|".join(chosen) + ")"
    return values


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace every Grafana variable in ``expr``; unknown ones match anything."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("plain")
        return variables.get(name, MATCH_ANY)

    return VARIABLE.sub(replace, expr)


def _flatten(panels: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Panels in the order Grafana lays them out, rows' children included."""
    flat: list[Mapping[str, Any]] = []
    for panel in panels:
        flat.append(panel)
        flat.extend(_flatten(panel.get("panels", [])))
    return sorted(
        flat,
        key=lambda p: (
            p.get("gridPos", {}).get("y", 0),
            p.get("gridPos", {}).get("x", 0),
        ),
    )


def extract_panels(
    dashboard: Mapping[str, Any], variables: Mapping[str, str]
) -> list[Panel]:
    """Every time series panel (title, unit, queries) in the dashboard's order."""
    panels: list[Panel] = []
    for raw in _flatten(dashboard.get("panels", [])):
        if raw.get("type") not in ("timeseries", "graph"):
            continue
        queries = tuple(
            Query(substitute(t["expr"], variables), t.get("legendFormat", "") or "")
            for t in raw.get("targets", [])
            if t.get("expr") and not t.get("hide", False)
        )
        unit = raw.get("fieldConfig", {}).get("defaults", {}).get("unit", "") or ""
        panels.append(Panel(raw.get("title", ""), unit, queries))
    return panels


def select_panels(panels: Sequence[Panel], titles: Sequence[str]) -> list[Panel]:
    """The panels named in ``titles``, kept in the dashboard's order."""
    known = {panel.title for panel in panels}
    missing = [title for title in titles if title not in known]
    if missing:
        raise SystemExit(f"no time series panel titled: {', '.join(missing)}")
    wanted = set(titles)
    return [panel for panel in panels if panel.title in wanted]


def legend_text(template: str, labels: Mapping[str, str], expr: str) -> str:
    """Grafana's legend: ``{{label}}`` replaced; the label set when no template."""
    if template:
        return LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), template)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    if shown:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"
    return expr


# --- Prometheus -----------------------------------------------------------------------


def query_range(
    client: httpx.Client, expr: str, start: float, end: float, step: float
) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
    """The matrix that ``/api/v1/query_range`` answers for ``expr``."""
    response = client.get(
        "/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
    )
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error')}")
    return [
        (item["metric"], [(float(t), float(v)) for t, v in item["values"]])
        for item in body["data"]["result"]
    ]


def fetch_panel(
    client: httpx.Client, panel: Panel, start: float, end: float, step: float
) -> tuple[list[Series], list[str]]:
    """The series of a panel, and a note per query that failed or returned nothing."""
    series: list[Series] = []
    notes: list[str] = []
    for query in panel.queries:
        try:
            matrix = query_range(client, query.expr, start, end, step)
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            notes.append(f"error {exc}: {query.expr}")
            continue
        if not matrix:
            notes.append(f"no series: {query.expr}")
        for labels, points in matrix:
            s = Series(legend_text(query.legend, labels, query.expr))
            for t, v in points:
                s.times.append(datetime.fromtimestamp(t, UTC))
                s.values.append(v if math.isfinite(v) else math.nan)
            series.append(s)
    return series, notes


# --- Drawing --------------------------------------------------------------------------


def compact(value: float, _pos: object = None) -> str:
    """Tick labels: 1500 -> '1.5k', 0.25 -> '0.25'."""
    magnitude = abs(value)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def axis_unit(unit: str, series: Sequence[Series]) -> tuple[str, float]:
    """Axis label and scale factor for a Grafana unit (seconds shown as ms when
    every value is under one second)."""
    if unit == "s":
        finite = [v for s in series for v in s.values if not math.isnan(v)]
        if finite and max(finite) < 1:
            return "milliseconds", 1000.0
        return "seconds", 1.0
    if unit == "ms":
        return "milliseconds", 1.0
    return UNIT_LABELS.get(unit, unit or "value"), 1.0


def date_numbers(times: Sequence[datetime]) -> list[float]:
    """Times as matplotlib date numbers."""
    from matplotlib.dates import date2num

    return [float(x) for x in date2num(list(times))]  # type: ignore[no-untyped-call]


def draw_panel(
    ax: Axes,
    panel: Panel,
    series: Sequence[Series],
    start: datetime,
    end: datetime,
    markers: Sequence[Marker] = (),
) -> None:
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.ticker import FuncFormatter

    ax.set_title(panel.title, fontsize=13, fontweight="bold", loc="left")
    ax.set_xlim(*date_numbers([start, end]))
    # Ticks on whole minutes (or seconds for short windows), labelled in UTC.
    untyped: Any = AutoDateLocator
    locator = untyped(tz=UTC, minticks=4, maxticks=9)
    pattern = "%H:%M:%S" if (end - start).total_seconds() < 300 else "%H:%M"
    clock = DateFormatter(pattern, tz=UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(clock)
    ax.grid(True, color="#dddddd", linewidth=0.8)
    ax.tick_params(labelsize=10)
    label, scale = axis_unit(panel.unit, series)
    ax.set_ylabel(label, fontsize=11)
    ax.yaxis.set_major_formatter(FuncFormatter(compact))
    for number, (x, _) in enumerate(
        zip(date_numbers([m.at for m in markers]), markers, strict=True), 1
    ):
        ax.axvline(x, color="#888888", linestyle="--", linewidth=0.9, zorder=1)
        ax.text(
            x,
            0.99,
            str(number),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=8,
            color="#444444",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "#888888"},
            zorder=5,
        )
    drawn = [s for s in series if any(not math.isnan(v) for v in s.values)]
    if not drawn:
        ax.set_ylim(0, 1)
        ax.text(
            0.5,
            0.5,
            "No data",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="#888888",
        )
        return
    for s in sorted(drawn, key=lambda s: s.label):
        ax.plot(
            date_numbers(s.times),
            [v * scale for v in s.values],
            linewidth=1.6,
            label=s.label,
        )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=9, loc="best", framealpha=0.85, ncol=2 if len(drawn) > 4 else 1)


def render(
    panels: Sequence[tuple[Panel, list[Series]]],
    out: Path,
    header: str,
    subheader: str,
    start: datetime,
    end: datetime,
    width_px: int,
    height_px: int,
    markers: Sequence[Marker] = (),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    columns = 3 if len(panels) > 8 else 2
    rows = max(1, math.ceil(len(panels) / columns))
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(width_px / dpi, height_px / dpi),
        dpi=dpi,
        layout="constrained",
        squeeze=False,
    )
    fig.suptitle(f"{header}\n{subheader}", fontsize=14, x=0.01, ha="left")
    cells = [ax for row in axes for ax in row]
    for ax, (panel, series) in zip(cells, panels, strict=False):
        draw_panel(ax, panel, series, start, end, markers)
    for ax in cells[len(panels) :]:
        ax.set_visible(False)
    # The time axis is labelled once per column, on its lowest panel.
    for column in range(columns):
        used = [i for i in range(column, len(panels), columns)]
        if used:
            cells[used[-1]].set_xlabel("time (UTC)", fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="white")
    plt.close(fig)


# --- Command line ---------------------------------------------------------------------


def wrap_items(prefix: str, items: Sequence[str], width: int) -> str:
    """``prefix`` and ``items`` on lines of at most ``width`` characters, never
    splitting an item."""
    lines = [prefix]
    for item in items:
        if len(lines[-1]) + 3 + len(item) > width and lines[-1] != prefix:
            lines.append(item)
        else:
            lines[-1] += ("   " if lines[-1] != prefix else " ") + item
    return "\n".join(lines)


def parse_time(value: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC when it has no offset)."""
    try:
        return float(value)
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def parse_marker(value: str) -> Marker:
    """``WHEN=TEXT``, WHEN as for ``--end``."""
    when, sep, text = value.partition("=")
    if not sep or not text:
        raise argparse.ArgumentTypeError("expected WHEN=TEXT")
    return Marker(datetime.fromtimestamp(parse_time(when), UTC), text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Draw the dashboard's time series panels from Prometheus as a PNG."
    )
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="base URL")
    p.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    p.add_argument("--minutes", type=float, default=10, help="window length")
    p.add_argument(
        "--end", type=parse_time, help="window end (unix seconds or ISO 8601; now)"
    )
    p.add_argument(
        "--step", type=float, help="seconds between points (default: window/240, >= 5)"
    )
    p.add_argument(
        "--rate-interval", default="1m", help="value of $__rate_interval (default 1m)"
    )
    p.add_argument(
        "--panel",
        action="append",
        dest="panels",
        metavar="TITLE",
        help="panel to draw (repeatable; default: the key panels)",
    )
    p.add_argument("--all-panels", action="store_true", help="every time series panel")
    p.add_argument("--note", default="", help="added to the header line")
    p.add_argument(
        "--annotate",
        action="append",
        type=parse_marker,
        default=[],
        metavar="WHEN=TEXT",
        help="numbered vertical marker, explained in the header (repeatable)",
    )
    p.add_argument("--width", type=int, default=1600, help="pixels")
    p.add_argument("--height", type=int, default=1800, help="pixels")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "error: matplotlib is needed: pip install -e '.[docs]' "
            "(or pip install matplotlib)",
            file=sys.stderr,
        )
        return 2
    end = args.end if args.end is not None else time.time()
    window = args.minutes * 60
    start = end - window
    step = args.step or max(5.0, round(window / 240))
    dashboard = json.loads(args.dashboard.read_text())
    variables = {
        **template_variables(dashboard),
        **builtin_variables(args.rate_interval, step, window),
    }
    panels = extract_panels(dashboard, variables)
    if not args.all_panels:
        panels = select_panels(panels, args.panels or DEFAULT_PANELS)
    results: list[tuple[Panel, list[Series]]] = []
    problems: list[str] = []
    with httpx.Client(base_url=args.prometheus, timeout=30) as client:
        try:
            client.get("/-/ready").raise_for_status()
        except httpx.HTTPError as exc:
            print(f"error: Prometheus at {args.prometheus}: {exc}", file=sys.stderr)
            return 1
        for panel in panels:
            series, notes = fetch_panel(client, panel, start, end, step)
            results.append((panel, series))
            problems.extend(f"{panel.title}: {note}" for note in notes)
    start_dt, end_dt = (
        datetime.fromtimestamp(start, UTC),
        datetime.fromtimestamp(end, UTC),
    )
    title = dashboard.get("title", "Dashboard")
    shown = "all time series panels" if args.all_panels else "key panels"
    header = f"{title} (Grafana dashboard, {shown})"
    subheader = (
        f"Prometheus {args.prometheus}, {start_dt:%Y-%m-%d %H:%M:%S} to "
        f"{end_dt:%H:%M:%S} UTC ({human_duration(window)}, a point every "
        f"{human_duration(step)}, $__rate_interval = {args.rate_interval})"
    )
    if args.note:
        subheader += "\n" + textwrap.fill(args.note, width=135)
    markers = sorted(
        (m for m in args.annotate if start_dt <= m.at <= end_dt), key=lambda m: m.at
    )
    if markers:
        subheader += "\n" + wrap_items(
            "Markers:",
            [f"{i} {m.text} ({m.at:%H:%M:%S})" for i, m in enumerate(markers, 1)],
            width=135,
        )
    render(
        results,
        args.out,
        header,
        subheader,
        start_dt,
        end_dt,
        args.width,
        args.height,
        markers,
    )
    print(f"wrote {args.out} ({len(results)} panels)")
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
