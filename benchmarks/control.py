"""Control plane: pausing and resuming many instances of one template in bulk.

Storage is filled with ``--instances`` due instances of one dynamic template (half named ``a...``, half
``b...``; written through the repository's ``register`` in chunks). Then, each timed on its own:

* pause the whole template (``ctx.pause_task(job)``), check that a claim finds nothing, resume it;
* pause the instances whose name starts with ``a`` (half of them), check that a claim finds only ``b...``
  instances, resume them.

Each operation is one repository call per storage parent (the template here has one): the table shows the
calls made and how long each operation took.

    hatch run bench:control --backend postgres --instances 100000
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backend_options, base_parser, maybe_moto, print_table, workdir, write_json

from pyncette import Context, Pyncette, backends
from pyncette.abc import Lease, Record, RegisterMode, Repository

PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
TAG = "bench_control"


class Counting:
    """Counts the control-plane calls the app makes on its repository (a wrapper, as in production)."""

    def __init__(self, inner: Repository, calls: Counter[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in ("pause", "resume"):
            self._calls[name] += 1
        return attribute


async def timed(what: str, call: Any, timings: dict[str, Any], calls: Counter[str]) -> Any:
    """Await ``call``; note how long it took and how many pause/resume calls it made."""
    before = sum(calls.values())
    start = time.perf_counter()
    result = await call
    timings[what] = {"ms": (time.perf_counter() - start) * 1000, "calls": sum(calls.values()) - before}
    return result


async def check_claim(repo: Repository, parent: str, expect: str) -> None:
    """A claim of 10 finds what ``expect`` says (``none``, ``b`` only, or ``any``); the claimed are let go."""
    now = datetime.now(timezone.utc)
    token = uuid.uuid4().hex
    claimed = await repo.claim(parent, now=now, limit=10, lease_until=now + timedelta(minutes=1), token=token)
    await repo.unlock([Lease(parent, r.name, token) for r in claimed])
    names = {r.name[0] for r in claimed}
    ok = {"none": not claimed, "b": names == {"b"}, "any": len(claimed) == 10}[expect]
    if not ok:
        raise RuntimeError(f"a claim after the operation found {sorted(r.name for r in claimed)} (expected {expect})")


async def measure(name: str, opts: dict[str, Any], size: int, chunk: int) -> dict[str, Any]:
    descriptor = backends.load(name)
    await descriptor.purge(descriptor.settings(opts))
    calls: Counter[str] = Counter()
    app = Pyncette(backend=name, **opts)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    app.use_repository_wrapper(lambda repository: Counting(repository, calls))  # type: ignore[arg-type,return-value]
    timings: dict[str, Any] = {}
    async with app.create() as ctx:
        repo = ctx.repository
        now = datetime.now(timezone.utc)
        spec = job.instantiate("x", execute_at=PAST).to_spec()
        parent = job.name
        start = time.perf_counter()
        for first in range(0, size, chunk):
            records = [
                Record(parent, f"{'a' if i < size // 2 else 'b'}{i:08d}", spec, PAST)
                for i in range(first, min(size, first + chunk))
            ]
            await repo.register(records, now=now, mode=RegisterMode.CREATE)
        fill_s = time.perf_counter() - start
        print(f"  {size:,} registered in {fill_s:.1f}s ({size / fill_s:,.0f}/s)", file=sys.stderr)

        held = await timed("pause template", ctx.pause_task(job, note="bench"), timings, calls)
        await check_claim(repo, parent, "none")
        await timed("resume template", ctx.resume_task(job), timings, calls)
        await check_claim(repo, parent, "any")
        held_prefix = await timed("pause prefix (half)", ctx.pause_task(job, prefix="a"), timings, calls)
        await check_claim(repo, parent, "b")
        await timed("resume prefix (half)", ctx.resume_task(job, prefix="a"), timings, calls)
        await check_claim(repo, parent, "any")
    await descriptor.purge(descriptor.settings(opts))
    return {
        "instances": size,
        "fill_per_s": size / fill_s,
        "held": held,
        "held_prefix": held_prefix,
        "operations": timings,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=5000, help="records per repository.register call")
    args = parser.parse_args()
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        name, opts = backend_options(args.backend, TAG, workdir=wd, endpoint=endpoint)
        result = anyio.run(measure, name, opts, args.instances, args.chunk)
    print(f"backend={args.backend} instances={args.instances:,}")
    rows = [[what, f"{op['ms']:,.1f}", op["calls"]] for what, op in result["operations"].items()]
    print(f"records held: {result['held']} (template), {result['held_prefix']} (prefix)")
    print()
    print_table(f"control, {args.backend}", ["operation", "ms", "repository calls"], rows)
    write_json("control", args.backend, {"parameters": vars(args), "result": result}, disabled=args.no_json)


if __name__ == "__main__":
    main()
