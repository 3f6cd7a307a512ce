"""Lag: p50/p99/max of (start time - scheduled time) for 1-second static tasks and dynamic instances.

Runs ``lag_workload.py`` (written against the 1.x API) with this workspace's pyncette and, with
``--against 1.1.0``, with pyncette 1.1.0 from its isolated venv, one after the other.

    hatch run bench:lag --backend redis --against 1.1.0
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, base_parser, maybe_moto, print_table, run_legacy, workdir, write_json

KINDS = {
    "static": "static, every second",
    "dynamic_local": "dynamic, registered by the running app",
    "dynamic_remote": "dynamic, registered by another context",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(lags: list[float]) -> dict[str, Any]:
    if not lags:
        return {"runs": 0}
    return {"runs": len(lags), "p50": percentile(lags, 0.5), "p99": percentile(lags, 0.99), "max": max(lags)}


def run_ours(workload_args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lag_workload.py"), "--impl", "ours", *workload_args],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"lag workload failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=65)
    parser.add_argument("--static", type=int, default=2, help="static tasks at a 1-second cadence")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        common = [
            "--backend",
            args.backend,
            "--workdir",
            str(wd),
            "--endpoint",
            endpoint or "",
            "--seconds",
            str(args.seconds),
            "--static",
            str(args.static),
            "--poll-interval",
            str(args.poll_interval),
        ]
        ours = run_ours(common)
        legacy = run_legacy("lag_workload.py", ["--impl", "legacy", *common]) if args.against else None
    params = (
        f"backend={args.backend} seconds={args.seconds} static_tasks={args.static} (schedule='* * * * * *') "
        f"poll_interval={args.poll_interval}s; dynamic: one instance every 0.5 s (local), every 1 s (remote)"
    )
    print(params)
    header = ["kind", "runs", "p50 ms", "p99 ms", "max ms"]
    if legacy is not None:
        header += ["1.1.0 runs", "1.1.0 p50 ms", "1.1.0 p99 ms", "1.1.0 max ms"]
    rows = []
    summaries: dict[str, Any] = {"ours": {}, "legacy": {}}
    for kind, label in KINDS.items():
        mine = summary(ours["lags_ms"][kind])
        summaries["ours"][kind] = mine
        if not mine["runs"]:
            continue
        row = [label, mine["runs"], mine["p50"], mine["p99"], mine["max"]]
        if legacy is not None:
            if "error" in legacy:
                row += ["failed", "", "", ""]
            else:
                theirs = summary(legacy["lags_ms"][kind])
                summaries["legacy"][kind] = theirs
                row += [theirs["runs"], theirs.get("p50", ""), theirs.get("p99", ""), theirs.get("max", "")]
        rows.append(row)
    print()
    print_table(f"lag, {args.backend}", header, rows)
    if legacy is not None and (legacy.get("note") or legacy.get("error")):
        print(f"1.1.0: {legacy.get('note') or legacy.get('error')}")
    write_json(
        "lag",
        args.backend,
        {
            "parameters": {"seconds": args.seconds, "static": args.static, "poll_interval": args.poll_interval},
            "summary": summaries,
            "raw": {"ours": ours, "legacy": legacy},
        },
        disabled=args.no_json,
    )


if __name__ == "__main__":
    main()
