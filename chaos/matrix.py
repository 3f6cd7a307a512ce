"""The chaos matrix: every fault scenario against every backend, in both execution modes, with real processes.

    hatch run chaos:matrix                      # everything (about 20 minutes on 2 cores)
    hatch run chaos:matrix --quick --backend redis --scenario worker-kill
    hatch run chaos:matrix --write-docs         # and rewrite the matrix in docs/reliability.md

Each backend runs on a private server of its own (a free 127.0.0.1 port, a temporary directory; never
the shared servers), started once and cleaned up at the end, also on Ctrl-C or failure. Each cell runs
three app processes (``chaos/worker.py``) on a fresh namespace of that server, injects one scenario's
fault and counts every run; see docs/reliability.md for what is measured and how. Results go to
``chaos/results/matrix-<time>.json``. Never part of ``hatch test``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anyio
from _cell import SCENARIOS, Cell, Workload
from _report import explanations, summarize, table, unexplained
from _storage import BACKENDS, Storage
from worker import TASKS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "chaos" / "results"
DOCS = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- chaos-matrix:begin -->", "<!-- chaos-matrix:end -->"
MODES = tuple(TASKS)

FULL = Workload()
QUICK = Workload(waves=20, contention=150)
#: moto answers one request at a time, slowly: a smaller workload keeps its cells comparable in time.
SLOW_BACKENDS = {"dynamodb": {"per_wave": 1, "contention_share": 0.2}}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable; default: all")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="repeatable; default: all")
    parser.add_argument("--mode", action="append", choices=MODES, help="repeatable; default: both")
    parser.add_argument("--quick", action="store_true", help="smaller counts and a shorter cap per cell")
    parser.add_argument("--cap", type=float, help="wall-clock cap per cell in seconds (default 150, quick 90)")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite the matrix in {DOCS.relative_to(ROOT)}")
    parser.add_argument("--keep", action="store_true", help="keep the cells' run files and logs (printed path)")
    return parser.parse_args(argv)


def workload_for(backend: str, quick: bool) -> Workload:
    base = QUICK if quick else FULL
    slow = SLOW_BACKENDS.get(backend)
    if slow is None:
        return base
    return replace(base, per_wave=int(slow["per_wave"]), contention=int(base.contention * slow["contention_share"]))


def not_applicable(storage: Storage, scenario: str) -> str | None:
    if scenario == "server-crash" and not storage.survives_restart:
        return "moto keeps nothing across a restart (see below)"
    return None


async def run_backend(
    name: str, scenarios: Sequence[str], modes: Sequence[str], args: argparse.Namespace, root: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    storage = Storage(name)
    try:
        await anyio.to_thread.run_sync(storage.start)
        print(f"== {name}: {storage.describe()}", flush=True)
        workload = workload_for(name, args.quick)
        cap = args.cap or (90.0 if args.quick else 150.0)
        for key in scenarios:
            reason = not_applicable(storage, key)
            if reason is not None:
                rows += [{"backend": name, "scenario": key, "mode": m, "not_applicable": reason} for m in modes]
                print(f"   {key:<16} n/a: {reason}", flush=True)
                continue
            try:
                cell = await Cell(storage, SCENARIOS[key], modes, workload, root, cap).run()
            except Exception as exc:  # one broken cell must not hide the others' results
                error = f"{type(exc).__name__}: {exc}"
                rows += [{"backend": name, "scenario": key, "mode": m, "error": error} for m in modes]
                print(f"   {key:<16} FAILED: {error}", flush=True)
                continue
            logs = cell["logs"]
            for mode in modes:
                row = summarize(cell, mode)
                row["notes"] = list(cell["timeline"].notes)
                row["seconds"] = cell["seconds"]
                row["worker_errors"] = logs["unexpected_error_count"]
                row["logs"] = logs
                row["register_failures"] = cell["timeline"].register_failures
                row["forced_stop"] = cell["forced_stop"]
                if key == "corrupt":
                    logged = logs["set_aside_logged"]
                    row["set_aside_logged_once"] = bool(logged) and all(n == 1 for n in logged.values())
                    row["notes"].append(
                        "each logged once" if row["set_aside_logged_once"] else f"set-aside log lines: {logged}"
                    )
                if logs["injected"] and mode == modes[0]:
                    total = sum(logs["injected"].values())
                    row["notes"].append(f"{total} answers lost in the workers")
                rows.append(row)
                print(
                    f"   {key:<16} {mode:<14} expected {row['expected']:>4} once {row['once']:>4} "
                    f"twice {row['twice']:>3} lost {row['lost']:>3} aside {row['set_aside']:>2} "
                    f"resume {_fmt(row['resume'])} catch-up {_fmt(row['catch_up'])} ({cell['seconds']:.0f} s)"
                    + ("" if row["settled"] else "  NOT SETTLED")
                    + (f"  UNEXPLAINED {unexplained(row)}" if unexplained(row) else ""),
                    flush=True,
                )
    finally:
        storage.cleanup()  # not awaited: it must happen even while the run is being cancelled (Ctrl-C)
    return rows


def _fmt(value: float | None) -> str:
    return "   -" if value is None else f"{value:4.1f}"


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_docs(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS} has no {BEGIN} ... {END} section to rewrite")
    generated = "\n".join(
        [
            BEGIN,
            "",
            f"Produced by `{meta['command']}` on {meta['date']} in {meta['minutes']:.0f} minutes "
            f"(machine: {meta['machine']['cores']} cores, Python {meta['machine']['python']}, "
            f"{meta['machine']['platform']}).",
            "",
            table(rows),
            "##### Every run that ran twice or was lost",
            "",
            explanations(rows),
            "",
            END,
        ]
    )
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOCS.write_text(text[:start] + generated + text[end:])
    print(f"rewrote the matrix in {DOCS.relative_to(ROOT)}")


async def main(args: argparse.Namespace) -> int:
    backends = args.backend or list(BACKENDS)
    scenarios = args.scenario or list(SCENARIOS)
    modes = args.mode or list(MODES)
    started = time.time()
    root = Path(tempfile.mkdtemp(prefix="pyncette-chaos-cells-"))
    rows: list[dict[str, Any]] = []
    try:
        for name in backends:
            rows += await run_backend(name, scenarios, modes, args, root)
    finally:
        if args.keep:
            print(f"run files and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "command": "hatch run chaos:matrix " + " ".join(sys.argv[1:]),
        "date": datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": (time.time() - started) / 60,
        "machine": machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"matrix-{stamp}.json"
    path.write_text(json.dumps({**meta, "rows": rows}, indent=2, default=str))
    print(f"\n{table(rows)}\n{explanations(rows)}\n\nwrote {path.relative_to(ROOT)} ({meta['minutes']:.1f} min)")
    if args.write_docs:
        write_docs(rows, meta)
    bad = [r for r in rows if r.get("error") or (not r.get("not_applicable") and (unexplained(r) or not r["settled"]))]
    if bad:
        print(
            f"{len(bad)} row(s) failed, did not settle, or have doubles or losses no guarantee covers", file=sys.stderr
        )
        return 1
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: servers, workers and temporary files


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    arguments = parse_args()
    try:
        sys.exit(anyio.run(main, arguments))
    except KeyboardInterrupt:
        print("interrupted: servers, workers and temporary files cleaned up", file=sys.stderr)
        sys.exit(130)
