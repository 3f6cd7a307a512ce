"""Instructions per run: the runtime's CPU cost of one run, counted by callgrind (independent of machine load).

Runs one app that bulk-registers N due once-off instances of one dynamic task (``concurrency_limit=100``,
``batch_size=100``) and, in "run" mode, runs them all; each under ``valgrind --tool=callgrind``, for N = 2,000
and 6,000, registering only and registering then running. Per run = ((run 6000 - register 6000) - (run 2000 -
register 2000)) / 4000: start-up and registration cancel out.

    hatch run bench:per-run --backend memory
    hatch run bench:per-run --backend sqlite --source ../old-checkout/packages/core/src

``--source`` measures another checkout's core (put first on ``PYTHONPATH``), for an A/B against the same
interpreter. ``--backend sqlite`` uses a SQLite file in a temporary directory (the SQLite calls run in a worker
thread, whose instructions count too). Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = (2000, 6000)

APP = """
import os, sys, anyio
from datetime import datetime, timedelta, timezone
from pyncette import Context, Pyncette

mode, n, database = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
if database != "-":
    options = {"backend": "sqlite", "sqlite_database": database}
else:
    try:
        import pyncette.memory  # noqa: F401 - the public memory backend
        options = {"backend": "memory"}
    except ImportError:  # a checkout from before it was public: the same store behind sqlite's ":memory:"
        options = {"backend": "sqlite", "sqlite_database": ":memory:"}
app = Pyncette(concurrency_limit=100, batch_size=100, poll_interval=timedelta(seconds=1), **options)
done = []

@app.dynamic_task()
async def job(context: Context) -> None:
    done.append(1)
    if len(done) >= n:
        context.app_context.shutdown()

async def main() -> None:
    async with app.create() as ctx:
        await ctx.schedule_tasks(job, {f"i{i}": {"execute_at": PAST} for i in range(n)})
        if mode == "run":
            await ctx.run()
    assert mode == "register" or len(done) == n, len(done)

anyio.run(main)
"""


def instructions(mode: str, n: int, backend: str, source: str | None, workdir: Path) -> int:
    """Total instructions of one process (callgrind's "Collected")."""
    database = "-" if backend == "memory" else str(workdir / f"{mode}-{n}.db")
    script = workdir / "app.py"
    script.write_text(APP)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if source:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    out = workdir / f"{mode}-{n}.callgrind"
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(script),
            mode,
            str(n),
            database,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--source", help="the src directory of another checkout's core, measured instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        total = {
            (mode, n): instructions(mode, n, args.backend, args.source, Path(tmp))
            for mode in ("register", "run")
            for n in SIZES
        }
    small, large = SIZES
    per_run = ((total["run", large] - total["register", large]) - (total["run", small] - total["register", small])) / (
        large - small
    )
    print(f"backend={args.backend} source={args.source or 'this checkout'}")
    print(f"| backend | instructions per run |\n|---|---|\n| {args.backend} | {per_run:,.0f} |")


if __name__ == "__main__":
    main()
