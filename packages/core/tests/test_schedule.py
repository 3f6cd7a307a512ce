"""Schedules: cron on the wall clock of a time zone (with DST), intervals, once-off times, time zone parsing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pyncette import Context, Pyncette
from pyncette.errors import ConfigurationError
from pyncette.schedule import CronSchedule, IntervalSchedule, OnceSchedule, parse_timezone, timezone_name
from pyncette.testing import VirtualClock, running

UTC = timezone.utc
DUBLIN = "Europe/Dublin"
NEW_YORK = "America/New_York"


def utc(text: str) -> datetime:
    """``'2027-03-28 01:00'`` (optionally with seconds) as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def chain(expression: str, zone: str, start: str, count: int) -> list[str]:
    """The next ``count`` runs after ``start`` (UTC), each computed from the previous one, as UTC strings."""
    schedule = CronSchedule(expression, parse_timezone(zone))
    moment = utc(start)
    runs = []
    for _ in range(count):
        nxt = schedule.next_after(moment)
        assert nxt > moment
        runs.append(nxt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))
        moment = nxt
    return runs


# -- DST: spring forward (a wall-clock hour does not exist) ------------------------------------------


def test_dublin_spring_hourly_has_no_gap_and_no_double_run() -> None:
    # 01:00 GMT -> 02:00 IST on 2027-03-28: wall 01:00 does not exist and resolves to 01:00Z,
    # which is also 02:00 IST: one run for both.
    assert chain("0 * * * *", DUBLIN, "2027-03-27 22:30", 5) == [
        "2027-03-27 23:00:00",
        "2027-03-28 00:00:00",
        "2027-03-28 01:00:00",
        "2027-03-28 02:00:00",
        "2027-03-28 03:00:00",
    ]


def test_dublin_spring_daily_at_nonexistent_time_runs_once_after_the_gap() -> None:
    assert chain("30 1 * * *", DUBLIN, "2027-03-25 01:30", 5) == [
        "2027-03-26 01:30:00",
        "2027-03-27 01:30:00",
        "2027-03-28 01:00:00",  # 01:30 does not exist: the first instant after the gap (02:00 IST)
        "2027-03-29 00:30:00",  # 01:30 IST
        "2027-03-30 00:30:00",
    ]


def test_several_points_inside_one_gap_collapse_to_one_run() -> None:
    # 01:00, 01:15, 01:30, 01:45 (inexistent) and 02:00 IST are all 01:00Z.
    assert chain("*/15 * * * *", DUBLIN, "2027-03-28 00:30", 4) == [
        "2027-03-28 00:45:00",
        "2027-03-28 01:00:00",
        "2027-03-28 01:15:00",
        "2027-03-28 01:30:00",
    ]


def test_new_york_spring_hourly_and_daily_in_the_gap() -> None:
    # 02:00 EST -> 03:00 EDT on 2027-03-14.
    assert chain("0 * * * *", NEW_YORK, "2027-03-14 05:00", 4) == [
        "2027-03-14 06:00:00",  # 01:00 EST
        "2027-03-14 07:00:00",  # 02:00 (inexistent) and 03:00 EDT: one run
        "2027-03-14 08:00:00",
        "2027-03-14 09:00:00",
    ]
    assert chain("30 2 * * *", NEW_YORK, "2027-03-11 07:30", 5) == [
        "2027-03-12 07:30:00",
        "2027-03-13 07:30:00",
        "2027-03-14 07:00:00",  # 02:30 does not exist: runs at 03:00 EDT
        "2027-03-15 06:30:00",
        "2027-03-16 06:30:00",
    ]


# -- DST: fall back (a wall-clock hour occurs twice) ---------------------------------------------------


def test_dublin_fall_back_hourly_and_daily_run_the_doubled_hour_once() -> None:
    # 02:00 IST -> 01:00 GMT on 2026-10-25: 01:xx occurs at 00:xxZ and again at 01:xxZ.
    assert chain("0 * * * *", DUBLIN, "2026-10-24 22:00", 4) == [
        "2026-10-24 23:00:00",
        "2026-10-25 00:00:00",  # 01:00 IST, the first 01:00
        "2026-10-25 02:00:00",  # 02:00 GMT; the second 01:00 (01:00Z) does not run
        "2026-10-25 03:00:00",
    ]
    assert chain("30 1 * * *", DUBLIN, "2026-10-22 00:30", 5) == [
        "2026-10-23 00:30:00",
        "2026-10-24 00:30:00",
        "2026-10-25 00:30:00",  # first occurrence only
        "2026-10-26 01:30:00",
        "2026-10-27 01:30:00",
    ]


def test_new_york_fall_back_hourly_and_daily_run_the_doubled_hour_once() -> None:
    # 02:00 EDT -> 01:00 EST on 2026-11-01.
    assert chain("0 * * * *", NEW_YORK, "2026-11-01 03:00", 4) == [
        "2026-11-01 04:00:00",
        "2026-11-01 05:00:00",  # 01:00 EDT
        "2026-11-01 07:00:00",  # 02:00 EST; 01:00 EST (06:00Z) does not run
        "2026-11-01 08:00:00",
    ]
    assert chain("30 1 * * *", NEW_YORK, "2026-10-29 05:30", 5) == [
        "2026-10-30 05:30:00",
        "2026-10-31 05:30:00",
        "2026-11-01 05:30:00",
        "2026-11-02 06:30:00",
        "2026-11-03 06:30:00",
    ]


def test_first_seen_during_the_second_pass_of_a_doubled_hour() -> None:
    # 01:10 EST (06:10Z), after 01:30 EDT already happened: the next 01:30 is tomorrow's.
    schedule = CronSchedule("30 1 * * *", ZoneInfo(NEW_YORK))
    assert schedule.first(utc("2026-11-01 06:10")) == utc("2026-11-02 06:30")
    hourly = CronSchedule("0 * * * *", ZoneInfo(NEW_YORK))
    assert hourly.first(utc("2026-11-01 06:10")) == utc("2026-11-01 07:00")


@pytest.mark.parametrize(
    ("zone", "expression", "start", "days"),
    [
        (DUBLIN, "0 * * * *", "2027-03-25 00:00", 6),
        (DUBLIN, "*/20 * * * *", "2026-10-22 00:00", 6),
        (NEW_YORK, "0 * * * *", "2027-03-11 00:00", 6),
        (NEW_YORK, "*/20 * * * *", "2026-10-29 00:00", 6),
    ],
)
def test_catch_up_chain_across_a_transition(zone: str, expression: str, start: str, days: int) -> None:
    """Chaining next_after over days: every wall point that exists runs exactly once, strictly increasing."""
    tz = ZoneInfo(zone)
    step = int(expression.split()[0].removeprefix("*/")) if expression.startswith("*/") else 60
    schedule = CronSchedule(expression, tz)
    moment = utc(start)
    end = moment + timedelta(days=days)
    runs: list[datetime] = []
    while True:
        moment = schedule.next_after(moment)
        if moment >= end:
            break
        runs.append(moment)
    # Expected: every UTC instant whose wall time is on the schedule, first pass only; gap points map
    # to the end of the gap, which is itself a schedule point, so they add nothing.
    expected: list[datetime] = []
    seen_walls: set[datetime] = set()
    instant = utc(start) + timedelta(minutes=step)
    while instant < end:
        wall = instant.astimezone(tz).replace(tzinfo=None)
        if wall.minute % step == 0 and wall not in seen_walls:
            expected.append(instant)
        seen_walls.add(wall)
        instant += timedelta(minutes=step)
    assert runs == expected
    assert len(set(runs)) == len(runs)
    # In absolute time: spring loses no run (the skipped wall hour is an hour of no time); fall skips the
    # repeated hour's points.
    instants = 24 * days * (60 // step) - 1
    spring = tz.utcoffset(end.replace(tzinfo=None)) > tz.utcoffset(utc(start).replace(tzinfo=None))
    assert len(runs) == (instants if spring else instants - 60 // step)


def test_schedule_in_fixed_offset_zone() -> None:
    schedule = CronSchedule("0 9 * * *", parse_timezone("+05:30"))
    assert schedule.next_after(utc("2030-01-01 00:00")) == utc("2030-01-01 03:30")
    assert schedule.next_after(utc("2030-01-01 03:30")) == utc("2030-01-02 03:30")


# -- cron basics -------------------------------------------------------------------------------------


def test_six_fields_have_seconds_last() -> None:
    every_10s = CronSchedule("* * * * * */10")
    assert every_10s.next_after(utc("2030-01-01 00:00:00")) == utc("2030-01-01 00:00:10")
    assert every_10s.next_after(utc("2030-01-01 00:00:55")) == utc("2030-01-01 00:01:00")
    daily = CronSchedule("30 9 * * * 15")
    assert daily.next_after(utc("2030-01-01 00:00")) == utc("2030-01-01 09:30:15")
    assert daily.next_after(utc("2030-01-01 09:30:15")) == utc("2030-01-02 09:30:15")


def test_cron_next_is_strictly_after_and_first_is_next_point() -> None:
    schedule = CronSchedule("*/5 * * * *")
    assert schedule.next_after(utc("2030-01-01 00:05")) == utc("2030-01-01 00:10")
    assert schedule.next_after(utc("2030-01-01 00:04:59.999")) == utc("2030-01-01 00:05")
    assert schedule.first(utc("2030-01-01 00:05")) == utc("2030-01-01 00:10")
    assert schedule.fast_forward(utc("2030-01-01 00:05"), utc("2030-01-01 03:02")) == utc("2030-01-01 03:05")
    assert schedule.fast_forward(utc("2030-01-01 00:05"), utc("2030-01-01 00:06")) == utc("2030-01-01 00:10")


def test_cron_result_is_aware_and_input_zone_does_not_matter() -> None:
    schedule = CronSchedule("0 * * * *", ZoneInfo(DUBLIN))
    moment = utc("2030-06-01 10:30")
    a = schedule.next_after(moment)
    b = schedule.next_after(moment.astimezone(ZoneInfo("Asia/Tokyo")))
    assert a == b == utc("2030-06-01 11:00")
    assert a.utcoffset() is not None


@pytest.mark.parametrize(
    "expression",
    ["61 * * * *", "* * *", "* * * * * * *", "a b c d e", "0 0 30 2 *", "* * * * * 61", "", "*/0 * * * *"],
)
def test_invalid_cron_expressions(expression: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(expression))):
        CronSchedule(expression)


# -- intervals and once-off -----------------------------------------------------------------------------


def test_interval_schedule() -> None:
    schedule = IntervalSchedule(timedelta(seconds=10))
    t0 = utc("2030-01-01 00:00")
    assert schedule.first(t0) == t0 + timedelta(seconds=10)
    assert schedule.next_after(t0) == t0 + timedelta(seconds=10)
    # fast forward keeps the phase and lands strictly after now
    assert schedule.fast_forward(t0, t0 + timedelta(seconds=5)) == t0 + timedelta(seconds=10)
    assert schedule.fast_forward(t0, t0 + timedelta(seconds=95)) == t0 + timedelta(seconds=100)
    assert schedule.fast_forward(t0, t0 + timedelta(seconds=100)) == t0 + timedelta(seconds=110)
    # intervals ignore wall clocks: 1 h steps across a DST change stay 1 h apart
    across = utc("2027-03-28 00:30")
    assert schedule.next_after(across) - across == timedelta(seconds=10)


@pytest.mark.parametrize("interval", [timedelta(0), timedelta(seconds=-1)])
def test_interval_must_be_positive(interval: timedelta) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(interval))):
        IntervalSchedule(interval)


def test_once_schedule() -> None:
    at = datetime(2030, 1, 1, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    schedule = OnceSchedule(at)
    assert schedule.execute_at == utc("2030-01-01 03:00")
    assert schedule.execute_at.tzinfo == UTC
    assert schedule.first(utc("2040-01-01 00:00")) == utc("2030-01-01 03:00")  # in the past: due at once
    assert schedule.next_after(utc("2030-01-01 03:00")) is None
    assert schedule.fast_forward(utc("2030-01-01 03:00"), utc("2030-01-01 04:00")) is None


@pytest.fixture
def kolkata_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+05:30 (the machines this runs on are often on UTC)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("kolkata_local_time")
def test_once_schedule_naive_time_is_local_time() -> None:
    naive = datetime(2030, 1, 1, 12, 0)
    assert OnceSchedule(naive).execute_at == datetime(2030, 1, 1, 6, 30, tzinfo=UTC)


# -- time zones ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "name"),
    [
        ("UTC", timedelta(0), "UTC"),
        ("utc", timedelta(0), "UTC"),
        ("UTC+12", timedelta(hours=12), "+12:00"),
        ("+05:30", timedelta(hours=5, minutes=30), "+05:30"),
        ("-08:00", timedelta(hours=-8), "-08:00"),
        ("UTC-3", timedelta(hours=-3), "-03:00"),
        ("+0545", timedelta(hours=5, minutes=45), "+05:45"),
    ],
)
def test_fixed_offsets(text: str, offset: timedelta, name: str) -> None:
    tz = parse_timezone(text)
    assert tz.utcoffset(None) == offset
    assert timezone_name(tz) == name
    assert parse_timezone(timezone_name(tz)).utcoffset(None) == offset


def test_iana_names_and_defaults() -> None:
    assert parse_timezone(None) is UTC
    tz = parse_timezone(DUBLIN)
    assert isinstance(tz, ZoneInfo)
    assert timezone_name(tz) == DUBLIN
    assert parse_timezone(tz) is tz
    assert parse_timezone(" Europe/Dublin ") == tz


@pytest.mark.parametrize("text", ["Mars/Olympus", "UTC+99", "", "   ", "+05:75", "../etc/passwd", "UTC+"])
def test_bad_timezones(text: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(text))) as excinfo:
        parse_timezone(text)
    assert isinstance(excinfo.value, ValueError)


def test_offset_just_beyond_14_hours_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="UTC\\+14:30"):
        parse_timezone("UTC+14:30")


# -- DST catch-up through the runtime ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("zone", "expression", "first_start", "stop_at", "restart_at", "expected"),
    [
        (
            DUBLIN,
            "30 1 * * *",
            "2027-03-26 12:00",
            "2027-03-27 12:00",  # ran 27 01:30Z
            "2027-03-29 12:00",  # missed 28 (gap) and 29
            ["2027-03-27T01:30:00+00:00", "2027-03-28T02:00:00+01:00", "2027-03-29T01:30:00+01:00"],
        ),
        (
            NEW_YORK,
            "30 1 * * *",
            "2026-10-30 12:00",
            "2026-10-31 12:00",
            "2026-11-02 12:00",  # missed the doubled 01:30 of Nov 1 and Nov 2
            ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
        ),
        (
            NEW_YORK,
            "0 */6 * * *",
            "2027-03-13 10:00",
            "2027-03-13 13:00",
            "2027-03-14 13:30",
            [
                "2027-03-13T06:00:00-05:00",
                "2027-03-13T12:00:00-05:00",
                "2027-03-13T18:00:00-05:00",
                "2027-03-14T00:00:00-05:00",
                "2027-03-14T06:00:00-04:00",
            ],
        ),
    ],
)
async def test_dst_catch_up_after_downtime(
    tmp_path: Path,
    zone: str,
    expression: str,
    first_start: str,
    stop_at: str,
    restart_at: str,
    expected: list[str],
) -> None:
    clock = VirtualClock(utc(first_start))
    database = str(tmp_path / "pyncette.db")
    seen: list[datetime] = []

    def build() -> Pyncette:
        app = Pyncette(sqlite_database=database, poll_interval=timedelta(hours=1))

        @app.task(schedule=expression, timezone=zone)
        async def job(context: Context) -> None:
            seen.append(context.scheduled_at)

        return app

    async with build().create(clock=clock) as ctx, running(ctx):
        await clock.advance_to(utc(stop_at))
    await clock.advance_to(utc(restart_at))  # the app is down
    async with build().create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=1))
        state = await ctx.get_task(ctx.app.tasks[0])
    assert [t.isoformat() for t in seen] == expected
    assert all(t.tzinfo == ZoneInfo(zone) for t in seen)
    assert state is not None
    assert state.scheduled_at > utc(restart_at)
