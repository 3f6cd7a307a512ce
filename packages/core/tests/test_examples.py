"""Smoke test of the runnable examples: each runs for 2 seconds and exits 0 with its expected output.

All examples start at once (module fixture), so they share the same few seconds of wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.realtime

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

#: example -> (extra arguments, lines expected in its output)
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "demo.py": ([], ["[static ] every_second", "Stopped cleanly."]),
    "basic.py": ([], ["every_second      due", "every_1_5_seconds says hello", "basic: stopped cleanly"]),
    "persistence.py": ([], ["fresh database, nothing stored yet", "catch_up      due"]),
    "dynamic_tasks.py": ([], ["6 notify instances: alice, bob, carol, dave, erin, frank", "notify alice"]),
    "delay_queue.py": (
        [],
        ["delivered overdue: 'due a minute ago: runs at once'", "delivered welcome: 'welcome (updated body)'"],
    ),
    "heartbeat.py": ([], ["background_heartbeat step 1", "manual_heartbeat chunk 0 done", "heartbeat: stopped"]),
    "fixtures_middleware.py": (
        [],
        ["fixture db: connected", "[retry] flaky attempt 1 failed", "flaky: succeeded", "fixture db: closed after"],
    ),
    "metrics_health.py": (
        ["--metrics-port", "0", "--health-port", "0"],
        ["health: 200 ok", 'metrics: pyncette_task_runs_total{outcome="success",task="work"}'],
    ),
}


def _start(name: str, directory: Path, seconds: str = "2") -> subprocess.Popen[str]:
    extra, _ = EXPECTED[name]
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), "--seconds", seconds, *extra],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return output


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, subprocess.Popen[str]]]]:
    if not EXAMPLES.is_dir():
        pytest.skip(f"no examples directory at {EXAMPLES}")
    directory = tmp_path_factory.mktemp("examples")
    processes = {name: _start(name, directory) for name in EXPECTED}
    try:
        yield directory, processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def test_every_example_is_covered() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"no examples directory at {EXAMPLES}")
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str, started: tuple[Path, dict[str, subprocess.Popen[str]]]) -> None:
    _, processes = started
    process = processes[name]
    output = _finish(process)
    assert process.returncode == 0, output
    for expected in EXPECTED[name][1]:
        assert expected in output, output
    assert "Traceback" not in output, output


def test_persistence_example_finds_its_state_again(started: tuple[Path, dict[str, subprocess.Popen[str]]]) -> None:
    directory, processes = started
    first = processes["persistence.py"]
    _finish(first)
    assert first.returncode == 0
    assert (directory / "pyncette-example.db").exists()
    second = _start("persistence.py", directory, seconds="1")
    output = _finish(second)
    assert second.returncode == 0, output
    assert "found stored state, catch_up is due at" in output, output
