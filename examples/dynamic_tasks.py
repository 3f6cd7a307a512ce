"""Dynamic tasks: a template declared in code, instances created, listed and removed at run time.

    python examples/dynamic_tasks.py --seconds 5

Each instance has its own name, schedule and arguments, and is stored by the
backend, so instances outlive the process that created them (with a
persistent backend) and millions of them cost nothing until they are due.
The ``pyncette tasks`` command manages the same instances from a shell.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio

from pyncette import Context, Pyncette, PyncetteContext

app = Pyncette(poll_interval=timedelta(seconds=0.5))


# The template: options given here are defaults that each instance may override.
@app.dynamic_task(lease_duration=timedelta(seconds=30))
async def notify(context: Context) -> None:
    print(f"notify {context.task.name:<6} -> {context.args['channel']} ({context.task.canonical_name})", flush=True)


# Partitioned templates spread instances over shards (each its own storage partition).
@app.partitioned_task(partition_count=4)
async def shard_report(context: Context) -> None:
    print(f"shard_report {context.task.name}", flush=True)


@app.fixture()
async def subscriptions(app_context: PyncetteContext) -> AsyncIterator[None]:
    """Create instances once at startup (a fixture runs before the first tick)."""
    # One at a time: an interval, a cron (6 fields: every second) with a time zone, a once-off.
    await app_context.schedule_task(notify, "alice", interval=timedelta(seconds=0.5), channel="email")
    await app_context.schedule_task(notify, "bob", schedule="* * * * * *", timezone="Europe/Dublin", channel="sms")
    now = app_context.clock.now()
    await app_context.schedule_task(notify, "carol", execute_at=now + timedelta(seconds=1), channel="push")
    # In bulk: one call, as few storage round trips as the backend allows.
    await app_context.schedule_tasks(
        notify, {name: {"interval": timedelta(seconds=1), "channel": "webhook"} for name in ("dave", "erin", "frank")}
    )
    await app_context.schedule_tasks(
        shard_report, {f"region-{n}": {"interval": timedelta(seconds=2)} for n in range(3)}
    )

    # Listing pages through every instance (the order is unspecified).
    page = await app_context.list_tasks(notify, limit=100)
    names = sorted(state.task.name for state in page.tasks)
    print(f"{len(names)} notify instances: {', '.join(names)}", flush=True)
    yield


@app.task(interval=timedelta(seconds=2))
async def janitor(context: Context) -> None:
    """Remove some instances after a while; the removed ones stop running."""
    ctx = context.app_context
    for name in ("dave", "erin"):
        if await ctx.get_task(notify, name) is not None:
            await ctx.unschedule_task(notify, name)
            print(f"janitor: unscheduled {name}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    anyio.run(app.run_until_signalled, args.seconds)
    print("dynamic_tasks: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
