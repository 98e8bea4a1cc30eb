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
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop
from harness import REPO, Stack, wrk_path, wrk_version
from scenarios import METRICS, SCENARIOS, Context, Sizes

DEFAULT_OUT = REPO / "benchmarks" / "results.json"
DOCS = REPO / "docs" / "benchmarks.md"
START_MARK = "<!-- results:start -->"
END_MARK = "<!-- results:end -->"
DASH = "\u2013"  # en dash, for ranges


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- machine and versions ------------------------------------------------------------


def _proc_field(path: str, name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def _git(*args: str) -> str | None:
    result = subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    mem = _proc_field("/proc/meminfo", "MemTotal")
    mem_gib = round(int(mem.split()[0]) / 1024 / 1024, 1) if mem else None
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or "unknown",
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_info() -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


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


def render_markdown(results: dict[str, Any]) -> str:
    m, sw = results["machine"], results["software"]
    gen = results["generator"]
    lines = []
    if results["quick"]:
        lines.append(
            "> **Quick run** (`--quick`): small sizes, 1 repetition, for checking "
            "the harness. These are not benchmark figures.\n"
        )
    commit = (results["git"]["commit"] or "unknown")[:12]
    dirty = " (with uncommitted changes)" if results["git"]["dirty"] else ""
    lines += [
        f"- Date: {results['date']}; command: `{results['command']}`",
        f"- Commit: `{commit}`{dirty}",
        f"- Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gib']} GiB; "
        f"load average at start {' / '.join(map(str, m['load_average_at_start']))}",
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
        "schema": 1,
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
            ctx = Context(stack, sizes, generator, log)
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
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
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
        "--keep-logs",
        action="store_true",
        help="keep API/worker logs in benchmarks/out/logs",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    if args.render_docs:
        render_docs(out)
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
    failed = [n for n, s in results["scenarios"].items() if s["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
