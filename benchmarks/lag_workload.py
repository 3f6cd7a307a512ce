"""The lag workload, written against the Pyncette 1.x public API so it runs on both 1.1.0 and ours.

``lag.py`` runs it with this workspace's python (``--impl ours``) and with the 1.1.0 venv's python
(``--impl legacy``). Prints one JSON line: every run's lag (start time - scheduled time, ms) per kind.

Kinds:
* ``static``: ``--static`` tasks with ``schedule="* * * * * *"`` (every second);
* ``dynamic_local``: once-off instances registered by the running app's context, due 1-2 s later;
* ``dynamic_remote``: once-off instances registered through a second context (as another process would),
  which the running app only learns about by polling (or a backend notification).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from pyncette import Context, Pyncette


async def setup(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Pyncette(...) keyword arguments and a note, on fresh storage."""
    if args.impl == "legacy":
        from _legacy_common import legacy_factory

        factory, opts, note = await legacy_factory(args.backend, "bench_legacy_lag", args.workdir, args.endpoint)
        return {"repository_factory": factory, **opts}, note
    from pathlib import Path

    from _common import backend_options, purge

    name, opts = backend_options(args.backend, "bench_lag", workdir=Path(args.workdir), endpoint=args.endpoint or None)
    await purge(name, opts)
    return {"backend": name, **opts}, ""


async def teardown(args: argparse.Namespace, kwargs: dict[str, Any]) -> None:
    if args.impl == "legacy":
        from _legacy_common import cleanup

        await cleanup(args.backend, "bench_legacy_lag", {})
        return
    from _common import purge

    opts = {k: v for k, v in kwargs.items() if k != "backend"}
    await purge(kwargs["backend"], opts)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    kwargs, note = await setup(args)
    app = Pyncette(poll_interval=timedelta(seconds=args.poll_interval), **kwargs)
    lags: dict[str, list[float]] = {"static": [], "dynamic_local": [], "dynamic_remote": []}

    def record(kind: str, context: Context) -> None:
        lags[kind].append((time.time() - context.scheduled_at.timestamp()) * 1000)

    for i in range(args.static):

        async def tick(context: Context) -> None:
            record("static", context)

        app.task(schedule="* * * * * *", name=f"static{i}")(tick)

    @app.dynamic_task()
    async def local(context: Context) -> None:
        record("dynamic_local", context)

    @app.dynamic_task()
    async def remote(context: Context) -> None:
        record("dynamic_remote", context)

    shared = args.backend != "memory"
    try:
        async with app.create() as ctx, contextlib.AsyncExitStack() as stack:
            other = await stack.enter_async_context(app.create()) if shared else None

            async def feed() -> None:
                i = 0
                while True:
                    await asyncio.sleep(0.5)
                    # Due at an odd offset (1.0-1.9 s ahead) so runs are not aligned with whole seconds.
                    at = datetime.now(timezone.utc) + timedelta(seconds=1 + (i % 10) / 10 + 0.037)
                    await ctx.schedule_task(local, f"l{i}", execute_at=at)
                    if other is not None and i % 2 == 0:
                        # 0.25 s after the local one: nothing this app knows of is due then, so only its
                        # polling (or a notification) can find it.
                        await other.schedule_task(remote, f"r{i}", execute_at=at + timedelta(seconds=0.25))
                    i += 1

            async def stop() -> None:
                await asyncio.sleep(args.seconds)
                ctx.shutdown()

            feeder = asyncio.ensure_future(feed())
            stopper = asyncio.ensure_future(stop())
            try:
                await ctx.run()
            finally:
                feeder.cancel()
                stopper.cancel()
    finally:
        await teardown(args, kwargs)
    return {"lags_ms": lags, "note": note}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("ours", "legacy"), required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--seconds", type=float, default=65)
    parser.add_argument("--static", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
