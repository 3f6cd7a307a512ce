"""A delay queue: once-off instances (``execute_at``) that run once and are removed after success.

    python examples/delay_queue.py --seconds 5

Enqueue work for later with ``schedule_task(template, name, execute_at=...)``.
The instance name is the deduplication key: enqueueing the same name again
updates the pending message (keeping the earlier due time) instead of adding
a second one. A time in the past runs at once. A failed run is retried after
its lease expires (or at once with ``failure_mode=FailureMode.UNLOCK``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio

from pyncette import Context, FailureMode, Pyncette, PyncetteContext

app = Pyncette(poll_interval=timedelta(seconds=0.5))
_sequence = itertools.count(1)


@app.dynamic_task(failure_mode=FailureMode.UNLOCK, lease_duration=timedelta(seconds=10))
async def deliver(context: Context) -> None:
    """The consumer: runs once per message."""
    late = (context.app_context.clock.now() - context.scheduled_at).total_seconds()
    print(f"delivered {context.task.name}: {context.args['body']!r} ({late:.2f}s after due)", flush=True)


async def enqueue(ctx: PyncetteContext, name: str, body: str, delay: float) -> None:
    """Put a message on the queue, due in ``delay`` seconds (use the app's clock, so tests can fake time)."""
    await ctx.schedule_task(deliver, name, execute_at=ctx.clock.now() + timedelta(seconds=delay), body=body)


@app.fixture()
async def initial_messages(app_context: PyncetteContext) -> AsyncIterator[None]:
    await enqueue(app_context, "overdue", "due a minute ago: runs at once", -60)
    await enqueue(app_context, "welcome", "sent 0.5 s after start", 0.5)
    # Same name again: still one message, due at the earlier of the two times, with the new body.
    await enqueue(app_context, "welcome", "welcome (updated body)", 3)
    await enqueue(app_context, "reminder", "sent 1.5 s after start", 1.5)
    yield


@app.task(interval=timedelta(seconds=1))
async def producer(context: Context) -> None:
    """Something that enqueues work as it goes, each message due a second later."""
    n = next(_sequence)
    await enqueue(context.app_context, f"job-{n}", f"job number {n}", 1)
    pending = await context.app_context.list_tasks(deliver)
    print(f"producer: enqueued job-{n}; {len(pending.tasks)} message(s) pending", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    anyio.run(app.run_until_signalled, args.seconds)
    print("delay_queue: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
