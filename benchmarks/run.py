"""EventFlow benchmarks: one command starts its own stack, measures, and records.

    .venv/bin/python benchmarks/run.py                 # everything, 3 repetitions
    .venv/bin/python benchmarks/run.py --quick         # small sizes, checks the harness
    .venv/bin/python benchmarks/run.py --only drain,latency --repeat 5
    .venv/bin/python benchmarks/run.py --render-docs   # results.json -> docs

Results go to benchmarks/results.json (medians of the repetitions with min and max,
every repetition's raw figures, the machine and versions) and a Markdown table is
printed. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from harness import REACHED_SHARE, REPO, Stack, wrk_path, wrk_version
from measure import git_info, load_average, machine_info
from scenarios import (
    CPU_COLUMNS,
    CPU_ROWS,
    GOALS,
    METRICS,
    SCENARIOS,
    Context,
    Goal,
    Sizes,
)

DEFAULT_OUT = REPO / "benchmarks" / "results.json"
DOCS = REPO / "docs" / "benchmarks.md"
START_MARK = "<!-- results:start -->"
END_MARK = "<!-- results:end -->"
DASH = "\u2013"  # en dash, for ranges
SCHEMA = 2  # 2: goals as shares of the ceilings, CPU per event, staged drain


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- statistics and rendering --------------------------------------------------------


def summarize(reps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Median, min and max of each metric over the repetitions."""
    keys: list[str] = []
    for rep in reps:
        keys += [k for k in rep["metrics"] if k not in keys]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [rep["metrics"].get(key) for rep in reps]
        present = [v for v in values if v is not None]
        out[key] = {
            "median": statistics.median(present) if present else None,
            "min": min(present) if present else None,
            "max": max(present) if present else None,
            "values": values,
        }
    return out


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for spec in METRICS:
        scenario = results["scenarios"].get(spec.scenario)
        if scenario is None:
            continue
        if scenario.get("error"):
            if not rows or rows[-1][0] != spec.scenario:
                rows.append([spec.scenario, "**failed**", "", "", "", "", "error"])
            continue
        stat = scenario["summary"].get(spec.key)
        if stat is None:
            continue
        median = stat["median"]
        spread = (
            f"{fmt(stat['min'])}{DASH}{fmt(stat['max'])}"
            if stat["min"] is not None and len(stat["values"]) > 1
            else ""
        )
        target, verdict = "", ""
        if spec.target is not None:
            target = spec.target.describe()
            judged = stat["max"] if spec.target.judge == "max" else median
            if judged is None:
                verdict = "n/a"
            else:
                verdict = "met" if spec.target.met(judged) else "**missed**"
        rows.append(
            [spec.scenario, spec.label, fmt(median), spread, spec.unit, target, verdict]
        )
    return rows


def _median(results: dict[str, Any], scenario: str, key: str) -> float | None:
    found = results["scenarios"].get(scenario)
    if not found or found.get("error"):
        return None
    stat = found["summary"].get(key)
    return stat["median"] if stat else None


def _values(results: dict[str, Any], scenario: str, key: str) -> list[Any]:
    found = results["scenarios"].get(scenario) or {}
    stat = (found.get("summary") or {}).get(key)
    return list(stat["values"]) if stat else []


def describe_goal(goal: Goal) -> str:
    sign = {">=": "≥", "<=": "≤", "<": "<", "==": "="}[goal.target.op]
    if goal.unit == "ratio":
        return f"{sign} {goal.target.value:.2f}"
    return f"{sign} {fmt(goal.target.value)} {goal.unit}"


def goal_figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal's figure from the scenarios' medians: a share of the ceiling
    measured in the same run, or a latency; with its verdict (``met``,
    ``missed``, ``invalid`` when the generator did not send the rate asked,
    ``n/a`` when a scenario did not run). Works on results of every schema."""
    out: list[dict[str, Any]] = []
    for goal in GOALS:
        figure = _median(results, goal.scenario, goal.key)
        value, measured = figure, ""
        if goal.ceiling is not None:
            ceiling = _median(results, *goal.ceiling)
            value = round(figure / ceiling, 3) if figure and ceiling else None
            if figure and ceiling:
                measured = f"{fmt(figure)} ÷ {fmt(ceiling)}"
        invalid = ""
        if goal.reached is not None and value is not None:
            reached = _values(results, goal.scenario, goal.reached)
            if not reached or not all(reached):
                prefix = goal.key.split(".")[0]
                sent = _values(results, goal.scenario, f"{prefix}.achieved_rate")
                due = _median(results, goal.scenario, f"{prefix}.target_rate")
                invalid = (
                    f"the load generator sent {', '.join(fmt(v) for v in sent)} "
                    f"of {fmt(due)} events/s (under {REACHED_SHARE:.0%})"
                    if reached
                    else "no record that the load generator reached its rate"
                )
            else:
                rate = _median(
                    results, goal.scenario, goal.key.split(".")[0] + ".achieved_rate"
                )
                measured = f"sent {fmt(rate)} events/s"
        if value is None:
            verdict = "n/a"
        elif invalid:
            verdict = "**invalid**"
            measured = invalid
        else:
            verdict = "met" if goal.target.met(value) else "**missed**"
        out.append(
            {
                "name": goal.name,
                "label": goal.label,
                "value": value,
                "unit": goal.unit,
                "goal": describe_goal(goal),
                "verdict": verdict,
                "measured": measured,
            }
        )
    return out


def cpu_figures(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """CPU µs per processed event (medians), by measurement and component."""
    out: dict[str, dict[str, float | None]] = {}
    for scenario, prefix, label in CPU_ROWS:
        row = {
            name: _median(results, scenario, f"{prefix}cpu.{name}")
            for name, _ in CPU_COLUMNS
        }
        if any(v is not None for v in row.values()):
            out[label] = row
    return out


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if unit == "ratio" else f"{fmt(value)} {unit}"


def render_goals(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Figure (1 API + 1 worker, defaults) | Measured | Goal | Result | From |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for g in goal_figures(results):
        label = g["label"]
        if g["name"] == "p99_half":
            rate = _median(results, "latency", "half.target_rate")
            if rate:
                label += f" ({fmt(rate)} events/s)"
        lines.append(
            f"| {label} | {_show(g['value'], g['unit'])} | {g['goal']} "
            f"| {g['verdict']} | {g['measured']} |"
        )
    return lines


def render_cpu(results: dict[str, Any]) -> list[str]:
    figures = cpu_figures(results)
    if not figures:
        return []
    lines = [
        "| CPU µs per processed event | "
        + " | ".join(h for _, h in CPU_COLUMNS)
        + " |",
        "| --- |" + " ---: |" * len(CPU_COLUMNS),
    ]
    for label, row in figures.items():
        cells = [
            fmt(row[name]) if row[name] is not None else DASH for name, _ in CPU_COLUMNS
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    m, sw = results["machine"], results["software"]
    gen = results["generator"]
    lines = []
    if results["quick"]:
        lines.append(
            "> **Quick run** (`--quick`): small sizes, 1 repetition, for checking "
            "the harness. These are not benchmark figures.\n"
        )
    lines += [
        "Shares of the ceilings measured in the same run, and end-to-end "
        "latency (medians of the repetitions):",
        "",
        *render_goals(results),
        "",
    ]
    cpu = render_cpu(results)
    if cpu:
        lines += [
            "CPU time per processed event, by component, from `/proc` "
            "(medians; the sum leaves the load generator out):",
            "",
            *cpu,
            "",
        ]
    commit = (results["git"]["commit"] or "unknown")[:12]
    dirty = " (with uncommitted changes)" if results["git"]["dirty"] else ""
    end = m.get("load_average_at_end")
    at_end = f", at end {' / '.join(map(str, end))}" if end else ""
    lines += [
        f"- Date: {results['date']}; command: `{results['command']}`",
        f"- Commit: `{commit}`{dirty}",
        f"- Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; "
        f"load average at start {' / '.join(map(str, m['load_average_at_start']))}"
        f"{at_end}",
        f"- Software: Python {sw['python']}, PostgreSQL {sw.get('postgresql', '?')}, "
        f"{sw.get('redis_server', '?')}",
        f"- Load generator: {gen['note']}",
        f"- Figures: median of {results['repeat']} repetition(s); "
        f"min{DASH}max shown when repeated",
        "",
        f"| Scenario | Measure | Median | Min{DASH}max | Unit | Target | Result |",
        "| --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    errors = [
        f"- `{name}` failed: {s['error'].strip().splitlines()[-1]}"
        for name, s in results["scenarios"].items()
        if s.get("error")
    ]
    if errors:
        lines += ["", *errors]
    return "\n".join(lines) + "\n"


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None or not old:
        return ""
    return f"{(new / old - 1) * 100:+.0f} %"


def render_compare(
    old: dict[str, Any], new: dict[str, Any], names: tuple[str, str]
) -> str:
    """Each goal's figure and each CPU figure of ``old`` next to ``new``."""
    lines = [
        f"Before: `{names[0]}` ({old.get('date', '?')}, commit "
        f"`{(old.get('git', {}).get('commit') or '?')[:12]}`, schema "
        f"{old.get('schema', '?')}); after: `{names[1]}` ({new.get('date', '?')}, "
        f"commit `{(new.get('git', {}).get('commit') or '?')[:12]}`)",
        "",
        "| Figure | Before | After | Change | Goal | After: result |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    before = {g["name"]: g for g in goal_figures(old)}
    for g in goal_figures(new):
        b = before[g["name"]]
        lines.append(
            f"| {g['label']} | {_show(b['value'], b['unit'])} "
            f"| {_show(g['value'], g['unit'])} | {_change(b['value'], g['value'])} "
            f"| {g['goal']} | {g['verdict']} |"
        )
    old_cpu, new_cpu = cpu_figures(old), cpu_figures(new)
    if old_cpu or new_cpu:
        lines += [
            "",
            "CPU µs per processed event, before → after (change):",
            "",
            "| Measurement | " + " | ".join(h for _, h in CPU_COLUMNS) + " |",
            "| --- |" + " ---: |" * len(CPU_COLUMNS),
        ]
        for label in [*new_cpu, *(k for k in old_cpu if k not in new_cpu)]:
            cells = []
            for name, _ in CPU_COLUMNS:
                was = old_cpu.get(label, {}).get(name)
                now = new_cpu.get(label, {}).get(name)
                change = _change(was, now)
                cells.append(
                    f"{fmt(was)} → {fmt(now)}" + (f" ({change})" if change else "")
                    if was is not None or now is not None
                    else DASH
                )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if old.get("schema") != new.get("schema"):
        lines += [
            "",
            f"The results have different schemas ({old.get('schema')} and "
            f"{new.get('schema')}): see docs/benchmarks.md for what changed in "
            "the measurements.",
        ]
    return "\n".join(lines) + "\n"


def render_docs(results_path: Path, docs: Path = DOCS) -> None:
    """Replace the Results section of docs/benchmarks.md with results.json."""
    results = json.loads(results_path.read_text())
    text = docs.read_text()
    start, end = text.find(START_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise SystemExit(f"{docs}: markers {START_MARK} … {END_MARK} not found")
    body = (
        f"{START_MARK}\n<!-- generated by `python benchmarks/run.py --render-docs` "
        f"from {os.path.relpath(results_path, REPO)}; do not edit -->\n\n"
        + render_markdown(results)
        + "\n"
    )
    docs.write_text(text[:start] + body + text[end:])
    log(f"updated {docs.relative_to(REPO)}")


# --- running -------------------------------------------------------------------------


async def run(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    repeat = 1 if args.quick and args.repeat is None else (args.repeat or 3)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if wrk_path() else "python"
    if generator == "wrk" and not wrk_path():
        raise SystemExit("wrk not found on PATH")
    if generator == "wrk":
        note = f"wrk ({wrk_version()}) with benchmarks/wrk_single.lua"
    else:
        why = "wrk not found" if not wrk_path() else "forced with --generator python"
        note = (
            f"Python fallback ({why}): asyncio keep-alive connections; it needs "
            "more CPU per request than wrk, so single-event figures can be lower"
        )
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "command": shlex.join(sys.orig_argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "repeat": repeat,
        "machine": machine_info(),
        "git": git_info(),
        "software": {"python": platform.python_version()},
        "generator": {"name": generator, "note": note},
        "configuration": {
            "sizes": asdict(sizes),
            "eventflow": "defaults (INFO logs, JSON format); "
            "EVENTFLOW_WORKER_METRICS_PORT=0; one stream per measurement",
        },
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="eventflow-bench-") as tmp:
        # World-reachable, so that PostgreSQL (run as an unprivileged user when we
        # are root) keeps its data here, and it is removed with the folder.
        os.chmod(tmp, 0o755)
        stack = Stack(Path(tmp))
        try:
            log(f"starting PostgreSQL and Valkey in {tmp}")
            stack.start_servers()
            results["software"].update(await stack.versions())
            ctx = Context(stack, sizes, generator, log, results["scenarios"])
            for name in names:
                results["scenarios"][name] = await run_scenario(ctx, name, repeat)
        finally:
            await stack.close()
            stack.stop_servers()
            if args.keep_logs:
                keep = REPO / "benchmarks" / "out" / "logs"
                keep.mkdir(parents=True, exist_ok=True)
                for path in stack.log_dir.glob("*.log"):
                    shutil.move(path, keep / path.name)
                results["logs"] = str(keep.relative_to(REPO))
    results["machine"]["load_average_at_end"] = load_average()
    results["goals"] = goal_figures(results)
    results["cpu_us_per_event"] = cpu_figures(results)
    return results


async def run_scenario(ctx: Context, name: str, repeat: int) -> dict[str, Any]:
    reps: list[dict[str, Any]] = []
    error = None
    for index in range(repeat):
        log(f"{name}: repetition {index + 1}/{repeat}")
        started = time.perf_counter()
        try:
            rep = await SCENARIOS[name](ctx)
        except Exception:
            error = traceback.format_exc()
            log(f"{name} FAILED:\n{error}")
            break
        rep["duration_s"] = round(time.perf_counter() - started, 1)
        reps.append(rep)
    return {"summary": summarize(reps), "repetitions": reps, "error": error}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run EventFlow's benchmarks on a stack of their own.",
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, 1 repetition (< 2 min)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="repetitions (default 3; quick 1)"
    )
    parser.add_argument("--only", default="", help="NAME[,NAME]: run a subset")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file")
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="single-event load generator (auto: wrk when installed)",
    )
    parser.add_argument(
        "--render-docs",
        action="store_true",
        help="only regenerate the Results section of docs/benchmarks.md "
        "from --out, run nothing",
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="OLD.json: after the run, print each goal and CPU figure of OLD next "
        "to the new ones; OLD.json NEW.json: compare two results, run nothing",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep API/worker logs in benchmarks/out/logs",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.compare and len(args.compare) > 2:
        parser.error("--compare takes OLD.json, or OLD.json NEW.json")
    return args


def compare_files(old_path: Path, new_path: Path) -> str:
    old = json.loads(old_path.read_text())
    new = json.loads(new_path.read_text())
    names = (os.path.relpath(old_path), os.path.relpath(new_path))
    return render_compare(old, new, names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    if args.render_docs:
        render_docs(out)
        return 0
    if args.compare and len(args.compare) == 2:
        old_path, new_path = args.compare
        print(compare_files(old_path, new_path))
        return 0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        log(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        return 2
    started = time.perf_counter()
    try:
        results = uvloop.run(run(args, names))
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped, nothing recorded")
        return 130
    results["duration_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render_markdown(results))
    log(f"results in {out} ({results['duration_s']} s)")
    full_default = not args.quick and not args.only and out == DEFAULT_OUT.resolve()
    if full_default:
        render_docs(out)
    if args.compare:
        print(compare_files(args.compare[0], out))
    failed = [n for n, s in results["scenarios"].items() if s["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
