"""Real OS processes on real time: coordination through one SQLite file, and the 1.x documentation example.

The seed example is started first (module fixture), so both tests share the same ~11 s of wall time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

SEED_EXAMPLE = """\
from pyncette import Pyncette, Context

app = Pyncette(sqlite_database="pyncette.db")

@app.task(schedule='* * * * * */10')
async def foo(context: Context):
    print('This will run every 10 seconds')

if __name__ == '__main__':
    app.main()
"""

WORKER = """\
import os
import sys
from datetime import timedelta

import anyio

from pyncette import Context, Pyncette

database, output, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
app = Pyncette(sqlite_database=database, poll_interval=timedelta(milliseconds=200))


def record(line: str) -> None:
    with open(output, "a") as handle:
        handle.write(line + "\\n")


@app.task(interval=timedelta(seconds=1))
async def tick(context: Context) -> None:
    record(f"{os.getpid()} {context.scheduled_at.isoformat()}")


record(f"started {os.getpid()}")
anyio.run(app.run_until_signalled, seconds)
"""


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def seed_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], float]]:
    directory = tmp_path_factory.mktemp("seed")
    (directory / "example.py").write_text(SEED_EXAMPLE)
    process = subprocess.Popen(
        [sys.executable, "example.py"],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_environment(),
    )
    try:
        yield process, time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module", autouse=True)
def _start_seed_early(seed_example: tuple[subprocess.Popen[str], float]) -> None:
    """Start the seed example before the other test so their wall time overlaps."""


def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    database = tmp_path / "shared.db"
    outputs = [tmp_path / f"out-{n}.txt" for n in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(database), str(output), "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_environment(),
        )
        for output in outputs
    ]
    logs = []
    for worker in workers:
        try:
            log, _ = worker.communicate(timeout=40)
        finally:
            if worker.poll() is None:
                worker.kill()
        logs.append(log)
        assert worker.returncode == 0, log

    lines = [line.split() for output in outputs for line in output.read_text().splitlines()]
    started = {pid for kind, pid in lines if kind == "started"}
    runs = [(pid, scheduled_at) for pid, scheduled_at in lines if pid != "started"]
    assert len(started) == 2, logs
    assert {worker.pid for worker in workers} == {int(pid) for pid in started}
    duplicates = [at for at, count in Counter(at for _, at in runs).items() if count > 1]
    assert duplicates == [], runs
    assert 8 <= len(runs) <= 12, runs
    assert {pid for pid, _ in runs} <= started


def test_seed_sqlite_example_runs_and_stops_on_sigint(seed_example: tuple[subprocess.Popen[str], float]) -> None:
    process, began = seed_example
    time.sleep(max(0.0, 11 - (time.monotonic() - began)))
    assert process.poll() is None, "the example exited on its own"
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert "This will run every 10 seconds" in output, output
    assert process.returncode == 0, output
    assert "shutting down gracefully" in output
