"""Prometheus metrics for a Pyncette app (needs the ``prometheus`` extra: ``pip install "pyncette[prometheus]"``).

Example::

    from pyncette.prometheus import use_prometheus

    app = Pyncette(...)
    use_prometheus(app, port=9090)  # or leave port out and expose the registry yourself

Metrics (all prefixed ``pyncette_``):

========================================  ==============  =====================================================
name                                      labels          what
========================================  ==============  =====================================================
``task_runs_total``                       task, outcome   finished runs; outcome is success, failure or lease_lost
``task_run_duration_seconds``             task            run time (on the app's clock)
``task_start_lag_seconds``                task            start time minus scheduled time (on the app's clock)
``tasks_running``                         task            runs in progress
``repository_call_duration_seconds``      operation       latency of each storage call
``repository_errors_total``               operation       storage calls that raised
``tick_duration_seconds``                                 one pass of the scheduler loop
``claimed_batch_size``                                    records returned by each claim call
``leases_lost_total``                                     commits, unlocks or heartbeats that found the lease lost
========================================  ==============  =====================================================

A dynamic instance is counted under its template's name, so label values stay few.

Pyncette 1.x's families are recorded too, with 1.x's names and labels, so existing dashboards keep
working: for each operation set ``tasks`` (label ``task_name``), ``repository_ops`` (labels
``operation``, ``task_name``) and ``ticks`` (no label), ``pyncette_<set>_total``,
``pyncette_<set>_duration_seconds``, ``pyncette_<set>_failures_total`` (plus ``exception_type``) and
``pyncette_<set>_in_progress``; and ``pyncette_tasks_staleness_seconds`` (``task_name``). See
:data:`LEGACY_OPERATIONS` for how storage calls map to 1.x's operation names.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, TypeVar

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name != "prometheus_client":
        raise
    from ._install import install_hint

    raise ModuleNotFoundError(
        f"pyncette.prometheus needs prometheus-client; {install_hint('prometheus')}",
        name=exc.name,
    ) from exc

from . import events
from ._http import Response, serve_http
from .abc import Completion, Lease, Record, RegisterMode, Repository
from .app import Pyncette
from .errors import ConfigurationError, LeaseLostException
from .model import AppContext, Context, MiddlewareFunc, NextFunc
from .runtime import PyncetteContext

logger = logging.getLogger("pyncette")

T = TypeVar("T")

#: The fixture (and context attribute) holding the bound port of the metrics server.
PORT_ATTRIBUTE = "prometheus_port"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# The boundaries Pyncette 1.x used for staleness, so that dashboards reading ``le`` keep working.
_STALENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 25, 50, 75, 100, 250, 500, 750, 1000)

#: The fixture that measures scheduler ticks for the 1.x ``ticks`` families.
TICKS_FIXTURE = "prometheus_ticks"

#: Storage calls (the 2.x ``operation`` label) and the 1.x ``repository_ops`` operation each is counted as.
#: A claim is 1.x's ``poll_task`` for a static task and ``poll_dynamic_task`` for a dynamic template.
LEGACY_OPERATIONS = {
    "register": "register_task",
    "claim": "poll_task",  # static tasks; dynamic templates: poll_dynamic_task
    "commit": "commit_task",
    "unlock": "unlock_task",
    "extend": "extend_lease",
    "delete": "unregister_task",
    "get": "get_task_state",
    "list_page": "list_task_states",
}


@dataclass(frozen=True)
class OperationFamilies:
    """One Pyncette 1.x operation set: ``pyncette_<set>_total``, ``_duration_seconds``, ``_failures_total``
    (with ``exception_type``) and ``_in_progress``, all with the set's labels."""

    total: Counter
    duration: Histogram
    failures: Counter
    in_progress: Gauge

    @classmethod
    def create(cls, name: str, labels: Sequence[str], registry: CollectorRegistry) -> OperationFamilies:
        prefix = f"pyncette_{name}"
        return cls(
            total=Counter(f"{prefix}_total", f"Started {name} operations", labels, registry=registry),
            duration=Histogram(
                f"{prefix}_duration_seconds", f"Duration of {name} operations", labels, registry=registry
            ),
            failures=Counter(
                f"{prefix}_failures_total",
                f"{name} operations that raised, by exception type",
                [*labels, "exception_type"],
                registry=registry,
            ),
            in_progress=Gauge(f"{prefix}_in_progress", f"{name} operations in progress", labels, registry=registry),
        )

    @contextlib.contextmanager
    def measure(self, label_sets: Iterable[tuple[str, ...]], seconds: Callable[[], float]) -> Iterator[None]:
        """Count the wrapped code once for each tuple of label values (``[()]`` for an unlabelled set).

        ``seconds`` reads the time the duration is measured with.
        """
        keys = list(label_sets)
        for key in keys:
            _child(self.total, key).inc()
            _child(self.in_progress, key).inc()
        started = seconds()
        try:
            yield
        except Exception as exc:
            for key in keys:
                self.failures.labels(*key, type(exc).__name__).inc()
            raise
        finally:
            elapsed = seconds() - started
            for key in keys:
                _child(self.duration, key).observe(elapsed)
                _child(self.in_progress, key).dec()


M = TypeVar("M", Counter, Gauge, Histogram)


def _child(metric: M, key: tuple[str, ...]) -> M:
    return metric.labels(*key) if key else metric


@dataclass(frozen=True)
class Metrics:
    """The metric families, registered once per registry and shared by every app using it."""

    runs: Counter
    run_duration: Histogram
    start_lag: Histogram
    running: Gauge
    repository_latency: Histogram
    repository_errors: Counter
    tick_duration: Histogram
    claimed_batch_size: Histogram
    leases_lost: Counter
    policy_events: Counter
    legacy_tasks: OperationFamilies
    legacy_repository: OperationFamilies
    legacy_ticks: OperationFamilies
    legacy_staleness: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            runs=Counter("pyncette_task_runs", "Finished task runs by outcome", ["task", "outcome"], registry=registry),
            run_duration=Histogram(
                "pyncette_task_run_duration_seconds", "Task run duration", ["task"], registry=registry
            ),
            start_lag=Histogram(
                "pyncette_task_start_lag_seconds",
                "Time between a run's scheduled time and its start",
                ["task"],
                registry=registry,
            ),
            running=Gauge("pyncette_tasks_running", "Task runs in progress", ["task"], registry=registry),
            repository_latency=Histogram(
                "pyncette_repository_call_duration_seconds",
                "Latency of storage calls",
                ["operation"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            repository_errors=Counter(
                "pyncette_repository_errors", "Storage calls that raised", ["operation"], registry=registry
            ),
            tick_duration=Histogram(
                "pyncette_tick_duration_seconds",
                "Duration of one pass of the scheduler loop",
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
            claimed_batch_size=Histogram(
                "pyncette_claimed_batch_size",
                "Records returned by one claim call",
                buckets=_BATCH_BUCKETS,
                registry=registry,
            ),
            leases_lost=Counter(
                "pyncette_leases_lost", "Commits, unlocks or heartbeats that found their lease lost", registry=registry
            ),
            policy_events=Counter(
                "pyncette_task_policy_events",
                "Runs retried, given up (exhausted), timed out, missed (catch-up window or coalescing) or skipped "
                "(overlap); missed and skipped count runs",
                ["task", "event"],
                registry=registry,
            ),
            **_legacy_families(registry),
        )


class _LegacyFamilies(TypedDict):
    legacy_tasks: OperationFamilies
    legacy_repository: OperationFamilies
    legacy_ticks: OperationFamilies
    legacy_staleness: Histogram


def _legacy_families(registry: CollectorRegistry) -> _LegacyFamilies:
    """The Pyncette 1.x families of :class:`Metrics`, with 1.x's names, labels and staleness buckets."""
    return {
        "legacy_tasks": OperationFamilies.create("tasks", ["task_name"], registry),
        "legacy_repository": OperationFamilies.create("repository_ops", ["operation", "task_name"], registry),
        "legacy_ticks": OperationFamilies.create("ticks", [], registry),
        "legacy_staleness": Histogram(
            "pyncette_tasks_staleness_seconds",
            "Time between a run's scheduled time and its start (Pyncette 1.x name)",
            ["task_name"],
            buckets=_STALENESS_BUCKETS,
            registry=registry,
        ),
    }


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry = REGISTRY) -> Metrics:
    """The metric families in ``registry``, registering them on first use."""
    metrics = _metrics.get(registry)
    if metrics is None:
        metrics = _metrics[registry] = Metrics.create(registry)
    return metrics


class InstrumentedRepository(Repository):
    """A repository that times and counts every call of the one it wraps (2.x and 1.x families)."""

    def __init__(self, inner: Repository, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def _timed(self, operation: str, parents: Iterable[str], call: Awaitable[T]) -> T:
        legacy = _legacy_labels(operation, parents)
        started = time.perf_counter()
        try:
            with self._metrics.legacy_repository.measure(legacy, time.perf_counter):
                return await call
        except Exception:
            self._metrics.repository_errors.labels(operation).inc()
            raise
        finally:
            self._metrics.repository_latency.labels(operation).observe(time.perf_counter() - started)

    def _count_lost(self, results: Sequence[bool]) -> None:
        lost = sum(1 for ok in results if not ok)
        if lost:
            self._metrics.leases_lost.inc(lost)

    async def register(self, records: Sequence[Record], *, now: datetime, mode: RegisterMode) -> list[bool]:
        return await self._timed(
            "register", (r.parent for r in records), self.inner.register(records, now=now, mode=mode)
        )

    async def claim(self, parent: str, *, now: datetime, limit: int, lease_until: datetime, token: str) -> list[Record]:
        claimed = await self._timed(
            "claim", [parent], self.inner.claim(parent, now=now, limit=limit, lease_until=lease_until, token=token)
        )
        self._metrics.claimed_batch_size.observe(len(claimed))
        return claimed

    async def commit(self, completions: Sequence[Completion]) -> list[bool]:
        results = await self._timed("commit", (c.parent for c in completions), self.inner.commit(completions))
        self._count_lost(results)
        return results

    async def unlock(self, leases: Sequence[Lease]) -> list[bool]:
        results = await self._timed("unlock", (lease.parent for lease in leases), self.inner.unlock(leases))
        self._count_lost(results)
        return results

    async def extend(self, lease: Lease, *, lease_until: datetime) -> bool:
        extended = await self._timed("extend", [lease.parent], self.inner.extend(lease, lease_until=lease_until))
        self._count_lost([extended])
        return extended

    async def delete(self, parent: str, name: str) -> bool:
        return await self._timed("delete", [parent], self.inner.delete(parent, name))

    async def delete_many(self, keys: Sequence[tuple[str, str]]) -> list[bool]:
        return await self._timed("delete", (parent for parent, _ in keys), self.inner.delete_many(keys))

    async def get(self, parent: str, name: str) -> Record | None:
        return await self._timed("get", [parent], self.inner.get(parent, name))

    async def list_page(self, parent: str, *, limit: int, continuation: str | None) -> tuple[list[Record], str | None]:
        return await self._timed(
            "list_page", [parent], self.inner.list_page(parent, limit=limit, continuation=continuation)
        )

    async def write_raw_spec(self, parent: str, name: str, raw: str) -> None:
        await self.inner.write_raw_spec(parent, name, raw)

    async def corrupt(self, parent: str, name: str) -> None:
        await self.inner.corrupt(parent, name)

    async def kill_connections(self) -> int:
        return await self.inner.kill_connections()

    def __getattr__(self, name: str) -> Any:
        # Backend-specific extras of the wrapped repository stay reachable.
        if name == "inner":  # not set yet (e.g. while copying)
            raise AttributeError(name)
        return getattr(self.inner, name)


def _legacy_labels(operation: str, parents: Iterable[str]) -> list[tuple[str, str]]:
    """The 1.x ``(operation, task_name)`` label values of a storage call: one per task it touches.

    A storage parent is ``<task>/static`` (static task), ``<template>`` or ``<template>/<partition>``;
    task names never contain ``/``.
    """
    keys: dict[tuple[str, str], None] = {}
    for parent in parents:
        task_name, _, rest = parent.partition("/")
        legacy = LEGACY_OPERATIONS[operation]
        if operation == "claim" and rest != "static":
            legacy = "poll_dynamic_task"
        keys[legacy, task_name] = None
    return list(keys)


#: The run events counted in ``pyncette_task_policy_events``, by label (each counts 1, or its ``count``).
_POLICY_EVENTS: dict[type[events.Event], str] = {
    events.Retrying: "retrying",
    events.Exhausted: "exhausted",
    events.TimedOut: "timed_out",
    events.Missed: "missed",
    events.SkippedOverlap: "skipped_overlap",
}


def _task_label(context: Context) -> str:
    task = context.task
    return task.template.name if task.template is not None else task.name


def use_prometheus(
    app: Pyncette,
    measure_repository: bool = True,
    measure_ticks: bool = True,
    measure_tasks: bool = True,
    *,
    port: int | None = None,
    bind_address: str | None = None,
    registry: CollectorRegistry | None = None,
) -> Metrics:
    """Record metrics of ``app`` in ``registry`` (the default one unless given) and return them.

    ``measure_repository``, ``measure_ticks`` and ``measure_tasks`` (Pyncette 1.x's switches) turn off
    the storage-call, scheduler-tick and task-run metrics respectively. With ``port``, ``/metrics``
    (any path, in fact) is served on ``bind_address:port`` while the app context is open; ``port=0``
    picks a free port, readable as ``ctx.prometheus_port``.
    """
    _check_switches(measure_repository=measure_repository, measure_ticks=measure_ticks, measure_tasks=measure_tasks)
    target = registry if registry is not None else REGISTRY
    metrics = metrics_for(target)

    def on_tick(ctx: AppContext, seconds: float) -> None:
        metrics.tick_duration.observe(seconds)

    if measure_tasks:
        app.use_middleware(_task_middleware(metrics))
        on_policy_event = _policy_event_listener(metrics)
        for kind in _POLICY_EVENTS:
            app.on(kind, on_policy_event)
    if measure_ticks:
        app.use_tick_listener(on_tick)
        app.use_fixture(TICKS_FIXTURE, _ticks_fixture(metrics.legacy_ticks))
    if measure_repository:
        app.use_repository_wrapper(lambda repository: InstrumentedRepository(repository, metrics))
    if port is not None:
        app.use_fixture(PORT_ATTRIBUTE, _metrics_server(target, port, bind_address))
    return metrics


def _check_switches(**flags: object) -> None:
    """Reject a switch that is not a bool (``use_prometheus(app, 9090)`` passes the port as one)."""
    for flag, value in flags.items():
        if not isinstance(value, bool):
            hint = " (the metrics port is keyword-only: port=...)" if flag == "measure_repository" else ""
            raise ConfigurationError(f"invalid {flag} {value!r}: must be True or False{hint}")


def _task_middleware(metrics: Metrics) -> MiddlewareFunc:
    """Measure each task run: lag, duration and outcome (2.x), and the 1.x ``tasks`` and staleness families."""

    async def prometheus_middleware(context: Context, call_next: NextFunc) -> None:
        label = _task_label(context)
        clock = context.app_context.clock
        started = clock.now()
        lag = max(0.0, (started - context.scheduled_at).total_seconds())
        metrics.start_lag.labels(label).observe(lag)
        metrics.legacy_staleness.labels(label).observe(lag)
        outcome = "failure"
        metrics.running.labels(label).inc()
        try:
            with metrics.legacy_tasks.measure([(label,)], lambda: clock.now().timestamp()):
                await call_next()
            outcome = "success"
        except LeaseLostException:
            outcome = "lease_lost"
            raise
        finally:
            metrics.running.labels(label).dec()
            metrics.run_duration.labels(label).observe((clock.now() - started).total_seconds())
            metrics.runs.labels(label, outcome).inc()

    return prometheus_middleware


def _policy_event_listener(metrics: Metrics) -> Callable[[events.Event], None]:
    def on_policy_event(event: events.Event) -> None:
        task = event.task
        label = task.template.name if task.template is not None else task.name
        metrics.policy_events.labels(label, _POLICY_EVENTS[type(event)]).inc(getattr(event, "count", 1))

    return on_policy_event


def _ticks_fixture(families: OperationFamilies) -> Callable[[PyncetteContext], AsyncIterator[None]]:
    """Measure each pass of the scheduler loop (its claims) for the 1.x ``ticks`` families."""

    async def prometheus_ticks(ctx: PyncetteContext) -> AsyncIterator[None]:
        claims = ctx._scheduler.claims
        tick = claims.tick

        async def measured_tick() -> datetime:
            with families.measure([()], time.perf_counter):
                return await tick()

        claims.tick = measured_tick  # type: ignore[method-assign]
        try:
            yield None
        finally:
            claims.tick = tick  # type: ignore[method-assign]

    return prometheus_ticks


def _metrics_server(
    registry: CollectorRegistry, port: int, bind_address: str | None
) -> Callable[[PyncetteContext], AsyncIterator[int]]:
    async def handle(method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"Method Not Allowed\n", headers=(("Allow", "GET, HEAD"),))
        return Response(200, generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    async def prometheus_fixture(ctx: PyncetteContext) -> AsyncIterator[int]:
        async with serve_http(handle, port=port, bind_address=bind_address, what="metrics") as bound:
            setattr(ctx, PORT_ATTRIBUTE, bound)
            logger.info("Prometheus metrics served on %s:%d/metrics", bind_address or "*", bound)
            yield bound

    return prometheus_fixture


__all__ = [
    "LEGACY_OPERATIONS",
    "InstrumentedRepository",
    "Metrics",
    "OperationFamilies",
    "metrics_for",
    "use_prometheus",
]
