"""The suite must accept a correct backend and reject broken ones; and its guard must work."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent

#: Each test runs the suite (or part of it) in a pytest subprocess, which takes a while on a busy machine.
pytestmark = pytest.mark.timeout(600)

MODULE = """
import pytest
from pyncette_conformance import ALL_SUITES, BackendUnderTest
from example_backends import {backend}

class Mixin:
    @pytest.fixture
    async def pyncette_backend(self):
        under_test = BackendUnderTest({backend}(), {{}}, settle_timeout=20)
        try:
            yield under_test
        finally:
            await under_test.aclose()

{classes}
"""


def _run(pytester: pytest.Pytester, backend: str, *args: str, classes: str | None = None) -> pytest.RunResult:
    pytester.makepyfile(example_backends=(HERE / "example_backends.py").read_text(encoding="utf-8"))
    if classes is None:
        classes = "\n".join(f"class Test{name}(Mixin, ALL_SUITES[{i}]): pass" for i, name in enumerate(_suite_names()))
    pytester.makepyfile(test_generated=MODULE.format(backend=backend, classes=classes))
    return pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-m", "not realtime", *args, timeout=300)


def _suite_names() -> list[str]:
    from pyncette_conformance import ALL_SUITES

    return [suite.__name__ for suite in ALL_SUITES]


def test_correct_example_backend_passes_everything(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "SharedMemoryBackend")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] > 50


def test_double_running_backend_is_caught(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "DoubleRunningBackend", "-k", "exactly_once or claim")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 3
    result.stdout.fnmatch_lines(["*test_due_instances_run_exactly_once_across_apps*"])


def test_losing_backend_is_caught(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "LosingBackend", "-k", "cadence or catch_up or commit")
    assert result.parseoutcomes().get("failed", 0) >= 3
    result.stdout.fnmatch_lines(["*test_interval_first_run_and_cadence*"])


def test_state_dropping_backend_is_caught(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "StateDroppingBackend", "-k", "TestRepositoryContract and (state or commit)")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 2, result.stdout.str()[-3000:]
    assert outcomes.get("passed", 0) >= 3  # what does not involve the state still passes
    result.stdout.fnmatch_lines(["*FAILED*test_commit_replaces_the_state_or_keeps_it*"])


def test_backend_releasing_every_lease_is_caught(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "ReleasingBackend", "-k", "TestRepositoryContract and release")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*FAILED*test_commit_without_release_keeps_the_lease*"])


def test_state_dropping_backend_fails_the_policy_suite(pytester: pytest.Pytester) -> None:
    """Attempt counters that are not persisted: retries restart at attempt 1 and never exhaust."""
    result = _run(pytester, "StateDroppingBackend", "-k", "TestPolicySuite and (retry or restart or exhausted)")
    assert result.parseoutcomes().get("failed", 0) >= 3, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*FAILED*test_retry_backs_off_and_counts_attempts*"])


def test_overlap_checked_only_locally_is_caught(pytester: pytest.Pytester) -> None:
    """A backend that releases every lease on commit lets another app start the next run meanwhile."""
    result = _run(pytester, "ReleasingBackend", "-k", "TestPolicySuite and overlap")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FAILED*test_overlap_skip_across_processes*"])


def test_pause_not_obeyed_is_caught(pytester: pytest.Pytester) -> None:
    """A backend that stores pauses where no claim looks: every app keeps running the paused tasks."""
    result = _run(pytester, "PauseListingBackend", "-k", "TestControlSuite and pause")
    assert result.parseoutcomes().get("failed", 0) >= 3, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*FAILED*test_pause_in_one_app_stops_every_app_within_one_poll*"])


def test_run_now_moving_the_schedule_is_caught(pytester: pytest.Pytester) -> None:
    """A backend that drops the state of a reschedule: the triggered run becomes the regular one."""
    result = _run(pytester, "TriggerMovingBackend", "-k", "TestControl and run_now or reschedule")
    assert result.parseoutcomes().get("failed", 0) >= 2, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*FAILED*test_run_now_adds_one_run_and_keeps_the_schedule*"])


def test_scanning_backend_is_caught(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "ScanningBackend", "-k", "claim_cost")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*claims must not scan records that are not due*"])


def test_silencing_a_standard_test_needs_an_explicit_xfail(pytester: pytest.Pytester) -> None:
    silenced = "class TestSilenced(Mixin, ALL_SUITES[0]):\n    async def test_unlock_and_extend(self):\n        pass\n"
    result = _run(pytester, "SharedMemoryBackend", "-k", "not_silenced", classes=silenced)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RepositoryContract.test_unlock_and_extend*"])

    allowed = (
        "class TestAllowed(Mixin, ALL_SUITES[0]):\n"
        "    @pytest.mark.xfail(reason='this storage cannot extend leases', strict=False)\n"
        "    async def test_unlock_and_extend(self):\n"
        "        raise NotImplementedError\n"
    )
    result = _run(pytester, "SharedMemoryBackend", "-k", "not_silenced or unlock_and_extend", classes=allowed)
    result.assert_outcomes(passed=1, xfailed=1)


def test_plugin_runs_against_an_installed_backend_by_name(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-q",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "pyncette_conformance",
        "--pyncette-backend",
        "sqlite",
        "-k",
        "TestRepository",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes["passed"] >= 10


def test_plugin_reports_an_unknown_backend(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-q",
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "pyncette_conformance",
        "--pyncette-backend",
        "nope",
        "-k",
        "test_unlock_and_extend",
    )
    result.stdout.fnmatch_lines(["*unknown backend 'nope'; installed backends: *sqlite*"])
    assert result.ret != 0


def test_plugin_skips_a_standard_test_only_with_a_reason(pytester: pytest.Pytester) -> None:
    args = ["-q", "-p", "no:cacheprovider", "--pyargs", "pyncette_conformance", "--pyncette-backend", "sqlite"]
    result = pytester.runpytest_subprocess(
        *args, "--pyncette-skip", "test_unlock_and_extend=the emulator cannot extend leases", "-rs", "-k", "unlock"
    )
    result.stdout.fnmatch_lines(["*skipped for this backend: the emulator cannot extend leases*"])
    assert result.parseoutcomes().get("failed", 0) == 0
    result = pytester.runpytest_subprocess(*args, "--pyncette-skip", "test_unlock_and_extend", "-k", "unlock")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--pyncette-skip expects TEST=REASON (a reason is required)*"])
