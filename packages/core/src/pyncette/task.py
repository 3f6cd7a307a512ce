"""Tasks: static tasks, dynamic templates and their instances, and how they map to stored records.

Storage layout (``parent``, ``name``) of each kind of task:

* static task ``t``: (``"t/static"``, ``"t"``)
* instance ``i`` of dynamic template ``d``: (``"d"``, ``"i"``)
* instance ``i`` of partitioned template ``p``: (``"p/<shard>"``, ``"i"``)

Task names may not contain ``/``, so these never collide.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any

from .errors import ConfigurationError, RecordDecodeError
from .model import ExecutionMode, FailureMode, TaskFunc
from .schedule import (
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

PartitionSelector = Callable[[int, str], int]


def default_partition_selector(partition_count: int, instance_name: str) -> int:
    """Stable shard of an instance: SHA-1 of its name modulo the partition count."""
    digest = hashlib.sha1(instance_name.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % partition_count


def validate_task_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_TASK_NAME or "/" in name or not name.isprintable():
        raise ConfigurationError(
            f"invalid task name {name!r}: must be 1-{MAX_TASK_NAME} printable characters without '/'"
        )
    return name


def validate_instance_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_INSTANCE_NAME or "\x00" in name:
        raise ConfigurationError(
            f"invalid instance name {name!r}: must be a non-empty string of at most {MAX_INSTANCE_NAME} "
            "characters without NUL"
        )
    return name


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


def _check_json(name: str, args: dict[str, Any]) -> None:
    try:
        json.dumps(args)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"arguments of task {name!r} must be JSON-serializable: {exc}") from exc


class Task:
    """A task: its body, schedule and options.

    Returned by the ``@app.task``, ``@app.dynamic_task`` and
    ``@app.partitioned_task`` decorators. A dynamic task is a *template*;
    :meth:`instantiate` (or ``ctx.schedule_task``) makes concrete instances.
    """

    def __init__(
        self,
        func: TaskFunc,
        *,
        name: str | None = None,
        dynamic: bool = False,
        parent_task: Task | None = None,
        schedule: str | None = None,
        interval: timedelta | None = None,
        execute_at: datetime | None = None,
        timezone: str | None = None,
        enabled: bool = True,
        lease_duration: timedelta = DEFAULT_LEASE,
        execution_mode: ExecutionMode = ExecutionMode.AT_LEAST_ONCE,
        failure_mode: FailureMode = FailureMode.NONE,
        fast_forward: bool = False,
        partition_count: int | None = None,
        partition_selector: PartitionSelector = default_partition_selector,
        enabled_partitions: Iterable[int] | None = None,
        **extra_args: Any,
    ) -> None:
        self.func = func
        self.parent_task = parent_task
        if parent_task is None:
            self.name = validate_task_name(name if name is not None else getattr(func, "__name__", None))
        else:
            self.name = validate_instance_name(name)
        self.dynamic = dynamic
        self.enabled = enabled
        if not isinstance(lease_duration, timedelta) or lease_duration <= timedelta(0):
            raise ConfigurationError(f"invalid lease_duration {lease_duration!r}: must be a positive timedelta")
        self.lease_duration = lease_duration
        if not isinstance(execution_mode, ExecutionMode):
            raise ConfigurationError(f"invalid execution_mode {execution_mode!r}: use pyncette.ExecutionMode")
        if not isinstance(failure_mode, FailureMode):
            raise ConfigurationError(f"invalid failure_mode {failure_mode!r}: use pyncette.FailureMode")
        if execution_mode is ExecutionMode.AT_MOST_ONCE and failure_mode is not FailureMode.NONE:
            raise ConfigurationError(f"failure_mode={failure_mode.name} is not allowed with AT_MOST_ONCE; use NONE")
        self.execution_mode = execution_mode
        self.failure_mode = failure_mode
        self.fast_forward = fast_forward
        self.cron = schedule
        self.interval = interval
        self.execute_at = execute_at
        self.timezone = timezone
        _check_json(self.name, extra_args)
        self.extra_args = extra_args
        self.partition_selector = partition_selector
        self._spec_cache: dict[str, Task] = {}
        self.partition_count = partition_count
        self.enabled_partitions: list[int] | None = None
        if partition_count is not None:
            if not isinstance(partition_count, int) or partition_count < 1:
                raise ConfigurationError(f"invalid partition_count {partition_count!r}: must be an integer >= 1")
            if enabled_partitions is not None:
                shards = list(enabled_partitions)
                bad = [p for p in shards if not isinstance(p, int) or not 0 <= p < partition_count]
                if bad:
                    raise ConfigurationError(
                        f"invalid enabled_partitions {bad!r}: each must be an integer in 0..{partition_count - 1}"
                    )
                self.enabled_partitions = sorted(set(shards))
        if dynamic:
            if execute_at is not None:
                raise ConfigurationError("execute_at= is only allowed on dynamic task instances, not templates")
            if schedule is not None or interval is not None:
                build_schedule(schedule, interval, None, timezone)  # validate the template's defaults early
            elif timezone is not None:
                parse_timezone(timezone)
            self.schedule: Schedule | None = None
        else:
            if execute_at is not None and parent_task is None:
                raise ConfigurationError("execute_at= is only allowed on dynamic task instances (schedule_task)")
            self.schedule = build_schedule(schedule, interval, execute_at, timezone)

    # -- identity ------------------------------------------------------------------------------------

    @property
    def template(self) -> Task | None:
        """The dynamic template of an instance (``None`` for static tasks and templates)."""
        return self.parent_task

    @property
    def canonical_name(self) -> str:
        """``template:instance`` for instances, the task name otherwise."""
        return f"{self.parent_task.name}:{self.name}" if self.parent_task else self.name

    @property
    def tz(self) -> tzinfo:
        return self.schedule.tz if isinstance(self.schedule, CronSchedule) else parse_timezone(None)

    def parents(self) -> list[str]:
        """The storage parents this template polls (one per enabled partition)."""
        if self.partition_count is None:
            return [self.name]
        shards = self.enabled_partitions if self.enabled_partitions is not None else range(self.partition_count)
        return [f"{self.name}/{shard}" for shard in shards]

    def storage_key(self) -> tuple[str, str]:
        """Where this task's record lives: (parent, name)."""
        if self.parent_task is None:
            return f"{self.name}/static", self.name
        return self.parent_task.instance_key(self.name)

    def instance_key(self, instance_name: str) -> tuple[str, str]:
        """Where the record of this template's instance ``instance_name`` lives: (parent, name)."""
        validate_instance_name(instance_name)
        if self.partition_count is None:
            return self.name, instance_name
        shard = self.partition_selector(self.partition_count, instance_name)
        return f"{self.name}/{shard}", instance_name

    # -- calling -------------------------------------------------------------------------------------

    async def __call__(self, context: Any) -> None:
        await self.func(context)

    def __repr__(self) -> str:
        kind = "instance" if self.parent_task else "dynamic task" if self.dynamic else "task"
        return f"<pyncette {kind} {self.canonical_name!r}>"

    # -- instances ----------------------------------------------------------------------------------

    def instantiate(self, name: str, **options: Any) -> Task:
        """A concrete instance of this dynamic template; options override the template's."""
        if not self.dynamic:
            raise ConfigurationError(f"{self!r} is not a dynamic task; only dynamic tasks have instances")
        merged: dict[str, Any] = {
            "lease_duration": self.lease_duration,
            "execution_mode": self.execution_mode,
            "failure_mode": self.failure_mode,
            "fast_forward": self.fast_forward,
            **self.extra_args,
        }
        has_schedule = any(options.get(k) is not None for k in ("schedule", "interval", "execute_at"))
        if not has_schedule:
            merged.update(schedule=self.cron, interval=self.interval, timezone=self.timezone)
        elif options.get("schedule") is not None and "timezone" not in options:
            merged["timezone"] = self.timezone
        merged.update(options)
        return Task(self.func, name=name, parent_task=self, **merged)

    def to_spec(self) -> str:
        """The JSON stored for an instance."""
        spec: dict[str, Any] = {
            "lease": self.lease_duration.total_seconds(),
            "mode": self.execution_mode.name,
            "failure": self.failure_mode.name,
            "args": self.extra_args,
        }
        if self.fast_forward:
            spec["ff"] = True
        if self.cron is not None:
            spec["cron"] = self.cron
            if self.timezone is not None:
                spec["tz"] = timezone_name(parse_timezone(self.timezone))
        elif self.interval is not None:
            spec["interval"] = self.interval.total_seconds()
        elif self.execute_at is not None:
            spec["at"] = to_utc(self.execute_at).isoformat()
        return json.dumps(spec, separators=(",", ":"))

    def from_spec(self, name: str, spec: str) -> Task:
        """Rebuild an instance of this template from stored JSON; :class:`RecordDecodeError` if it is bad.

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
        instance = object.__new__(Task)
        instance.__dict__.update(prototype.__dict__)  # copy.copy without its generic protocol overhead
        instance.name = name
        return instance

    def _parse_spec(self, name: str, spec: str) -> Task:
        try:
            data = json.loads(spec)
            options: dict[str, Any] = {
                "lease_duration": timedelta(seconds=data["lease"]),
                "execution_mode": ExecutionMode[data["mode"]],
                "failure_mode": FailureMode[data["failure"]],
                "fast_forward": bool(data.get("ff", False)),
                **data["args"],
            }
            if "cron" in data:
                options.update(schedule=data["cron"], timezone=data.get("tz"))
            elif "interval" in data:
                options["interval"] = timedelta(seconds=data["interval"])
            else:
                options["execute_at"] = datetime.fromisoformat(data["at"])
            return Task(self.func, name=name, parent_task=self, **options)
        except Exception as exc:
            raise RecordDecodeError(f"cannot decode stored instance {name!r} of {self.name!r}: {exc}") from exc


__all__ = ["Task", "default_partition_selector"]
