"""Breakdown: where the time of one executing app process goes.

Registers N due once-off instances in bulk, then runs one app in this process until all ran and reports
executions/s, the app's CPU time as a share of wall time (the rest is waiting for storage), the count and
total time of claim and commit calls (through ``app.use_repository_wrapper``), how many of them overlapped,
and with ``--cprofile`` the top functions by own time.

    hatch run bench:breakdown --backend postgres
"""

from __future__ import annotations

import cProfile
import pstats
import resource
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backend_options, base_parser, maybe_moto, purge, workdir

from pyncette import Context, Pyncette
from pyncette.abc import Completion, Record, Repository

PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)


class Timed:
    """Forwards to a repository, noting (operation, start, end) of every claim and commit."""

    def __init__(self, inner: Repository, calls: list[tuple[str, float, float]]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def claim(self, parent: str, **kwargs: Any) -> list[Record]:
        start = time.perf_counter()
        try:
            return await self._inner.claim(parent, **kwargs)
        finally:
            self._calls.append(("claim", start, time.perf_counter()))

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        start = time.perf_counter()
        try:
            return await self._inner.commit(completions)
        finally:
            self._calls.append(("commit", start, time.perf_counter()))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def profile(name: str, opts: dict[str, Any], n: int, concurrency: int, batch: int, cprofile: bool) -> None:
    calls: list[tuple[str, float, float]] = []

    def build(timed: bool) -> tuple[Pyncette, Any]:
        app = Pyncette(backend=name, concurrency_limit=concurrency, batch_size=batch, **opts)
        executed = 0

        @app.dynamic_task()
        async def job(context: Context) -> None:
            nonlocal executed
            executed += 1
            if executed >= n:
                context.app_context.shutdown()

        if timed:
            app.use_repository_wrapper(lambda repository: Timed(repository, calls))  # type: ignore[arg-type,return-value]
        return app, job

    await purge(name, opts)
    app, job = build(timed=False)
    async with app.create() as ctx:
        await ctx.schedule_tasks(job, {f"i{i}": {"execute_at": PAST} for i in range(n)})
    app, _ = build(timed=True)
    profiler = cProfile.Profile() if cprofile else None
    async with app.create() as ctx:
        cpu, wall = cpu_seconds(), time.perf_counter()
        if profiler:
            profiler.enable()
        await ctx.run()
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    await purge(name, opts)
    print(f"backend={name} N={n} concurrency_limit={concurrency} batch_size={batch}")
    print(f"executions/s {n / wall:,.0f}; wall {wall:.2f} s; app CPU {cpu:.2f} s ({cpu / wall:.0%} of wall)")
    for op in ("claim", "commit"):
        spans = [(b - a) for kind, a, b in calls if kind == op]
        if spans:
            mean_ms = 1000 * sum(spans) / len(spans)
            print(f"{op}: {len(spans)} calls, {sum(spans):.3f} s in total, {mean_ms:.2f} ms mean")
    claims = [(a, b) for kind, a, b in calls if kind == "claim"]
    commits = [(a, b) for kind, a, b in calls if kind == "commit"]
    overlapping = sum(1 for a, b in claims if any(c < b and a < d for c, d in commits))
    print(f"claims in flight while a commit was: {overlapping} of {len(claims)}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("-n", "--instances", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--cprofile", action="store_true", help="also print the top functions by own time")
    args = parser.parse_args()
    if args.backend == "memory":
        sys.exit("memory: use sqlite (a file), so registration and execution can use separate apps")
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        name, opts = backend_options(args.backend, "bench_profile", workdir=wd, endpoint=endpoint)
        anyio.run(profile, name, opts, args.instances, args.concurrency, args.batch_size, args.cprofile)


if __name__ == "__main__":
    main()
