"""Schedules: cron expressions, fixed intervals and once-off times, and how they meet time zones.

Cron expressions are evaluated on the *wall clock* of the task's time zone
(UTC when none is given). Daylight-saving transitions are handled like this:

* A wall-clock time that does not exist (spring forward) runs once, at the
  first instant after the gap. Several schedule points inside one gap run
  once in total, since they all fall on that instant.
* A wall-clock time that occurs twice (fall back) runs once, at its first
  occurrence. A schedule that fires every few minutes therefore pauses
  during the repeated hour; use UTC or an ``interval`` for strictly periodic
  work.

Intervals are absolute durations and ignore time zones entirely.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter

from .errors import ConfigurationError

UTC = timezone.utc
#: The latest instant any schedule may produce: every backend stores times up to the end of year 9999.
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def parse_timezone(value: str | tzinfo | None) -> tzinfo:
    """Turn ``'Europe/Dublin'``, ``'UTC'``, ``'UTC+12'``, ``'+05:30'`` or a ``tzinfo`` into a ``tzinfo``."""
    if value is None:
        return UTC
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"invalid timezone {value!r}: expected an IANA name like 'Europe/Dublin' or an offset")
    text = value.strip()
    if text.upper() in ("UTC", "GMT", "Z"):
        return UTC
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.group(1), int(match.group(2)), int(match.group(3) or 0)
        if minutes >= 60 or hours * 60 + minutes > 14 * 60:
            raise ConfigurationError(f"invalid timezone offset {value!r}: must lie between -14:00 and +14:00")
        offset = timedelta(hours=hours, minutes=minutes)
        return timezone(-offset if sign == "-" else offset)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"unknown timezone {value!r}: expected an IANA name like 'Europe/Dublin', 'UTC', "
            "or a fixed offset like 'UTC+12' or '+05:30'"
        ) from exc


def timezone_name(tz: tzinfo) -> str:
    """A string :func:`parse_timezone` turns back into ``tz``."""
    if isinstance(tz, ZoneInfo):
        return tz.key
    offset = tz.utcoffset(None)
    if offset is None or offset == timedelta(0):
        return "UTC"
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def to_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; a naive value is taken as local time (as Pyncette 1.x did)."""
    return moment.astimezone(UTC)


class Schedule(ABC):
    """When a task runs: yields the next run strictly after a given instant."""

    @abstractmethod
    def next_after(self, moment: datetime) -> datetime | None:
        """The first run strictly after ``moment`` (aware UTC), or ``None`` when there is none."""

    @abstractmethod
    def first(self, now: datetime) -> datetime:
        """The first run of a task first seen at ``now``."""

    def fast_forward(self, scheduled_at: datetime, now: datetime) -> datetime | None:
        """The next run after a run scheduled at ``scheduled_at`` that skips everything before ``now``."""
        return self.next_after(max(scheduled_at, now))


class InvalidCronExpression(ConfigurationError, CroniterBadCronError):  # type: ignore[misc]  # croniter is untyped
    """A cron expression that is not allowed: a :class:`~pyncette.errors.ConfigurationError` that is also
    croniter's ``CroniterBadCronError``, which Pyncette 1.x raised (code written for 1.x may catch it)."""


class CronSchedule(Schedule):
    """A cron expression (5 fields, or 6 with seconds last) on the wall clock of ``tz``."""

    def __init__(self, expression: str, tz: tzinfo = UTC) -> None:
        if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
            raise InvalidCronExpression(
                f"invalid cron expression {expression!r}: expected 5 fields (minute hour day month weekday) "
                "or 6 with seconds last"
            )
        try:
            croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
        except Exception as exc:  # croniter raises several unrelated types
            raise InvalidCronExpression(f"invalid cron expression {expression!r}: {exc}") from exc
        self.expression = expression
        self.tz = tz

    def first(self, now: datetime) -> datetime:
        nxt = self.next_after(now)
        assert nxt is not None
        return nxt

    def _resolve(self, wall: datetime) -> datetime:
        """The instant a wall-clock time stands for: its first occurrence, or the end of the gap it falls in."""
        candidate = wall.replace(tzinfo=self.tz, fold=0)
        instant = candidate.astimezone(UTC)
        if instant.astimezone(self.tz).replace(tzinfo=None) == wall:
            return instant
        # ``wall`` falls in a gap. With fold=0 the pre-transition offset is used, which lands after the
        # transition; with fold=1 the post-transition offset lands before it. Bisect for the transition.
        before = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        after = instant
        offset_before = before.astimezone(self.tz).utcoffset()
        while after - before > timedelta(seconds=1):
            middle = before + (after - before) / 2
            if middle.astimezone(self.tz).utcoffset() == offset_before:
                before = middle
            else:
                after = middle
        return after.replace(microsecond=0) if after.microsecond else after

    def next_after(self, moment: datetime) -> datetime:
        # Wall times of a repeated hour resolve to their first pass; when ``moment`` is in the second
        # pass they resolve to instants before it and are skipped below.
        wall = moment.astimezone(self.tz).replace(tzinfo=None)
        iterator = croniter(self.expression, wall)
        while True:
            candidate = self._resolve(iterator.get_next(datetime))
            if candidate > moment:
                return candidate

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {timezone_name(self.tz)!r})"


class IntervalSchedule(Schedule):
    """Every ``interval``, counted from the time the task was first seen."""

    def __init__(self, interval: timedelta) -> None:
        if not isinstance(interval, timedelta) or interval <= timedelta(0):
            raise ConfigurationError(f"invalid interval {interval!r}: must be a positive timedelta")
        self.interval = interval
        self.first(datetime.now(UTC))

    def first(self, now: datetime) -> datetime:
        if self.interval > LATEST - now:
            raise ConfigurationError(
                f"invalid interval {self.interval!r}: the first run would be after 9999-12-31, "
                "the latest time every backend can store"
            )
        return now + self.interval

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval

    def fast_forward(self, scheduled_at: datetime, now: datetime) -> datetime:
        if scheduled_at + self.interval > now:
            return scheduled_at + self.interval
        skipped = (now - scheduled_at) // self.interval
        return scheduled_at + (skipped + 1) * self.interval

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.interval!r})"


class OnceSchedule(Schedule):
    """A single run at ``execute_at`` (immediately when it is in the past)."""

    def __init__(self, execute_at: datetime) -> None:
        if not isinstance(execute_at, datetime):
            raise ConfigurationError(f"invalid execute_at {execute_at!r}: must be a datetime")
        try:
            self.execute_at = to_utc(execute_at)
            representable = self.execute_at <= LATEST
        except OverflowError:
            representable = False
        if not representable:
            raise ConfigurationError(
                f"invalid execute_at {execute_at!r}: after 9999-12-31 in UTC, the latest time every backend can store"
            )

    def first(self, now: datetime) -> datetime:
        return self.execute_at

    def next_after(self, moment: datetime) -> None:
        return None

    def fast_forward(self, scheduled_at: datetime, now: datetime) -> None:
        return None

    def __repr__(self) -> str:
        return f"OnceSchedule({self.execute_at.isoformat()!r})"


__all__ = [
    "CronSchedule",
    "IntervalSchedule",
    "InvalidCronExpression",
    "OnceSchedule",
    "Schedule",
    "parse_timezone",
    "timezone_name",
    "to_utc",
]
