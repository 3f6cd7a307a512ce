"""One cell of the chaos matrix: three app processes on one backend's private storage, one scenario.

The matrix process is the producer: it registers once-off instances in waves (already due, so that all
three workers race for them) while the workers run them, injects the scenario's fault, waits until
nothing is left to run, stops the workers and collects what every worker wrote into its run file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
from _storage import Storage
from worker import TASKS, build_app

from pyncette import PyncetteContext
from pyncette.abc import PARKED_AT, Repository
from pyncette.errors import BackendError, TaskLockedException
from pyncette.task import DynamicTask

HERE = Path(__file__).resolve().parent
#: How long the storage stays down in the server crash scenario.
DOWN_SECONDS = 2.0
#: Instances are registered this long overdue, so that even a worker whose clock is 30 s behind sees them due.
OVERDUE = timedelta(seconds=60)
#: Every worker process is killed if it is still alive when the matrix exits, however it exits.
_processes: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_workers() -> None:
    for process in list(_processes):
        with contextlib.suppress(OSError):
            process.kill()
            process.wait(5)


@dataclass(frozen=True)
class Scenario:
    """A fault to inject: one-off (``fault``), or all along (clock ``skew`` of one worker, lost answers)."""

    key: str
    title: str
    #: "kill-worker", "crash", "corrupt" or None.
    fault: str | None = None
    skew: float = 0.0
    lose_answer: float = 0.0
    contention: bool = False


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("worker-kill", "worker SIGKILL", fault="kill-worker"),
        Scenario("server-crash", "server crash and restart", fault="crash"),
        Scenario("dropped-replies", "dropped replies (5 %)", lose_answer=0.05),
        Scenario("lock-contention", "lock contention", contention=True),
        Scenario("skew+2", "clock skew +2 s", skew=2.0),
        Scenario("skew-2", "clock skew -2 s", skew=-2.0),
        Scenario("skew+30", "clock skew +30 s", skew=30.0),
        Scenario("skew-30", "clock skew -30 s", skew=-30.0),
        Scenario("corrupt", "corrupt records", fault="corrupt"),
    )
}
LOST_OPERATIONS = ("register", "claim", "commit", "unlock")


@dataclass(frozen=True)
class Workload:
    """How much work a cell produces (``--quick`` and slow backends use less)."""

    waves: int = 50
    wave_interval: float = 0.2
    per_wave: int = 2
    contention: int = 600
    corrupt: int = 4
    lease: float = 10.0
    batch_size: int = 4
    contention_batch_size: int = 5
    work: tuple[float, float] = (0.1, 0.4)
    contention_work: tuple[float, float] = (0.005, 0.02)
    #: Each worker polls at its own pace, so that none of them is always the first to see a new wave.
    poll_intervals: tuple[float, float, float] = (0.4, 0.5, 0.6)


@dataclass(frozen=True)
class Event:
    """One line of a run file: a body started (``S``) or finished (``D``)."""

    kind: str
    task: str
    instance: str
    scheduled: float
    wall: float
    worker: str


def read_events(paths: Iterable[Path]) -> list[Event]:
    events = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines(keepends=True):
            fields = line.split()
            if not line.endswith("\n") or len(fields) != 6:
                continue  # a line cut short by a kill: the event did not happen
            kind, task, instance, scheduled, wall, worker = fields
            events.append(Event(kind, task, instance, float(scheduled), float(wall), worker))
    return events


def unfinished(events: Iterable[Event], workers: Iterable[str]) -> set[tuple[str, str, str, float]]:
    """Runs the given workers started and did not finish: (worker, task, instance, scheduled)."""
    chosen = set(workers)
    started: set[tuple[str, str, str, float]] = set()
    for event in events:
        if event.worker in chosen:
            key = (event.worker, event.task, event.instance, event.scheduled)
            if event.kind == "S":
                started.add(key)
            else:
                started.discard(key)
    return started


@dataclass(eq=False)
class Worker:
    """One app process of the cell."""

    index: int
    generation: int
    process: subprocess.Popen[bytes]
    runs: Path
    log: Path
    ready: Path
    skew: float
    killed_at: float | None = None

    @property
    def name(self) -> str:
        return f"{self.index}.{self.generation}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class Workers:
    """The cell's worker processes: started, killed, stopped; never left behind."""

    def __init__(self, directory: Path, base_spec: Mapping[str, Any], scenario: Scenario) -> None:
        self.directory = directory
        self.base_spec = base_spec
        self.scenario = scenario
        self.all: list[Worker] = []

    def launch(self, index: int, generation: int) -> Worker:
        name = f"{index}.{generation}"
        # The third worker is the one whose clock is off.
        skew = self.scenario.skew if index == 2 else 0.0
        faults = None
        if self.scenario.lose_answer:
            lose = dict.fromkeys(LOST_OPERATIONS, self.scenario.lose_answer)
            faults = {"seed": 1000 * generation + index + 1, "lose_answer": lose}
        spec = {
            **self.base_spec,
            "worker": name,
            "runs": str(self.directory / f"runs-{name}.txt"),
            "ready": str(self.directory / f"ready-{name}"),
            "skew": skew,
            "faults": faults,
            "calm": str(self.directory / "calm"),
            "poll_interval": self.base_spec["poll_intervals"][index],
        }
        spec_file = self.directory / f"spec-{name}.json"
        spec_file.write_text(json.dumps(spec, indent=2))
        log = self.directory / f"worker-{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, str(HERE / "worker.py"), str(spec_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C meant for the matrix reaches workers only through its cleanup
            )
        _processes.add(process)
        worker = Worker(index, generation, process, Path(spec["runs"]), log, Path(spec["ready"]), skew)
        self.all.append(worker)
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.all if w.alive]

    async def wait_ready(self, workers: Sequence[Worker], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(w.ready.exists() for w in workers):
            for w in workers:
                if not w.alive:
                    raise RuntimeError(f"worker {w.name} exited with {w.process.returncode}: {tail(w.log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready within {timeout:.0f} s")
            await anyio.sleep(0.05)

    def kill(self, worker: Worker) -> None:
        worker.killed_at = time.time()
        worker.process.kill()
        worker.process.wait(10)
        _processes.discard(worker.process)

    async def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every live worker (a graceful shutdown); kill those still alive after ``timeout``.

        Returns the names of those that had to be killed.
        """
        live = self.live()
        for w in live:
            w.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(w.alive for w in live) and time.monotonic() < deadline:
            await anyio.sleep(0.05)
        forced = [w.name for w in live if w.alive]
        self.kill_all()
        return forced

    def kill_all(self) -> None:
        for w in self.all:
            if w.alive:
                w.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.process.wait(10)
            _processes.discard(w.process)

    def run_files(self) -> list[Path]:
        return [w.runs for w in self.all]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def register(ctx: PyncetteContext, template: DynamicTask, names: Sequence[str], execute_at: datetime) -> int:
    """Register once-off instances, retrying the way an application would; returns how many attempts failed.

    The first retries are immediate: an attempt whose answer was lost had landed, and an instance must not
    have run (and been deleted) before the retry writes it again.
    """
    instances = {name: {"execute_at": execute_at} for name in names}
    for attempt in range(40):
        try:
            await ctx.schedule_tasks(template, instances)
            return attempt
        except TaskLockedException:
            return attempt  # an earlier attempt landed and a worker already runs some: all are registered
        except BackendError:
            if attempt >= 2:
                await anyio.sleep(min(0.1 * 2**attempt, 2.0))
    raise RuntimeError(f"registering instances of {template.name} failed 40 times")


async def pending(repository: Repository, parents: Sequence[str]) -> int | None:
    """Stored instances that may still run (not undecodable, not parked); ``None`` while storage fails."""
    count = 0
    try:
        for parent in parents:
            continuation = None
            while True:
                records, continuation = await repository.list_page(parent, limit=500, continuation=continuation)
                count += sum(1 for r in records if r.corrupt is None and r.scheduled_at < PARKED_AT)
                if continuation is None:
                    break
    except BackendError:
        return None
    return count


@dataclass
class Timeline:
    """What the producer did and when (wall-clock Unix times)."""

    #: mode -> instance name -> when it was due (registered, or its execute_at if later).
    due: dict[str, dict[str, float]] = field(default_factory=dict)
    corrupted: set[str] = field(default_factory=set)
    fault_at: float | None = None
    fault_end: float | None = None
    register_failures: int = 0
    notes: list[str] = field(default_factory=list)


class Cell:
    """Runs one (backend, scenario) cell for the given execution modes."""

    def __init__(
        self,
        storage: Storage,
        scenario: Scenario,
        modes: Sequence[str],
        workload: Workload,
        root: Path,
        cap: float,
    ) -> None:
        self.storage = storage
        self.scenario = scenario
        self.modes = list(modes)
        self.workload = workload
        self.cap = cap
        self.tag = "c" + uuid.uuid4().hex[:10]
        self.directory = root / f"{storage.name}-{scenario.key}-{self.tag}"
        self.directory.mkdir(parents=True)
        contention = scenario.contention
        self.spec: dict[str, Any] = {
            "backend": storage.name,
            "options": storage.options(self.tag),
            "modes": self.modes,
            "lease": workload.lease,
            "batch_size": workload.contention_batch_size if contention else workload.batch_size,
            "work": list(workload.contention_work if contention else workload.work),
            "poll_intervals": list(workload.poll_intervals),
            "seconds": cap + 60,
        }
        self.workers = Workers(self.directory, self.spec, scenario)
        self.timeline = Timeline(due={mode: {} for mode in self.modes})

    async def run(self) -> dict[str, Any]:
        started = time.time()
        try:
            # Every wait inside is bounded; this bounds their sum (a cell over it fails, the matrix goes on).
            with anyio.fail_after(self.cap + 60):
                settled, forced = await self._run(deadline=started + self.cap)
        finally:
            self.workers.kill_all()
            with anyio.move_on_after(60), contextlib.suppress(Exception):
                await self.storage.purge(self.tag)
        return {
            "backend": self.storage.name,
            "scenario": self.scenario.key,
            "modes": self.modes,
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 1),
            "settled": settled,
            "forced_stop": forced,
            "directory": str(self.directory),
            "timeline": self.timeline,
            "workers": self.workers.all,
            "events": read_events(self.workers.run_files()),
            "logs": worker_log_summary(self.workers.all),
        }

    async def _run(self, deadline: float) -> tuple[bool, list[str]]:
        """Start the workers, produce, inject, wait until settled, stop them: (settled, workers killed at the stop)."""
        first = [self.workers.launch(i, 0) for i in range(3)]
        await self.workers.wait_ready(first, timeout=60)
        producer_spec = {
            **self.spec,
            "worker": "matrix",
            "poll_interval": 1.0,
            "runs": str(self.directory / "runs-matrix.txt"),
            "faults": (
                {"seed": 99, "lose_answer": {"register": self.scenario.lose_answer}}
                if self.scenario.lose_answer
                else None
            ),
        }
        producer = build_app(producer_spec)
        async with producer.app.create() as ctx:
            await self._produce(ctx, producer.templates)
            settled = await self._settle(ctx, producer.templates, deadline=deadline)
        forced = await self.workers.stop()
        return settled, forced

    # -- producing and faults -------------------------------------------------------------------------

    async def _produce(self, ctx: PyncetteContext, templates: Mapping[str, DynamicTask]) -> None:
        waves = 1 if self.scenario.contention else self.workload.waves
        per_wave = self.workload.contention if self.scenario.contention else self.workload.per_wave
        fault_wave = max(1, int(waves * 0.4)) if self.scenario.fault else None
        next_wave = time.monotonic()
        for wave in range(waves):
            if wave == fault_wave:
                await self._inject(ctx, templates)
                next_wave = time.monotonic()
            names = [f"w{wave:03d}n{j:04d}" for j in range(per_wave)]
            execute_at = datetime.fromtimestamp(int(time.time()), timezone.utc) - OVERDUE
            for mode in self.modes:
                self.timeline.register_failures += await register(ctx, templates[mode], names, execute_at)
                now = time.time()
                self.timeline.due[mode].update(dict.fromkeys(names, now))
            next_wave += self.workload.wave_interval
            await anyio.sleep(max(0.0, next_wave - time.monotonic()))
        (self.directory / "calm").touch()  # no more injected faults: what they left behind must resolve

    async def _inject(self, ctx: PyncetteContext, templates: Mapping[str, DynamicTask]) -> None:
        timeline = self.timeline
        if self.scenario.fault == "kill-worker":
            victim = await self._victim()
            self.workers.kill(victim)
            timeline.fault_at = timeline.fault_end = victim.killed_at
            in_flight = len(unfinished(read_events([victim.runs]), [victim.name]))
            timeline.notes.append(f"worker {victim.name} killed with {in_flight} run(s) in progress")
        elif self.scenario.fault == "crash" and self.storage.server is not None:
            timeline.fault_at = time.time()
            self.storage.server.kill()
            await anyio.sleep(DOWN_SECONDS)
            await anyio.to_thread.run_sync(self.storage.server.start)
            timeline.fault_end = time.time()
            timeline.notes.append(f"server down {timeline.fault_end - timeline.fault_at:.1f} s")
        elif self.scenario.fault == "crash":
            # SQLite has no server: the crash is every process writing to the file dying at once.
            live = self.workers.live()
            timeline.fault_at = time.time()
            for worker in live:
                self.workers.kill(worker)
            in_flight = len(unfinished(read_events(self.workers.run_files()), [w.name for w in live]))
            await anyio.sleep(DOWN_SECONDS)
            fresh = [self.workers.launch(w.index, w.generation + 1) for w in live]
            await self.workers.wait_ready(fresh, timeout=60)
            timeline.fault_end = time.time()
            timeline.notes.append(f"all {len(live)} workers killed with {in_flight} run(s) in progress, restarted")
        elif self.scenario.fault == "corrupt":
            names = [f"c{j:02d}" for j in range(self.workload.corrupt)]
            execute_at = datetime.fromtimestamp(int(time.time()) + 4, timezone.utc)
            for mode in self.modes:
                self.timeline.register_failures += await register(ctx, templates[mode], names, execute_at)
                timeline.due[mode].update(dict.fromkeys(names, execute_at.timestamp()))
            for mode in self.modes:
                for name in names:
                    await ctx.repository.corrupt(*templates[mode].instance_key(name))
            timeline.corrupted.update(names)
            timeline.fault_at = timeline.fault_end = time.time()
            timeline.notes.append(f"{len(names)} record(s) per template corrupted before they were due")

    async def _victim(self) -> Worker:
        """The first worker seen in the middle of a dynamic run of every mode (within 5 s), else the busiest."""
        templates = {TASKS[mode][0] for mode in self.modes}
        deadline = time.monotonic() + 5
        while True:
            busiest: tuple[int, Worker] | None = None
            for worker in self.workers.live():
                running = unfinished(read_events([worker.runs]), [worker.name])
                if templates <= {task for _, task, _, _ in running}:
                    return worker
                if busiest is None or len(running) > busiest[0]:
                    busiest = (len(running), worker)
            if time.monotonic() > deadline:
                assert busiest is not None
                return busiest[1]
            await anyio.sleep(0.01)

    # -- waiting until nothing is left ----------------------------------------------------------------

    async def _settle(self, ctx: PyncetteContext, templates: Mapping[str, DynamicTask], deadline: float) -> bool:
        """Wait until no instance is left to run, no body runs and the static tasks are up to date (or the cap).

        Until then a doubled run may still show up (a lease that has to expire first), so the matrix
        waits for the storage to be empty rather than for every instance to have run once.
        """
        parents = [parent for template in templates.values() for parent in template.all_parents()]
        statics = [TASKS[mode][1] for mode in self.modes]
        quiet_since: float | None = None
        while time.time() < deadline:
            await anyio.sleep(0.5)
            events = read_events(self.workers.run_files())
            now = time.time()
            behind = any(
                max((e.scheduled for e in events if e.task == task and e.kind == "D"), default=0.0) < now - 3
                for task in statics
            )
            busy = unfinished(events, [w.name for w in self.workers.live()])
            if behind or busy or await pending(ctx.repository, parents) != 0:
                quiet_since = None
                continue
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 1.0:
                return True
        return False


def worker_log_summary(workers: Sequence[Worker]) -> dict[str, Any]:
    """Errors and warnings in the workers' logs, the records they set aside, and the faults they injected."""
    levels: Counter[str] = Counter()
    set_aside: Counter[str] = Counter()
    not_run: Counter[str] = Counter()
    injected: Counter[str] = Counter()
    unexpected: list[str] = []
    for worker in workers:
        try:
            lines = worker.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("INJECTED "):
                injected.update(json.loads(line[len("INJECTED ") :]))
                continue
            for level in ("WARNING", "ERROR", "CRITICAL"):
                if f" {level} " in line:
                    levels[level] += 1
            if "Traceback" in line:
                levels["traceback"] += 1
            if "Not running <pyncette task '" in line:
                not_run[line.split("Not running <pyncette task '", 1)[1].split("'", 1)[0]] += 1
            if "cannot be decoded and is set aside" in line:
                set_aside[line.split("Record ", 1)[1].split(" ", 1)[0]] += 1
            elif " ERROR " in line or " CRITICAL " in line:
                unexpected.append(f"{worker.name}: {line}")
    return {
        "levels": dict(levels),
        "set_aside_logged": dict(set_aside),
        "not_run_after_commit": dict(not_run),
        "injected": dict(injected),
        "unexpected_errors": unexpected[:20],
        "unexpected_error_count": len(unexpected),
    }
