"""Tasks, in three explicit kinds, and where each kind's record lives in storage.

* :class:`StaticTask` (``@app.task``): runs on its own schedule; one record, (``"t/static"``, ``"t"``).
* :class:`DynamicTask` (``@app.dynamic_task``, ``@app.partitioned_task``): a *template*. It never
  runs itself; it holds the body and the default options of its instances.
* :class:`Instance`: one concrete instance of a template, created at run time
  (``ctx.schedule_task``); its record is (``"d"``, ``"i"``), or (``"p/<shard>"``, ``"i"``) when the
  template is partitioned.

Task names may not contain ``/``, so these never collide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

from .abc import Record
from .errors import ConfigurationError, RecordDecodeError
from .modes import ExecutionMode, FailureMode
from .policies import Policies, pop_policies
from .schedule import (
    UTC,
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    Schedule,
    parse_timezone,
    timezone_name,
    to_utc,
)

MAX_TASK_NAME = 100
MAX_INSTANCE_NAME = 200
DEFAULT_LEASE = timedelta(seconds=60)
_SPEC_CACHE_SIZE = 4096

#: A task body: ``async def body(context) -> None`` (the context is a :class:`pyncette.Context`).
TaskBody = Callable[[Any], Awaitable[None]]
PartitionSelector = Callable[[int, str], int]

#: Keyword names no task argument may take: they name the task, its body or how it is declared.
RESERVED_ARGUMENTS = frozenset(
    {
        "name",
        "func",
        "dynamic",
        "parent_task",
        "template",
        "enabled",
        "force",
        "partition_count",
        "partition_selector",
        "enabled_partitions",
    }
)


def default_partition_selector(partition_count: int, instance_name: str) -> int:
    """The shard of an instance, as Pyncette 1.x computes it (so deployments keep their mapping).

    The SHA-1 digest of the name's UTF-8 bytes, read as a big-endian integer, times
    ``partition_count``, integer-divided by 2**160.
    """
    digest = hashlib.sha1(instance_name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest, "big") * partition_count >> 160


def validate_task_name(name: object) -> str:
    """A task name: 1 to 100 printable characters without ``/``."""
    if not isinstance(name, str) or not name or len(name) > MAX_TASK_NAME or "/" in name or not name.isprintable():
        raise ConfigurationError(
            f"invalid task name {name!r}: must be 1-{MAX_TASK_NAME} printable characters without '/'"
        )
    return name


def validate_instance_name(name: object) -> str:
    """An instance name: 1 to 200 characters of valid Unicode (no NUL, no lone surrogates), storable everywhere."""
    if isinstance(name, str) and 0 < len(name) <= MAX_INSTANCE_NAME and "\x00" not in name:
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    raise ConfigurationError(
        f"invalid instance name {name!r}: must be 1-{MAX_INSTANCE_NAME} characters of valid Unicode "
        "without NUL or lone surrogates"
    )


@lru_cache(maxsize=1024)
def _cron(expression: str, tz: tzinfo) -> CronSchedule:
    return CronSchedule(expression, tz)


def build_schedule(
    schedule: str | None, interval: timedelta | None, execute_at: datetime | None, timezone: str | None
) -> Schedule:
    """Validate that exactly one of ``schedule``, ``interval`` and ``execute_at`` is given and build it."""
    given = [
        k for k, v in (("schedule", schedule), ("interval", interval), ("execute_at", execute_at)) if v is not None
    ]
    if len(given) != 1:
        raise ConfigurationError(
            f"exactly one of schedule=, interval= or execute_at= is required, got {', '.join(given) or 'none'}"
        )
    if timezone is not None and schedule is None:
        raise ConfigurationError(f"timezone={timezone!r} is only allowed together with a cron schedule=")
    if schedule is not None:
        return _cron(schedule, parse_timezone(timezone))
    if interval is not None:
        return IntervalSchedule(interval)
    assert execute_at is not None
    return OnceSchedule(execute_at)


def _refuse_reserved(owner: object, args: dict[str, Any]) -> None:
    reserved = sorted(set(args) & RESERVED_ARGUMENTS)
    if reserved:
        raise ConfigurationError(f"argument {reserved[0]!r} is reserved (task {owner!r}); use another name")


def _check_arguments(owner: str, args: dict[str, Any]) -> None:
    _refuse_reserved(owner, args)
    try:
        json.dumps(args)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"arguments of task {owner!r} must be JSON-serializable: {exc}") from exc


def _combine(
    owner: str, policies: Policies, execution_mode: ExecutionMode, failure_mode: FailureMode, fast_forward: bool
) -> Policies:
    """The policies with the 1.x options folded in; a clear error where the two disagree."""
    if policies.retry is not None:
        if execution_mode is ExecutionMode.AT_MOST_ONCE:
            raise ConfigurationError(
                f"retry= is not allowed with AT_MOST_ONCE (task {owner!r}): its runs are never retried"
            )
        if failure_mode is not FailureMode.NONE:
            raise ConfigurationError(
                f"retry= replaces failure_mode= (task {owner!r}): give one of them, "
                f"not failure_mode={failure_mode.name}"
            )
    if fast_forward:
        if policies.coalesce not in ("all", "earliest"):
            raise ConfigurationError(
                f"fast_forward=True means coalesce='earliest' (task {owner!r}); it cannot be combined with "
                f"coalesce={policies.coalesce!r}"
            )
        return replace(policies, coalesce="earliest")
    return policies


class Task:
    """What every kind of task has: a body, a name, run options and the arguments its body receives.

    Attributes:
        func: the body.
        name: the task's name (an instance's name for instances).
        enabled: whether the loop polls it (may be switched off before the app runs).
        lease_duration, execution_mode, failure_mode, fast_forward: run options (Pyncette 1.x).
        policies: the execution policies (retry, timeout, catch-up, overlap, jitter; see
            :mod:`pyncette.policies`).
        cron, interval, execute_at, timezone: the schedule as given (``None`` where not given).
        extra_args: the other keyword arguments, as ``context.args``.
        schedule: the built schedule (``None`` for a template).
    """

    #: Whether this is a dynamic template or one of its instances (Pyncette 1.x's flag).
    dynamic = False
    schedule: Schedule | None

    def __init__(
        self,
        func: TaskBody,
        /,
        *,
        name: str,
        enabled: bool = True,
        schedule: str | None = None,
        interval: timedelta | None = None,
        execute_at: datetime | None = None,
        timezone: str | None = None,
        lease_duration: timedelta = DEFAULT_LEASE,
        execution_mode: ExecutionMode = ExecutionMode.AT_LEAST_ONCE,
        failure_mode: FailureMode = FailureMode.NONE,
        fast_forward: bool = False,
        **extra_args: Any,
    ) -> None:
        policies = pop_policies(extra_args)
        self.func = func
        self.name = name
        self.enabled = enabled
        if not isinstance(lease_duration, timedelta) or lease_duration <= timedelta(0):
            raise ConfigurationError(f"invalid lease_duration {lease_duration!r}: must be a positive timedelta")
        if not isinstance(execution_mode, ExecutionMode):
            raise ConfigurationError(f"invalid execution_mode {execution_mode!r}: use pyncette.ExecutionMode")
        if not isinstance(failure_mode, FailureMode):
            raise ConfigurationError(f"invalid failure_mode {failure_mode!r}: use pyncette.FailureMode")
        if execution_mode is ExecutionMode.AT_MOST_ONCE and failure_mode is not FailureMode.NONE:
            raise ConfigurationError(f"failure_mode={failure_mode.name} is not allowed with AT_MOST_ONCE; use NONE")
        self.lease_duration = lease_duration
        self.execution_mode = execution_mode
        self.failure_mode = failure_mode
        self.fast_forward = fast_forward
        self.policies = _combine(name, policies, execution_mode, failure_mode, fast_forward)
        self.cron, self.interval, self.execute_at, self.timezone = schedule, interval, execute_at, timezone
        _check_arguments(name, extra_args)
        self.extra_args = extra_args

    @property
    def template(self) -> DynamicTask | None:
        """The dynamic template of an instance (``None`` for static tasks and templates)."""
        return None

    @property
    def parent_task(self) -> DynamicTask | None:
        """Pyncette 1.x name of :attr:`template`."""
        return self.template

    @property
    def canonical_name(self) -> str:
        """``template:instance`` for instances, the task name otherwise."""
        return self.name

    @property
    def tz(self) -> tzinfo:
        """The time zone of the task's schedule (UTC unless a cron schedule has one)."""
        return self.schedule.tz if isinstance(self.schedule, CronSchedule) else UTC

    def storage_key(self) -> tuple[str, str]:
        """Where this task's record lives: (parent, name)."""
        raise ConfigurationError(f"{self!r} is a dynamic template: it has no record of its own")

    async def __call__(self, context: Any) -> None:
        await self.func(context)

    def __repr__(self) -> str:
        kind = "instance" if isinstance(self, Instance) else "dynamic task" if self.dynamic else "task"
        return f"<pyncette {kind} {self.canonical_name!r}>"


class StaticTask(Task):
    """A task that runs on its own schedule (``@app.task``)."""

    def __init__(self, func: TaskBody, /, *, name: str | None = None, **options: Any) -> None:
        if options.get("execute_at") is not None:
            raise ConfigurationError("execute_at= is only allowed on dynamic task instances (schedule_task)")
        super().__init__(func, name=validate_task_name(name if name is not None else _name_of(func)), **options)
        self.schedule = build_schedule(self.cron, self.interval, None, self.timezone)

    def storage_key(self) -> tuple[str, str]:
        return f"{self.name}/static", self.name


class DynamicTask(Task):
    """A template (``@app.dynamic_task``, ``@app.partitioned_task``): instances are made at run time.

    Its schedule options, if any, are the defaults of its instances. With ``partition_count``, the
    instances are spread over that many shards (each its own storage parent) by
    ``partition_selector(partition_count, instance_name)``; ``enabled_partitions`` limits the shards
    this process polls.
    """

    dynamic = True

    def __init__(
        self,
        func: TaskBody,
        /,
        *,
        name: str | None = None,
        partition_count: int | None = None,
        partition_selector: PartitionSelector = default_partition_selector,
        enabled_partitions: Iterable[int] | None = None,
        **options: Any,
    ) -> None:
        if options.get("execute_at") is not None:
            raise ConfigurationError("execute_at= is only allowed on dynamic task instances, not templates")
        super().__init__(func, name=validate_task_name(name if name is not None else _name_of(func)), **options)
        if self.cron is not None or self.interval is not None:
            build_schedule(self.cron, self.interval, None, self.timezone)  # validate the defaults early
        elif self.timezone is not None:
            parse_timezone(self.timezone)
        self.schedule = None
        self.partition_selector = partition_selector
        self.partition_count = partition_count
        self.enabled_partitions: list[int] | None = None
        if partition_count is None:
            if enabled_partitions is not None or partition_selector is not default_partition_selector:
                unused = "enabled_partitions" if enabled_partitions is not None else "partition_selector"
                raise ConfigurationError(
                    f"{unused}= needs partition_count= (task {self.name!r}); "
                    "use @app.partitioned_task(partition_count=...)"
                )
        else:
            if not isinstance(partition_count, int) or isinstance(partition_count, bool) or partition_count < 1:
                raise ConfigurationError(f"invalid partition_count {partition_count!r}: must be an integer >= 1")
            if enabled_partitions is not None:
                shards = list(enabled_partitions)
                bad = [p for p in shards if not isinstance(p, int) or not 0 <= p < partition_count]
                if bad:
                    raise ConfigurationError(
                        f"invalid enabled_partitions {bad!r}: each must be an integer in 0..{partition_count - 1}"
                    )
                self.enabled_partitions = sorted(set(shards))
        self._spec_cache: dict[str, Instance] = {}

    def parents(self) -> list[str]:
        """The storage parents this process polls (one per enabled partition)."""
        if self.partition_count is None:
            return [self.name]
        shards = self.enabled_partitions if self.enabled_partitions is not None else range(self.partition_count)
        return [f"{self.name}/{shard}" for shard in shards]

    def all_parents(self) -> list[str]:
        """Every storage parent of this template, enabled partitions or not."""
        if self.partition_count is None:
            return [self.name]
        return [f"{self.name}/{shard}" for shard in range(self.partition_count)]

    def instance_key(self, instance_name: str) -> tuple[str, str]:
        """Where the record of the instance ``instance_name`` lives: (parent, name)."""
        validate_instance_name(instance_name)
        if self.partition_count is None:
            return self.name, instance_name
        shard = self.partition_selector(self.partition_count, instance_name)
        return f"{self.name}/{shard}", instance_name

    def instantiate(self, name: str, /, **options: Any) -> Instance:
        """A concrete instance; ``options`` override the template's (schedule, run options, arguments)."""
        _refuse_reserved(name, options)
        merged: dict[str, Any] = {
            "lease_duration": self.lease_duration,
            "execution_mode": self.execution_mode,
            "failure_mode": self.failure_mode,
            "fast_forward": self.fast_forward,
            **self.policy_options(),
            **self.extra_args,
        }
        has_schedule = any(options.get(k) is not None for k in ("schedule", "interval", "execute_at"))
        if not has_schedule:
            merged.update(schedule=self.cron, interval=self.interval, timezone=self.timezone)
        elif options.get("schedule") is not None and "timezone" not in options:
            merged["timezone"] = self.timezone
        retry = options.get("retry")
        own = self.policies.retry
        if (
            retry is not None
            and own is not None
            and getattr(retry, "retry_on", None) not in ((Exception,), own.retry_on)
        ):
            raise ConfigurationError(
                f"retry_on cannot be set per instance (instance {name!r} of {self.name!r}): it is not stored; "
                "set it on the template"
            )
        merged.update(options)
        return Instance(self, name, **merged)

    def policy_options(self) -> dict[str, Any]:
        """The template's policies as the keyword options its instances inherit."""
        options = self.policies.options()
        if self.fast_forward and options["coalesce"] == "earliest":
            options["coalesce"] = "all"  # inherited as fast_forward=True, which implies it
        return options

    def from_record(self, record: Record) -> Instance:
        """The instance a stored record of this template describes; :class:`RecordDecodeError` when the record
        cannot be decoded (the backend marked it corrupt, it has no spec, or its spec is unreadable)."""
        if record.corrupt:
            raise RecordDecodeError(f"record {record.parent}/{record.name} cannot be decoded: {record.corrupt}")
        if record.spec is None:
            raise RecordDecodeError(f"record {record.parent}/{record.name} of a dynamic task has no spec")
        return self.from_spec(record.name, record.spec)

    def from_spec(self, name: str, spec: str) -> Instance:
        """Rebuild an instance from its stored JSON; :class:`RecordDecodeError` if it cannot be decoded.

        Instances with the same spec differ only by name, so the parsed instance is cached per spec
        and copied: decoding is on the hot path of every dynamic run.
        """
        cache = self._spec_cache
        prototype = cache.get(spec)
        if prototype is None:
            prototype = self._parse_spec(name, spec)
            if len(cache) >= _SPEC_CACHE_SIZE:
                cache.clear()
            cache[spec] = prototype
        return prototype.renamed(name)

    def _parse_spec(self, name: str, spec: str) -> Instance:
        try:
            data = json.loads(spec)
            options: dict[str, Any] = {
                "lease_duration": timedelta(seconds=data["lease"]),
                "execution_mode": ExecutionMode[data["mode"]],
                "failure_mode": FailureMode[data["failure"]],
                "fast_forward": bool(data.get("ff", False)),
                **data["args"],
            }
            if "p" in data:
                own = self.policies.retry
                policies = Policies.from_json(data["p"], own.retry_on if own is not None else (Exception,))
                options.update(policies.options())
            if "cron" in data:
                options.update(schedule=data["cron"], timezone=data.get("tz"))
            elif "interval" in data:
                options["interval"] = timedelta(seconds=data["interval"])
            else:
                options["execute_at"] = datetime.fromisoformat(data["at"])
            return Instance(self, name, **options)
        except Exception as exc:
            raise RecordDecodeError(f"cannot decode stored instance {name!r} of {self.name!r}: {exc}") from exc


class Instance(Task):
    """One concrete instance of a :class:`DynamicTask`."""

    dynamic = True

    def __init__(self, template: DynamicTask, name: str, /, **options: Any) -> None:
        _refuse_reserved(name, options)
        super().__init__(template.func, name=validate_instance_name(name), **options)
        self._template = template
        self.schedule = build_schedule(self.cron, self.interval, self.execute_at, self.timezone)

    @property
    def template(self) -> DynamicTask:
        return self._template

    @property
    def canonical_name(self) -> str:
        return f"{self._template.name}:{self.name}"

    def storage_key(self) -> tuple[str, str]:
        return self._template.instance_key(self.name)

    def renamed(self, name: str) -> Instance:
        """A copy under another (already validated) name; the cheap way to make many alike instances."""
        instance = object.__new__(Instance)
        instance.__dict__.update(self.__dict__)  # copy.copy without its generic protocol overhead
        instance.name = name
        return instance

    def to_spec(self) -> str:
        """The JSON stored for this instance."""
        spec: dict[str, Any] = {
            "lease": self.lease_duration.total_seconds(),
            "mode": self.execution_mode.name,
            "failure": self.failure_mode.name,
            "args": self.extra_args,
        }
        if self.fast_forward:
            spec["ff"] = True
        policies = self.policies.to_json()
        if policies:
            if self.fast_forward and policies.get("coalesce") == "earliest":
                del policies["coalesce"]  # implied by "ff"
            if policies:
                spec["p"] = policies
        if self.cron is not None:
            spec["cron"] = self.cron
            if self.timezone is not None:
                spec["tz"] = timezone_name(parse_timezone(self.timezone))
        elif self.interval is not None:
            spec["interval"] = self.interval.total_seconds()
        elif self.execute_at is not None:
            spec["at"] = to_utc(self.execute_at).isoformat()
        return json.dumps(spec, separators=(",", ":"))


def _name_of(func: object) -> object:
    return getattr(func, "__name__", None)


__all__ = ["DynamicTask", "Instance", "StaticTask", "Task", "default_partition_selector"]
