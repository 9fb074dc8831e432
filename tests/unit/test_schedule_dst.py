"""Schedules across daylight-saving changes: the gap (spring forward) and the repeated hour
(fall back) in Europe/Berlin, America/New_York and Australia/Sydney, plus odd zones.

Rules under test (docs/schedules.md, "Daylight saving time"):
- a fixed wall-clock time in the gap fires once, at the end of the gap;
- a fixed wall-clock time in the repeated hour fires once, on its first occurrence;
- a schedule whose minute or hour field starts with ``*`` follows real time: gap times are
  skipped, repeated times fire in both passes, and the spacing stays regular.
Every test runs on both calendar backends (native and croniter).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from trickle.engine.schedule import parse_schedule, set_cron_backend, upcoming


@pytest.fixture(autouse=True, params=["native", "croniter"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = set_cron_backend(request.param)
    yield request.param
    set_cron_backend(previous)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires_between(spec: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    schedule = parse_schedule(spec, timezone=zone)
    out: list[datetime] = []
    current = start
    while True:
        nxt = schedule.next_after(current)
        assert nxt is not None
        if nxt > end:
            return out
        out.append(nxt)
        current = nxt


def local_times(times: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M%z") for t in times]


BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
SYDNEY = "Australia/Sydney"


# ------------------------------------------------------------------------ Europe/Berlin
# 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC); 2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC)


def test_berlin_daily_0230_runs_at_0300_on_the_spring_forward_day():
    got = fires_between("0 30 2 * * *", BERLIN, utc(2024, 3, 29, 12), utc(2024, 4, 1, 12))
    assert local_times(got, BERLIN) == ["03-30 02:30+0100", "03-31 03:00+0200", "04-01 02:30+0200"]
    assert got[1] == utc(2024, 3, 31, 1)


def test_berlin_daily_0230_runs_once_on_the_fall_back_day():
    got = fires_between("0 30 2 * * *", BERLIN, utc(2024, 10, 25, 12), utc(2024, 10, 28, 12))
    assert local_times(got, BERLIN) == ["10-26 02:30+0200", "10-27 02:30+0200", "10-28 02:30+0100"]
    assert got[1] == utc(2024, 10, 27, 0, 30)


def test_berlin_daily_job_through_a_month_with_a_change_runs_once_a_day():
    got = fires_between("0 30 2 * * *", BERLIN, utc(2024, 3, 15), utc(2024, 4, 15))
    days = [t.astimezone(ZoneInfo(BERLIN)).date() for t in got]
    assert len(days) == len(set(days)) == 31


def test_berlin_two_fixed_times_in_the_gap_fire_once_at_the_end_of_it():
    got = fires_between("0 0,30 2 * * *", BERLIN, utc(2024, 3, 30, 12), utc(2024, 3, 31, 12))
    assert got == [utc(2024, 3, 31, 1)]


def test_berlin_hourly_job_skips_the_missing_hour():
    got = fires_between("0 30 * * * *", BERLIN, utc(2024, 3, 30, 23), utc(2024, 3, 31, 3))
    assert local_times(got, BERLIN) == [
        "03-31 00:30+0100",
        "03-31 01:30+0100",
        "03-31 03:30+0200",
        "03-31 04:30+0200",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in zip(got, got[1:], strict=False))


def test_berlin_hourly_job_runs_in_both_passes_of_the_repeated_hour():
    got = fires_between("0 30 * * * *", BERLIN, utc(2024, 10, 26, 23), utc(2024, 10, 27, 3, 30))
    assert local_times(got, BERLIN) == [
        "10-27 01:30+0200",
        "10-27 02:30+0200",
        "10-27 02:30+0100",
        "10-27 03:30+0100",
        "10-27 04:30+0100",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in zip(got, got[1:], strict=False))


@pytest.mark.parametrize(
    ("day", "count"), [((2024, 3, 31), 23 * 4), ((2024, 10, 27), 25 * 4), ((2024, 7, 1), 96)]
)
def test_berlin_every_quarter_hour_keeps_real_time_spacing(day, count):
    zone = ZoneInfo(BERLIN)
    start = datetime(*day, tzinfo=zone).astimezone(UTC) - timedelta(seconds=1)
    end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC) - timedelta(seconds=1)
    got = fires_between("0 */15 * * * *", BERLIN, start, end)
    assert len(got) == count
    assert all(b - a == timedelta(minutes=15) for a, b in zip(got, got[1:], strict=False))


def test_berlin_from_inside_the_first_pass_of_the_repeated_hour():
    first_pass = utc(2024, 10, 27, 0, 40)  # 02:40 CEST
    assert parse_schedule("0 30 2 * * *", timezone=BERLIN).next_after(first_pass) == utc(
        2024, 10, 28, 1, 30
    )
    assert parse_schedule("0 30 * * * *", timezone=BERLIN).next_after(first_pass) == utc(
        2024, 10, 27, 1, 30
    )
    assert parse_schedule("0 50 2 * * *", timezone=BERLIN).next_after(first_pass) == utc(
        2024, 10, 27, 0, 50
    )
    # 02:00 and 02:50 every hour: 02:50 CEST comes before 02:00 CET
    assert upcoming(parse_schedule("0 0,50 * * * *", timezone=BERLIN), first_pass, 3) == [
        utc(2024, 10, 27, 0, 50),
        utc(2024, 10, 27, 1, 0),
        utc(2024, 10, 27, 1, 50),
    ]


def test_berlin_from_inside_the_second_pass_of_the_repeated_hour():
    second_pass = utc(2024, 10, 27, 1, 10)  # 02:10 CET
    assert parse_schedule("0 30 2 * * *", timezone=BERLIN).next_after(second_pass) == utc(
        2024, 10, 28, 1, 30
    )
    assert parse_schedule("0 30 * * * *", timezone=BERLIN).next_after(second_pass) == utc(
        2024, 10, 27, 1, 30
    )


def test_berlin_every_second_crosses_both_changes_without_a_hole_or_a_repeat():
    for change in (utc(2024, 3, 31, 1), utc(2024, 10, 27, 1)):
        got = fires_between(
            "* * * * * *", BERLIN, change - timedelta(seconds=3), change + timedelta(seconds=2)
        )
        assert got == [change + timedelta(seconds=s) for s in range(-2, 3)]


# --------------------------------------------------------------------- America/New_York
# 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC); 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC)


def test_new_york_crontab_0230_runs_at_0300_on_the_spring_forward_day():
    got = fires_between("30 2 * * *", NEW_YORK, utc(2024, 3, 9, 12), utc(2024, 3, 11, 12))
    assert local_times(got, NEW_YORK) == ["03-10 03:00-0400", "03-11 02:30-0400"]
    assert got[0] == utc(2024, 3, 10, 7)


def test_new_york_0130_runs_once_on_the_fall_back_day():
    got = fires_between("30 1 * * *", NEW_YORK, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12))
    assert local_times(got, NEW_YORK) == ["11-03 01:30-0400", "11-04 01:30-0500"]


def test_new_york_hourly_job_runs_in_both_passes_of_the_repeated_hour():
    got = fires_between("30 * * * *", NEW_YORK, utc(2024, 11, 3, 4), utc(2024, 11, 3, 8))
    assert local_times(got, NEW_YORK) == [
        "11-03 00:30-0400",
        "11-03 01:30-0400",
        "11-03 01:30-0500",
        "11-03 02:30-0500",
    ]


def test_new_york_every_ten_minutes_skips_the_missing_hour():
    got = fires_between("*/10 * * * *", NEW_YORK, utc(2024, 3, 10, 6, 45), utc(2024, 3, 10, 7, 15))
    assert local_times(got, NEW_YORK) == [
        "03-10 01:50-0500",
        "03-10 03:00-0400",
        "03-10 03:10-0400",
    ]


def test_new_york_descriptor_daily_follows_the_zone_through_the_change():
    got = fires_between("@daily", NEW_YORK, utc(2024, 3, 9), utc(2024, 3, 12))
    assert got == [utc(2024, 3, 9, 5), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4)]


# --------------------------------------------------------------------- Australia/Sydney
# 2024-04-07 03:00 AEDT -> 02:00 AEST; 2024-10-06 02:00 AEST -> 03:00 AEDT


def test_sydney_daily_0230_in_the_october_gap_runs_at_0300():
    got = fires_between("0 30 2 * * *", SYDNEY, utc(2024, 10, 4, 12), utc(2024, 10, 6, 18))
    assert local_times(got, SYDNEY) == ["10-05 02:30+1000", "10-06 03:00+1100", "10-07 02:30+1100"]


def test_sydney_daily_0230_in_the_april_repeat_runs_once():
    got = fires_between("0 30 2 * * *", SYDNEY, utc(2024, 4, 5, 12), utc(2024, 4, 7, 18))
    assert local_times(got, SYDNEY) == ["04-06 02:30+1100", "04-07 02:30+1100", "04-08 02:30+1000"]


# --------------------------------------------------------------------------- odd zones


def test_lord_howe_half_hour_gap():
    # 2024-10-06 02:00 +10:30 -> 02:30 +11:00
    got = fires_between("0 15 2 * * *", "Australia/Lord_Howe", utc(2024, 10, 5), utc(2024, 10, 6))
    assert local_times(got, "Australia/Lord_Howe") == ["10-06 02:30+1100"]


def test_santiago_midnight_gap_moves_daily_to_one_oclock():
    # 2024-09-08 00:00 -04 -> 01:00 -03: midnight does not exist that day
    got = fires_between("@daily", "America/Santiago", utc(2024, 9, 7, 12), utc(2024, 9, 9, 12))
    assert local_times(got, "America/Santiago") == ["09-08 01:00-0300", "09-09 00:00-0300"]


def test_samoa_skipped_day_still_runs_the_daily_job_once():
    # Pacific/Apia skipped 2011-12-30 entirely
    got = fires_between("0 30 2 * * *", "Pacific/Apia", utc(2011, 12, 29), utc(2011, 12, 31, 12))
    assert local_times(got, "Pacific/Apia") == [
        "12-29 02:30-1000",
        "12-31 00:00+1400",
        "12-31 02:30+1400",
    ]


def test_a_zone_without_dst_is_plain():
    got = fires_between("0 0 9 * * *", "Asia/Kolkata", utc(2024, 3, 9), utc(2024, 3, 11))
    assert got == [utc(2024, 3, 9, 3, 30), utc(2024, 3, 10, 3, 30)]
