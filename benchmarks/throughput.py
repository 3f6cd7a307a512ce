"""Throughput: register N once-off dynamic instances, all due now, then execute them all.

Reports registrations/s (one ``schedule_task`` per instance, ``--in-flight`` at once), bulk
registrations/s (``ctx.schedule_tasks``), executions/s with ``--processes`` app processes, duplicate and
missing executions (checked by the executed instance names), peak RSS of each executing process, and on
DynamoDB the API requests per execution (botocore ``before-call``/``before-send`` hooks).

    hatch run bench:throughput --backend redis --against 1.1.0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    backend_options,
    base_parser,
    maybe_moto,
    peak_rss_mb,
    print_table,
    ratio,
    run_legacy,
    workdir,
    write_json,
)

from pyncette import Context, Pyncette, backends
from pyncette.abc import Repository

PAST = datetime(2000, 1, 1, tzinfo=timezone.utc)
TAG = "bench_tp"


def make_app(name: str, opts: dict[str, Any], cfg: dict[str, Any]) -> tuple[Pyncette, Any, list[str], Counter[str]]:
    app = Pyncette(
        backend=name,
        concurrency_limit=cfg["concurrency"],
        batch_size=cfg["batch_size"],
        poll_interval=timedelta(seconds=cfg["poll_interval"]),
        **opts,
    )
    executed: list[str] = []
    requests: Counter[str] = Counter()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        executed.append(context.task.name)
        if len(executed) >= cfg["stop_after"]:
            context.app_context.shutdown()

    if name == "dynamodb":

        def count_requests(repository: Repository) -> Repository:
            client = getattr(repository, "client", None)
            if client is not None:

                def on_call(model: Any, **_: Any) -> None:
                    requests[model.name] += 1

                def on_send(**_: Any) -> None:
                    requests["(http sends)"] += 1

                client.meta.events.register("before-call.dynamodb", on_call)
                client.meta.events.register("before-send.dynamodb", on_send)
            return repository

        app.use_repository_wrapper(count_requests)
    return app, job, executed, requests


async def execute(name: str, opts: dict[str, Any], cfg: dict[str, Any], go: Any = None) -> dict[str, Any]:
    """Run one app until all instances ran (or ``timeout``); ``go`` waits for the start signal."""
    app, job, executed, requests = make_app(name, opts, cfg)
    async with app.create() as ctx:
        if go is not None:
            await go()
        start = time.time()
        async with anyio.create_task_group() as tg:

            async def stop_when_empty() -> None:
                # Several processes: stop when storage holds no instance (once-off instances are deleted on commit).
                deadline = time.monotonic() + cfg["timeout"]
                while True:
                    await anyio.sleep(0.05)
                    page = await ctx.list_tasks(job, limit=1)
                    if not page.tasks or time.monotonic() > deadline:
                        ctx.shutdown()
                        return

            async def timeout() -> None:
                await anyio.sleep(cfg["timeout"])
                ctx.shutdown()

            tg.start_soon(stop_when_empty if cfg["processes"] > 1 else timeout)
            await ctx.run()
            tg.cancel_scope.cancel()
        end = time.time()
    return {"start": start, "end": end, "names": executed, "peak_rss_mb": peak_rss_mb(), "requests": dict(requests)}


def worker(config: str) -> None:
    """Subprocess mode: open the app, say ready, wait for a line on stdin, execute, print a JSON result."""
    spec = json.loads(config)

    async def go() -> None:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

    result = anyio.run(execute, spec["name"], spec["opts"], spec["cfg"], go)
    print(json.dumps(result), flush=True)


async def register(
    name: str, opts: dict[str, Any], cfg: dict[str, Any], n: int, single: bool
) -> tuple[float, Pyncette, Any]:
    """Register n due instances, one call each (``in_flight`` at once) or in bulk; returns seconds taken."""
    app, job, _, _ = make_app(name, opts, cfg)
    async with app.create() as ctx:
        if single:
            names = iter(range(n))
            start = time.perf_counter()

            async def feeder() -> None:
                for i in names:
                    await ctx.schedule_task(job, f"i{i}", execute_at=PAST)

            async with anyio.create_task_group() as tg:
                for _ in range(cfg["in_flight"]):
                    tg.start_soon(feeder)
        else:
            instances = {f"i{i}": {"execute_at": PAST} for i in range(n)}
            start = time.perf_counter()
            await ctx.schedule_tasks(job, instances)
        return time.perf_counter() - start, app, job


async def run_ours(backend: str, cfg: dict[str, Any], wd: Path, endpoint: str | None) -> dict[str, Any]:
    n = cfg["n"]
    name, opts = backend_options(backend, TAG, workdir=wd, endpoint=endpoint)
    descriptor = backends.load(name)
    await descriptor.purge(descriptor.settings(opts))
    single_n = cfg["single_n"]
    result: dict[str, Any] = {"registrations_n": single_n}
    try:
        single_s, _, _ = await register(name, opts, cfg, single_n, single=True)
        result["registrations_per_s"] = single_n / single_s
    except Exception as exc:  # reported, and the other phases still run
        while isinstance(getattr(exc, "exceptions", None), tuple) and len(exc.exceptions) == 1:  # type: ignore[attr-defined]
            exc = exc.exceptions[0]  # type: ignore[attr-defined]
        result["registrations_per_s"] = "failed"
        result["registration_error"] = f"{type(exc).__name__}: {exc}"
    await descriptor.purge(descriptor.settings(opts))
    if backend == "memory":
        # :memory: lives in this process only: register and execute in one app.
        app, job, executed, requests = make_app(name, opts, cfg)
        async with app.create() as ctx:
            start = time.perf_counter()
            await ctx.schedule_tasks(job, {f"i{i}": {"execute_at": PAST} for i in range(n)})
            bulk_s = time.perf_counter() - start
            start = time.perf_counter()
            with anyio.move_on_after(cfg["timeout"]):
                await ctx.run()
            elapsed = time.perf_counter() - start
        runs = [{"names": executed, "peak_rss_mb": peak_rss_mb(), "requests": {}}]
        result["note"] = "memory: registered and executed in one process (peak RSS includes registration)"
    else:
        bulk_s, _, _ = await register(name, opts, cfg, n, single=False)
        workers = []
        for _ in range(cfg["processes"]):
            spec = json.dumps({"name": name, "opts": opts, "cfg": cfg})
            workers.append(
                subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
                    [sys.executable, __file__, "--worker", spec],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in workers:
            assert proc.stdout is not None
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            if line.strip() != "ready":
                raise RuntimeError(f"worker failed to start: {line!r}")
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        runs = []
        for proc in workers:
            out, _ = await anyio.to_thread.run_sync(proc.communicate)
            runs.append(json.loads(out.strip().splitlines()[-1]))
        elapsed = max(r["end"] for r in runs) - min(r["start"] for r in runs)
        await descriptor.purge(descriptor.settings(opts))
    counts = Counter(name for r in runs for name in r["names"])
    expected = {f"i{i}" for i in range(n)}
    total = sum(counts.values())
    requests: Counter[str] = Counter()
    for r in runs:
        requests.update(r["requests"])
    result.update(
        {
            "bulk_registrations_per_s": n / bulk_s,
            "executions_per_s": total / elapsed,
            "execution_seconds": elapsed,
            "executed": total,
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            "missing": len(expected - set(counts)),
            "per_process": [len(r["names"]) for r in runs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
    )
    if requests:
        calls = sum(v for k, v in requests.items() if not k.startswith("("))
        result["requests"] = dict(requests)
        result["api_calls_per_execution"] = calls / max(total, 1)
        result["http_sends_per_execution"] = requests["(http sends)"] / max(total, 1)
        result["api_calls_per_s"] = calls / elapsed
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("-n", "--instances", type=int, default=20_000)
    parser.add_argument("--single-n", type=int, default=None, help="instances for the one-call-each phase (default N)")
    parser.add_argument("--legacy-n", type=int, default=None, help="instances for the 1.1.0 run (default N)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    run(args)


def run(args: argparse.Namespace) -> None:
    n = args.instances
    cfg = {
        "n": n,
        "single_n": args.single_n or n,
        "processes": args.processes,
        "in_flight": args.in_flight,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "poll_interval": args.poll_interval,
        "timeout": args.timeout,
        "stop_after": n if args.processes == 1 else 10**12,
    }
    if args.backend == "memory" and args.processes != 1:
        sys.exit("--processes > 1 needs a shared backend (not memory)")
    legacy: dict[str, Any] | None = None
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        ours = anyio.run(run_ours, args.backend, cfg, wd, endpoint)
        if args.against:
            legacy_n = args.legacy_n or n
            legacy = run_legacy(
                "legacy_throughput.py",
                [
                    "--backend",
                    args.backend,
                    "--workdir",
                    str(wd),
                    "--endpoint",
                    endpoint or "",
                    "-n",
                    str(legacy_n),
                    "--in-flight",
                    str(args.in_flight),
                    "--concurrency",
                    str(args.concurrency),
                    "--batch-size",
                    str(args.batch_size),
                    "--poll-interval",
                    str(args.poll_interval),
                    "--timeout",
                    str(args.timeout),
                ],
            )
    params = (
        f"backend={args.backend} N={n} single_N={cfg['single_n']} processes={args.processes} "
        f"in_flight={args.in_flight} concurrency_limit={args.concurrency} batch_size={args.batch_size} "
        f"poll_interval={args.poll_interval}s"
    )
    print(params)
    metrics = [
        (f"registrations/s (schedule_task, {args.in_flight} in flight)", "registrations_per_s"),
        ("bulk registrations/s (schedule_tasks)", "bulk_registrations_per_s"),
        ("executions/s", "executions_per_s"),
        ("duplicates", "duplicates"),
        ("missing", "missing"),
        ("peak RSS of an executing process (MiB)", "peak_rss_mb"),
    ]
    if "api_calls_per_execution" in ours:
        metrics += [
            ("DynamoDB API calls per execution", "api_calls_per_execution"),
            ("DynamoDB HTTP sends per execution", "http_sends_per_execution"),
            ("DynamoDB API calls/s while executing", "api_calls_per_s"),
        ]
    header = ["metric", "pyncette 2"]
    if legacy is not None:
        header += [f"pyncette 1.1.0 (N={args.legacy_n or n})", "ratio"]
    rows = []
    for label, key in metrics:
        row = [label, ours.get(key, "n/a")]
        if legacy is not None:
            theirs = legacy.get(key, "n/a" if "error" not in legacy else "failed")
            row += [theirs, ratio(ours.get(key), theirs) if key.endswith("per_s") else ""]
        rows.append(row)
    print()
    print_table(f"throughput, {args.backend}", header, rows)
    if "registration_error" in ours:
        print(f"one-call-each registration failed: {ours['registration_error']}")
    if ours.get("per_process") and args.processes > 1:
        print(f"executions per process: {ours['per_process']}")
    if legacy is not None:
        for note in ("note", "error"):
            if note in legacy:
                print(f"1.1.0 {note}: {legacy[note]}")
    write_json(
        "throughput" if args.processes == 1 else f"throughput-p{args.processes}",
        args.backend,
        {"parameters": cfg | {"backend": args.backend}, "ours": ours, "legacy": legacy},
        disabled=args.no_json,
    )


if __name__ == "__main__":
    main()
