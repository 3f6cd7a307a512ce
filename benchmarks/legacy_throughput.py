"""The throughput workload for pyncette 1.1.0, run by ``throughput.py --against 1.1.0`` with that venv's python.

Uses only the 1.x public API (``Pyncette(repository_factory=..., **options)``, ``@app.dynamic_task``,
``ctx.schedule_task``, ``ctx.run``/``ctx.shutdown``). 1.x has no bulk API, so the instances registered
one call at a time are the ones executed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from _legacy_common import cleanup, legacy_factory, peak_rss_mb

from pyncette import Context, Pyncette

PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)


def count_dynamodb_requests() -> Counter[str]:
    """Count 1.1.0's DynamoDB API calls and HTTP sends: it opens an aioboto3 session; hook every new one."""
    import aioboto3

    requests: Counter[str] = Counter()

    def on_call(model: Any, **_: Any) -> None:
        requests[model.name] += 1

    def on_send(**_: Any) -> None:
        requests["(http sends)"] += 1

    original = aioboto3.Session.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.events.register("before-call.dynamodb", on_call)
        self.events.register("before-send.dynamodb", on_send)

    aioboto3.Session.__init__ = init  # type: ignore[method-assign]
    return requests


async def main(args: argparse.Namespace) -> dict[str, Any]:
    requests: Counter[str] = count_dynamodb_requests() if args.backend == "dynamodb" else Counter()
    factory, opts, note = await legacy_factory(args.backend, "bench_legacy_tp", args.workdir, args.endpoint)
    app = Pyncette(
        repository_factory=factory,
        concurrency_limit=args.concurrency,
        batch_size=args.batch_size,
        poll_interval=timedelta(seconds=args.poll_interval),
        **opts,
    )
    executed: list[str] = []
    n = args.n

    @app.dynamic_task()
    async def job(context: Context) -> None:
        executed.append(context.task.name)
        if len(executed) >= n:
            context.app_context.shutdown()

    try:
        async with app.create() as ctx:
            names = iter(range(n))

            async def feeder() -> None:
                for i in names:
                    await ctx.schedule_task(job, f"i{i}", execute_at=PAST)

            start = time.perf_counter()
            await asyncio.gather(*(feeder() for _ in range(args.in_flight)))
            registration_s = time.perf_counter() - start
            before = requests.copy()
            start = time.perf_counter()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.run(), timeout=args.timeout)
            elapsed = time.perf_counter() - start
    finally:
        await cleanup(args.backend, "bench_legacy_tp", opts)
    counts = Counter(executed)
    result: dict[str, Any] = {
        "registrations_per_s": n / registration_s,
        "bulk_registrations_per_s": "no bulk API",
        "executions_per_s": len(executed) / elapsed,
        "execution_seconds": elapsed,
        "executed": len(executed),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "missing": len({f"i{i}" for i in range(n)} - set(counts)),
        "peak_rss_mb": peak_rss_mb(),
    }
    if requests:
        during = requests - before  # the execution phase only, as on our side
        calls = sum(v for k, v in during.items() if not k.startswith("("))
        result["requests"] = dict(during)
        result["api_calls_per_execution"] = calls / max(len(executed), 1)
        result["http_sends_per_execution"] = during["(http sends)"] / max(len(executed), 1)
        result["api_calls_per_s"] = calls / elapsed
    if note:
        result["note"] = note
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
