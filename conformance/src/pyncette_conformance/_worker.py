"""A worker process for the multi-process conformance tests (real time, real OS processes).

Usage: ``python -m pyncette_conformance._worker SPEC_JSON`` where the spec has
``backend``, ``options``, ``out`` (a file to append ``name`` lines to),
``mode`` (``"drain"``: run the once-off instances of template ``job`` until
told to stop; ``"hang"``: run template ``job`` whose body never returns;
``"overlap"``: run the static task ``overlapping``, every second, at most once,
with ``overlap="skip"``, each run taking ``work_seconds``) and ``seconds``
(how long to run at most).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio

from pyncette import Context, ExecutionMode, Pyncette, PyncetteContext


def build(spec: dict[str, Any]) -> Pyncette:
    app = Pyncette(
        backend=spec["backend"],
        poll_interval=timedelta(seconds=0.2),
        batch_size=spec.get("batch_size", 50),
        **spec["options"],
    )
    out = spec["out"]

    @app.dynamic_task(lease_duration=timedelta(seconds=spec.get("lease", 2)))
    async def job(context: Context) -> None:
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {context.task.name}\n")
        if spec["mode"] == "hang":
            await anyio.sleep_forever()
        await anyio.sleep(spec.get("work_seconds", 0))

    if spec["mode"] == "overlap":

        @app.task(
            interval=timedelta(seconds=1),
            execution_mode=ExecutionMode.AT_MOST_ONCE,
            overlap="skip",
            lease_duration=timedelta(seconds=30),
        )
        async def overlapping(context: Context) -> None:
            with open(out, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} start {time.time()}\n")
            await anyio.sleep(spec.get("work_seconds", 0))
            with open(out, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} end {time.time()}\n")

    @app.fixture()
    async def ready(app_context: PyncetteContext) -> AsyncIterator[None]:
        # Tells the test this process is connected and about to poll.
        with open(out + ".ready", "w", encoding="utf-8") as f:
            f.write(str(os.getpid()))
        yield

    return app


if __name__ == "__main__":
    anyio.run(build(json.loads(sys.argv[1])).run_until_signalled, json.loads(sys.argv[1])["seconds"])
