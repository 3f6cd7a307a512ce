"""Dashboard: how fast a template's task page opens when the template has a million instances.

Storage is filled with ``--instances`` instances of one dynamic template through ``ctx.schedule_tasks`` (bulk,
``--chunk`` per call). The dashboard is then served by uvicorn on a loopback port, beside the open context,
and each request below is timed ``--repeat`` times over real HTTP (median, p95 and max, milliseconds):

* the page's HTML and its script (what the browser loads first);
* the task page's JSON (template, pauses and the first page of instances: one ``list_page`` call per page,
  never a count);
* the following pages, walking ``--pages`` pages deep with the opaque continuation;
* one instance by its exact name (``describe_task``), the overview (bounded scan of each template) and one
  slice of the failing / stuck view (``scan_limit`` records).

The instances are removed afterwards (the benchmark's table or namespace is purged).

    hatch run bench:dashboard --backend postgres --instances 1000000
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import backend_options, base_parser, maybe_moto, print_table, purge, workdir, write_json

from pyncette import Context, Pyncette
from pyncette_dashboard import bind, dashboard, serve_alongside

TAG = "bench_dashboard"


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max_ms": ordered[-1],
    }


async def timed(http: httpx.AsyncClient, path: str, params: dict[str, str] | None = None) -> tuple[float, Any]:
    start = time.perf_counter()
    response = await http.get(path, params=params)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    return elapsed, response


async def measure(name: str, opts: dict[str, Any], size: int, chunk: int, repeat: int, pages: int) -> dict[str, Any]:
    await purge(name, opts)
    app = Pyncette(backend=name, **opts)

    @app.dynamic_task(interval=timedelta(days=1))
    async def job(context: Context) -> None:
        pass

    results: dict[str, Any] = {}
    try:
        async with app.create(fixtures=False) as ctx:
            start = time.perf_counter()
            for first in range(0, size, chunk):
                names = range(first, min(size, first + chunk))
                await ctx.schedule_tasks(job, {f"i{n:08d}": {"user": f"u{n}"} for n in names})
                if (first // chunk) % 20 == 0:
                    print(f"  ... {min(size, first + chunk):,} scheduled", file=sys.stderr, flush=True)
            fill_s = time.perf_counter() - start
            print(f"  {size:,} scheduled in {fill_s:.1f}s ({size / fill_s:,.0f}/s)", file=sys.stderr)

            sock = bind("127.0.0.1", 0)
            port = sock.getsockname()[1]
            board = dashboard(ctx, refresh_seconds=0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve_alongside, board, sock)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                    for _ in range(100):  # until uvicorn answers
                        try:
                            await http.get("/static/style.css")
                            break
                        except httpx.TransportError:
                            await anyio.sleep(0.05)
                    samples: dict[str, list[float]] = {}

                    async def sample(what: str, path: str, params: dict[str, str] | None = None) -> Any:
                        elapsed, response = await timed(http, path, params)
                        samples.setdefault(what, []).append(elapsed)
                        return response

                    for _ in range(repeat):
                        await sample("page HTML (/)", "/")
                        await sample("page script (static/app.js)", "/static/app.js")
                        body = (await sample("task page JSON, first page", "/api/tasks/job")).json()
                        assert len(body["instances"]["items"]) == min(size, 50)
                    token = body["instances"]["continuation"]
                    for _ in range(pages):
                        if token is None:
                            break
                        page = await sample(
                            "next page JSON (continuation)", "/api/tasks/job/instances", {"continuation": token}
                        )
                        token = page.json()["continuation"]
                    for index in range(repeat):
                        target = f"i{(index * 7919) % size:08d}"
                        await sample("one instance by exact name", "/api/tasks/job/instance", {"name": target})
                        await sample("overview JSON", "/api/overview")
                        await sample("failing / stuck view, one slice", "/api/problems")
                tg.cancel_scope.cancel()
            results = {what: {"requests": len(values), **summary(values)} for what, values in samples.items()}
    finally:
        await purge(name, opts)
    return {"instances": size, "fill_s": fill_s, "fill_per_s": size / fill_s, "requests": results}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="instances per ctx.schedule_tasks call")
    parser.add_argument("--repeat", type=int, default=20, help="times each request is timed")
    parser.add_argument("--pages", type=int, default=50, help="pages walked with the continuation")
    args = parser.parse_args()
    with workdir() as wd, maybe_moto(args.backend) as endpoint:
        name, opts = backend_options(args.backend, TAG, workdir=wd, endpoint=endpoint)
        result = anyio.run(measure, name, opts, args.instances, args.chunk, args.repeat, args.pages)
    print(f"backend={args.backend} instances={args.instances:,} (scheduled at {result['fill_per_s']:,.0f}/s)")
    rows = [
        [what, r["requests"], f"{r['median_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['max_ms']:.1f}"]
        for what, r in result["requests"].items()
    ]
    print()
    print_table(f"dashboard, {args.backend}", ["request", "n", "median ms", "p95 ms", "max ms"], rows)
    write_json("dashboard", args.backend, {"parameters": vars(args), "result": result}, disabled=args.no_json)


if __name__ == "__main__":
    main()
