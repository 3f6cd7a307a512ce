"""What the pages show, as JSON-ready data, read through :class:`~pyncette.PyncetteContext` and the public
:class:`~pyncette.abc.Repository` contract only (``get``, ``list_page``, ``pauses``).

Nothing here counts or scans a whole template: instance lists are keyset pages (``list_page``), and what
needs a scan (failing counts, the problems view) reads a bounded slice per request and says how far it got.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from pyncette import PyncetteContext
from pyncette.abc import Backend, PauseRule, Record
from pyncette.errors import ConfigurationError
from pyncette.model import HistoryEntry, Pause, TaskState
from pyncette.redaction import MASK, is_secret_name, redact
from pyncette.schedule import parse_timezone, timezone_name
from pyncette.task import DynamicTask, Instance, StaticTask, Task

from ._words import schedule_words

UTC = timezone.utc
#: Outcomes that count as failing.
FAILED_OUTCOMES = frozenset({"failed", "timed_out"})
#: A run not started this long after its time (and not paused) is reported late in the problems view.
LATE_AFTER = timedelta(minutes=1)


class BadValue(ValueError):
    """A request value that cannot be used: answered with a 4xx naming the parameter and the value."""

    def __init__(self, parameter: str, value: object, reason: str, status: int = 400) -> None:
        super().__init__(f"invalid {parameter} {_show(value)}: {reason}")
        self.parameter = parameter
        self.value = value
        self.status = status


class NotFound(BadValue):
    """An unknown task or instance."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        super().__init__(parameter, value, reason, status=404)
        self.args = (f"unknown {parameter} {_show(value)}: {reason}",)


def _show(value: object) -> str:
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


# -- plain values ----------------------------------------------------------------------------------------


def moment(value: datetime | None, tz: tzinfo) -> dict[str, str] | None:
    """A time in UTC and in the task's zone."""
    if value is None:
        return None
    return {"utc": value.astimezone(UTC).isoformat(), "local": value.astimezone(tz).isoformat()}


def safe_args(args: dict[str, Any]) -> dict[str, Any]:
    """Task arguments as shown: values of secret-looking keys masked, secrets in text redacted."""
    shown: dict[str, Any] = {}
    for key, value in args.items():
        if is_secret_name(key):
            shown[key] = MASK
        elif isinstance(value, dict):
            shown[key] = safe_args(value)
        else:
            shown[key] = json.loads(redact(json.dumps(value)))
    return shown


def safe_text(text: str | None) -> str | None:
    return None if text is None else redact(text)


def schedule_info(task: Task) -> dict[str, Any]:
    """The schedule as given, in words and as the cron, interval or time."""
    return {
        "words": schedule_words(task),
        "cron": task.cron,
        "interval_seconds": task.interval.total_seconds() if task.interval is not None else None,
        "execute_at": task.execute_at.astimezone(UTC).isoformat() if task.execute_at is not None else None,
        "timezone": zone_name(task),
    }


def zone_name(task: Task) -> str:
    """The time zone of a task's cron schedule (a template's default for its instances), else UTC."""
    if task.cron is None and task.timezone is None:
        return "UTC"
    return timezone_name(parse_timezone(task.timezone) if task.schedule is None else task.tz)


def task_info(task: StaticTask | DynamicTask) -> dict[str, Any]:
    """A static task or template as declared in the code."""
    kind = "static" if isinstance(task, StaticTask) else "partitioned" if task.partition_count else "dynamic"
    return {
        "name": task.name,
        "kind": kind,
        "partitions": task.partition_count if isinstance(task, DynamicTask) else None,
        "enabled": task.enabled,
        "schedule": schedule_info(task) if task.cron or task.interval else None,
        "timezone": zone_name(task),
        "lease_seconds": task.lease_duration.total_seconds(),
        "execution_mode": task.execution_mode.name,
        "policies": task.policies.to_json(),
        "history": task.policies.history,
        "args": safe_args(task.extra_args),
    }


def pause_info(pause: Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {
        "scope": pause.scope,
        "match": pause.match,
        "note": safe_text(pause.note),
        "by": pause.by,
        "at": pause.at.isoformat() if pause.at else None,
    }


def failing(state: TaskState) -> bool:
    """The last run failed, or a retry is pending."""
    return state.last_outcome in FAILED_OUTCOMES or state.attempt > 1


def lateness(state: TaskState, now: datetime) -> float:
    """Seconds the next run is overdue (0 when not due yet or running)."""
    if state.locked_until is not None and state.locked_until > now:
        return 0.0
    return max(0.0, (now - state.scheduled_at).total_seconds())


def state_info(state: TaskState, now: datetime) -> dict[str, Any]:
    """A static task's or an instance's stored state."""
    task, tz = state.task, state.task.tz
    lease = None
    if state.locked_until is not None:
        lease = "held" if state.locked_until > now else "expired"
    return {
        "instance": task.name if isinstance(task, Instance) else None,
        "schedule": schedule_info(task),
        "next_run": moment(state.scheduled_at, tz),
        "lease": lease,
        "locked_until": moment(state.locked_until, tz),
        "locked_by": state.locked_by,
        "attempt": state.attempt,
        "last_outcome": state.last_outcome,
        "last_started": moment(state.last_started, tz),
        "last_finished": moment(state.last_finished, tz),
        "last_error": safe_text(state.last_error),
        "failing": failing(state),
        "lateness_seconds": lateness(state, now),
        "args": safe_args(task.extra_args) if isinstance(task, Instance) else None,
    }


def history_info(entries: Sequence[HistoryEntry], tz: tzinfo) -> list[dict[str, Any]]:
    return [
        {
            "scheduled_at": moment(e.scheduled_at, tz),
            "started_at": moment(e.started_at, tz),
            "finished_at": moment(e.finished_at, tz),
            "seconds": (e.finished_at - e.started_at).total_seconds(),
            "outcome": e.outcome,
            "attempt": e.attempt,
            "process": e.process,
            "error": safe_text(e.error),
        }
        for e in entries
    ]


def decode_record(template: DynamicTask, record: Record) -> TaskState:
    """An instance's record as a state; :class:`RecordDecodeError` when it cannot be decoded."""
    return TaskState.from_record(template.from_record(record), record)


def undecodable_info(record: Record, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "instance": record.name,
        "undecodable": safe_text(reason),
        "next_run": moment(record.scheduled_at, UTC),
        "locked_until": moment(record.locked_until, UTC),
        "locked_by": record.locked_by,
    }


def backend_info(ctx: PyncetteContext) -> dict[str, Any]:
    """The backend's name, capabilities and options, every secret masked."""
    app = ctx.app
    factory, capabilities = app.resolve_backend()
    options: dict[str, str] = {}
    for key, value in sorted(app.backend_options.items()):
        declared = factory.options.get(key) if isinstance(factory, Backend) else None
        if value is None:
            continue
        if (declared is not None and declared.secret) or is_secret_name(key.split("_", 1)[-1]):
            options[key] = MASK
        else:
            options[key] = redact(str(value))
    return {
        "name": str(getattr(factory, "name", type(factory).__name__)),
        "capabilities": capabilities.describe(),
        "options": options,
    }


# -- continuation tokens ---------------------------------------------------------------------------------


def encode_token(kind: str, owner: str, *position: Any) -> str:
    """An opaque, URL-safe page marker (the backend's own continuation inside)."""
    raw = json.dumps([kind, owner, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, kind: str, owner: str, parameter: str = "continuation") -> list[Any]:
    """The position in a token made by :func:`encode_token` for ``kind`` and ``owner``; :class:`BadValue` else."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        raise BadValue(parameter, token, "not a token this dashboard made (start from the first page)") from None
    if not isinstance(data, list) or len(data) < 2 or data[0] != kind or data[1] != owner:
        raise BadValue(parameter, token, f"not a {kind} token of {owner!r} (start from the first page)")
    return data[2:]


# -- templates: keyset pages and bounded scans -------------------------------------------------------------


async def read_records(
    ctx: PyncetteContext, template: DynamicTask, position: str | None, limit: int
) -> tuple[list[Record], str | None]:
    """Up to ``limit`` records of ``template`` from ``position`` (a :meth:`PyncetteContext.list_records` token;
    ``None``: the start), and where the next read starts (``None``: the template is exhausted)."""
    try:
        return await ctx.list_records(template, limit, position)
    except ConfigurationError:
        raise BadValue("continuation", position, "position out of range (start from the first page)") from None


async def pause_rules(ctx: PyncetteContext, template: DynamicTask) -> dict[str, list[PauseRule]]:
    """The stored pause rules of every parent of ``template`` (empty without the control capability)."""
    rules: dict[str, list[PauseRule]] = {}
    for parent in template.all_parents():
        try:
            rules[parent] = await ctx.repository.pauses(parent)
        except NotImplementedError:
            rules[parent] = []
    return rules


def held(rules: dict[str, list[PauseRule]], record: Record) -> str | None:
    """How the record is paused: ``"instance"`` (its own pause), ``"prefix"``, ``"task"``; ``None`` when not."""
    matching = [rule for rule in rules.get(record.parent, []) if rule.matches(record.name)]
    if not matching:
        return None
    if any(not rule.prefix for rule in matching):
        return "instance"
    return "task" if any(rule.match == "" for rule in matching) else "prefix"


def find_task(ctx: PyncetteContext, name: str) -> StaticTask | DynamicTask:
    for task in ctx.description.static_tasks:
        if task.name == name:
            return task
    for template in ctx.description.templates:
        if template.name == name:
            return template
    raise NotFound("task", name, "not a task of this app")


def find_template(ctx: PyncetteContext, name: str) -> DynamicTask:
    task = find_task(ctx, name)
    if not isinstance(task, DynamicTask):
        raise BadValue("task", name, "a static task has no instances")
    return task


def all_tasks(ctx: PyncetteContext) -> list[StaticTask | DynamicTask]:
    return [*ctx.description.static_tasks, *ctx.description.templates]


def check_config(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"invalid {name} {value!r}: must be an integer >= 1")


__all__ = [
    "BadValue",
    "NotFound",
    "all_tasks",
    "backend_info",
    "decode_record",
    "decode_token",
    "encode_token",
    "find_task",
    "find_template",
    "history_info",
    "moment",
    "pause_info",
    "read_records",
    "state_info",
    "task_info",
]
