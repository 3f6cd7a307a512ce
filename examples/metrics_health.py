"""Prometheus metrics and a health endpoint (needs ``pip install "pyncette[prometheus]"``).

    python examples/metrics_health.py --seconds 5
    curl localhost:8000/metrics      # while it runs
    curl -i localhost:8080/health    # 200 while the loop ticks and the backend answers, else 503

Both servers live as long as the app and need no web framework. This example
also queries them itself, once a second, and prints what it sees.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import urllib.error
import urllib.request
from datetime import timedelta

import anyio
import anyio.to_thread

import pyncette
from pyncette import Context, FailureMode, Pyncette
from pyncette.healthcheck import use_healthcheck_server
from pyncette.prometheus import use_prometheus


def fetch(url: str) -> tuple[int, str]:
    """GET ``url`` (blocking; run in a worker thread)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local http:// URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:  # 503 and friends
        return exc.code, exc.read().decode()


def build(metrics_port: int, health_port: int) -> Pyncette:
    app = Pyncette(poll_interval=timedelta(seconds=0.5))
    # Task runs, run time, start lag, storage latency and errors, tick time, batch sizes, lost leases.
    use_prometheus(app, port=metrics_port)
    # GET on any path: 200 if healthy, 503 otherwise. Pass healthcheck_handler= for a custom check.
    use_healthcheck_server(app, port=health_port)

    # failure_mode=COMMIT: a failed run is logged and the schedule moves on (the default keeps the
    # lease until it expires, then retries).
    @app.task(interval=timedelta(seconds=0.25), failure_mode=FailureMode.COMMIT)
    async def work(context: Context) -> None:
        await pyncette.sleep(random.uniform(0, 0.05))
        if random.random() < 0.2:
            raise RuntimeError("an occasional failure, counted as outcome=failure")

    @app.task(interval=timedelta(seconds=1))
    async def self_check(context: Context) -> None:
        # The servers' ports are fixture values: context.healthcheck_port and context.prometheus_port
        # (useful with port 0, which picks a free port).
        status, body = await anyio.to_thread.run_sync(fetch, f"http://127.0.0.1:{context.healthcheck_port}/health")
        print(f"health: {status} {body.strip()}", flush=True)
        _, metrics = await anyio.to_thread.run_sync(fetch, f"http://127.0.0.1:{context.prometheus_port}/metrics")
        for line in metrics.splitlines():
            if line.startswith(("pyncette_task_runs_total", "pyncette_tick_duration_seconds_count")):
                print(f"metrics: {line}", flush=True)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    parser.add_argument("--metrics-port", type=int, default=8000, help="metrics port (0: any free port)")
    parser.add_argument("--health-port", type=int, default=8080, help="health port (0: any free port)")
    args = parser.parse_args()
    # Task failures are logged with tracebacks at ERROR; keep the example's output readable.
    logging.basicConfig(level=logging.CRITICAL, stream=sys.stdout)
    anyio.run(build(args.metrics_port, args.health_port).run_until_signalled, args.seconds)
    print("metrics_health: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
