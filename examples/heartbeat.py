"""Long-running tasks that keep their lease alive with heartbeats.

    python examples/heartbeat.py --seconds 5

An AT_LEAST_ONCE run holds a lease for ``lease_duration``; if it runs longer,
another process may take the run over. A heartbeat extends the lease:

* ``await context.heartbeat()`` by hand, between chunks of work (raises
  ``LeaseLostException`` if the lease was lost meanwhile);
* ``@with_heartbeat()`` in the background, whenever ``lease_remaining_ratio``
  of the lease is left; ``cancel_on_lease_lost=True`` also stops the body when
  the lease is lost.

Tasks should wait with ``pyncette.sleep`` (not ``asyncio.sleep``), so that
tests on a virtual clock control their time too.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

import anyio

import pyncette
from pyncette import Context, Pyncette
from pyncette.utils import with_heartbeat

app = Pyncette(poll_interval=timedelta(seconds=0.5))


async def locked_until(context: Context) -> str:
    state = await context.app_context.get_task(context.task)
    return f"{state.locked_until:%H:%M:%S.%f}"[:-3] if state and state.locked_until else "-"


# Runs for 1.5 s with a 1 s lease: the background heartbeat extends it every 0.5 s.
@app.task(interval=timedelta(seconds=1), lease_duration=timedelta(seconds=1))
@with_heartbeat(lease_remaining_ratio=0.5, cancel_on_lease_lost=True)
async def background_heartbeat(context: Context) -> None:
    for step in range(3):
        print(f"background_heartbeat step {step}, lease until {await locked_until(context)}", flush=True)
        await pyncette.sleep(0.5)
    print("background_heartbeat done", flush=True)


# Heartbeats by hand between chunks of work.
@app.task(interval=timedelta(seconds=1), lease_duration=timedelta(seconds=1))
async def manual_heartbeat(context: Context) -> None:
    for chunk in range(3):
        await pyncette.sleep(0.4)  # a chunk of work, shorter than the lease
        await context.heartbeat()
        print(f"manual_heartbeat chunk {chunk} done, lease until {await locked_until(context)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    anyio.run(app.run_until_signalled, args.seconds)
    print("heartbeat: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
