"""Scale: the cost of an idle scheduler tick, and of claiming 100 due instances, as registered instances grow.

For each size in ``--sizes``, storage is filled with that many instances of one dynamic template, none due
(written through the repository's ``register`` in chunks, the same records ``ctx.schedule_tasks`` writes).
Then:

* idle tick: the app runs with a short ``poll_interval``; every tick's duration comes from
  ``app.use_tick_listener`` (median and p90 over ``--ticks`` ticks);
* claim 100 due: 100 due instances are registered, one ``repository.claim(limit=100)`` is timed, and they
  are committed away; repeated ``--claims`` times (median).

The ratio largest/smallest size is the figure the target bounds (within 2x).

    hatch run bench:scale --backend postgres --sizes 10000,1000000
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backend_options, base_parser, maybe_moto, print_table, workdir, write_json

from pyncette import Context, Pyncette, backends
from pyncette.abc import Completion, Record, RegisterMode

PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
TAG = "bench_scale"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(name: str, opts: dict[str, Any], size: int, ticks: int, claims: int, chunk: int) -> dict[str, Any]:
    descriptor = backends.load(name)
    await descriptor.purge(descriptor.settings(opts))
    durations: list[float] = []
    app = Pyncette(backend=name, poll_interval=timedelta(seconds=0.02), **opts)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    def on_tick(ctx: Any, seconds: float) -> None:
        durations.append(seconds)
        if len(durations) >= ticks + 5:
            ctx.shutdown()

    app.use_tick_listener(on_tick)
    async with app.create() as ctx:
        repo = ctx.repository
        now = datetime.now(timezone.utc)
        future = now + timedelta(days=365)
        spec = job.instantiate("x", execute_at=future).to_spec()
        parent = job.name
        start = time.perf_counter()
        for first in range(0, size, chunk):
            records = [Record(parent, f"i{i:08d}", spec, future) for i in range(first, min(size, first + chunk))]
            await repo.register(records, now=now, mode=RegisterMode.CREATE)
        fill_s = time.perf_counter() - start
        print(f"  {size:,} registered in {fill_s:.1f}s ({size / fill_s:,.0f}/s)", file=sys.stderr)

        await ctx.run()
        idle = durations[5:]  # the first ticks include start-up

        due_spec = job.instantiate("x", execute_at=PAST).to_spec()
        claim_ms: list[float] = []
        for round_ in range(claims):
            now = datetime.now(timezone.utc)
            due = [Record(parent, f"d{round_}-{i:03d}", due_spec, PAST) for i in range(100)]
            await repo.register(due, now=now, mode=RegisterMode.CREATE)
            token = uuid.uuid4().hex
            start = time.perf_counter()
            claimed = await repo.claim(parent, now=now, limit=100, lease_until=now + timedelta(minutes=1), token=token)
            claim_ms.append((time.perf_counter() - start) * 1000)
            if len(claimed) != 100:
                raise RuntimeError(f"claimed {len(claimed)} of 100 due instances")
            await repo.commit([Completion(parent, r.name, token, None) for r in claimed])
    await descriptor.purge(descriptor.settings(opts))
    return {
        "size": size,
        "fill_per_s": size / fill_s,
        "tick_ms_median": statistics.median(idle) * 1000,
        "tick_ms_p90": percentile(idle, 0.9) * 1000,
        "ticks": len(idle),
        "claim100_ms_median": statistics.median(claim_ms),
        "claim100_ms_p90": percentile(claim_ms, 0.9),
        "claims": len(claim_ms),
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000", help="comma-separated registered-instance counts")
    parser.add_argument("--ticks", type=int, default=50)
    parser.add_argument("--claims", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=5000, help="records per repository.register call")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        name, opts = backend_options(args.backend, TAG, workdir=wd, endpoint=endpoint)
        for size in sizes:
            results.append(anyio.run(measure, name, opts, size, args.ticks, args.claims, args.chunk))
    params = f"backend={args.backend} sizes={sizes} ticks={args.ticks} claims={args.claims} poll_interval=0.02s"
    print(params)
    header = ["registered", "idle tick ms (median)", "idle tick ms (p90)", "claim 100 due ms (median)", "p90"]
    rows = [
        [r["size"], r["tick_ms_median"], r["tick_ms_p90"], r["claim100_ms_median"], r["claim100_ms_p90"]]
        for r in results
    ]
    first, last = results[0], results[-1]
    tick_ratio = last["tick_ms_median"] / first["tick_ms_median"]
    claim_ratio = last["claim100_ms_median"] / first["claim100_ms_median"]
    rows.append([f"ratio {last['size']:,}/{first['size']:,}", f"{tick_ratio:.2f}x", "", f"{claim_ratio:.2f}x", ""])
    print()
    print_table(f"scale, {args.backend}", header, rows)
    write_json(
        "scale",
        args.backend,
        {
            "parameters": {"sizes": sizes, "ticks": args.ticks, "claims": args.claims, "poll_interval": 0.02},
            "results": results,
            "tick_ratio": tick_ratio,
            "claim100_ratio": claim_ratio,
        },
        disabled=args.no_json,
    )


if __name__ == "__main__":
    main()
