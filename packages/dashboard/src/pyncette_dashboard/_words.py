"""Schedules in words: ``"*/5 * * * *"`` -> ``"every 5 minutes"``; the exact cron is always shown beside it."""

from __future__ import annotations

from datetime import datetime, timedelta

from pyncette.task import Task

_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
_DAY_NAMES = {name[:3].lower(): index for index, name in enumerate(_DAYS)}
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip


def duration_words(delta: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1 hour 30 minutes"``."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:g} milliseconds"
    parts: list[str] = []
    remaining = int(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count} {unit}" + ("s" if count != 1 else ""))
    fraction = seconds - int(seconds)
    if fraction:
        parts.append(f"{fraction * 1000:g} milliseconds")
    return " ".join(parts)


def _every(step: str, unit: str) -> str:
    return f"every {unit}" if step == "1" else f"every {step} {unit}s"


def _number(field: str) -> int | None:
    return int(field) if field.isdigit() else None


def _weekdays(field: str) -> str | None:
    """``mon-fri`` -> ``"Monday to Friday"``; ``1,3`` -> ``"Monday and Wednesday"``; None when not simple."""

    def day(text: str) -> int | None:
        text = text.lower()
        if text.isdigit() and int(text) <= 7:
            return int(text) % 7
        return _DAY_NAMES.get(text)

    if "-" in field and "," not in field and "/" not in field:
        first, _, last = field.partition("-")
        a, b = day(first), day(last)
        return None if a is None or b is None else f"{_DAYS[a]} to {_DAYS[b]}"
    days = [day(part) for part in field.split(",")]
    if any(d is None for d in days):
        return None
    names = [_DAYS[d] for d in days if d is not None]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def cron_words(expression: str) -> str:
    """Common cron shapes in words; anything else as ``"cron schedule"`` (the expression is shown beside it)."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return "cron schedule"
    minute, hour, day, month, weekday = fields[:5]
    second = fields[5] if len(fields) == 6 else "0"
    every_day = day == "*" and month == "*" and weekday == "*"
    if every_day and minute == "*" and hour == "*":
        if second == "*":
            return "every second"
        if second.startswith("*/"):
            return _every(second[2:], "second")
        if second == "0":
            return "every minute"
        if (s := _number(second)) is not None:
            return f"every minute at second {s}"
    if every_day and hour == "*" and second == "0":
        if minute.startswith("*/"):
            return _every(minute[2:], "minute")
        if (m := _number(minute)) is not None:
            return f"every hour at minute {m}"
    if hour.startswith("*/") and (m := _number(minute)) is not None and second == "0" and every_day:
        return _every(hour[2:], "hour") + (f" at minute {m}" if m else "")
    h, m, s = _number(hour), _number(minute), _number(second)
    if h is None or m is None or s is None:
        return "cron schedule"
    clock = f"{h:02d}:{m:02d}" + (f":{s:02d}" if s else "")
    if every_day:
        return f"every day at {clock}"
    if day == "*" and month == "*" and (days := _weekdays(weekday)) is not None:
        return f"every {days} at {clock}"
    if (d := _number(day)) is not None and weekday == "*":
        if month == "*":
            return f"on day {d} of every month at {clock}"
        if (mo := _number(month)) is not None and 1 <= mo <= 12:
            return f"every year on {_MONTHS[mo - 1]} {d} at {clock}"
    return "cron schedule"


def schedule_words(task: Task) -> str:
    """The task's schedule in words (time zone named separately)."""
    if task.cron is not None:
        return cron_words(task.cron)
    if task.interval is not None:
        return "every " + duration_words(task.interval)
    if isinstance(task.execute_at, datetime):
        return "once"
    return "per instance"
