"""The basics: static tasks on a cron schedule or a fixed interval.

    python examples/basic.py              # runs until Ctrl-C
    python examples/basic.py --seconds 5  # stops by itself after 5 seconds

No server needed: without backend options Pyncette keeps its state in memory
(the embedded SQLite backend in ``:memory:`` mode).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import timedelta

import anyio

from pyncette import Context, ExecutionMode, Pyncette

# poll_interval is the longest the scheduler sleeps before looking for due work.
app = Pyncette(poll_interval=timedelta(seconds=0.5))


# A cron expression with a sixth field for seconds (last): every second.
@app.task(schedule="* * * * * *")
async def every_second(context: Context) -> None:
    # scheduled_at is when the run was due (in the task's time zone), not when it started.
    print(f"every_second      due {context.scheduled_at:%H:%M:%S}", flush=True)


# A fixed interval. Any extra keyword becomes context.args (it must be JSON-serializable).
@app.task(interval=timedelta(seconds=1.5), greeting="hello")
async def every_1_5_seconds(context: Context) -> None:
    print(f"every_1_5_seconds says {context.args['greeting']}", flush=True)


# A classic five-field cron in a time zone: 09:00 on weekdays, Dublin time (it will not fire in a demo).
@app.task(schedule="0 9 * * mon-fri", timezone="Europe/Dublin")
async def weekday_morning(context: Context) -> None:
    print("Good morning, Dublin!", flush=True)


# AT_MOST_ONCE schedules the next run before this one starts: no lease, no retry if it fails.
@app.task(interval=timedelta(seconds=1), execution_mode=ExecutionMode.AT_MOST_ONCE)
async def best_effort(context: Context) -> None:
    print("best_effort       ran (never retried)", flush=True)


# enabled=False keeps a task declared but never run (handy behind a feature flag).
@app.task(interval=timedelta(seconds=1), enabled=False)
async def switched_off(context: Context) -> None:
    print("this never prints", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    # In a real deployment just call app.main(): logging, SIGINT/SIGTERM handling, no time limit.
    anyio.run(app.run_until_signalled, args.seconds)
    print("basic: stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
