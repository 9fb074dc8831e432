"""Schedules: every form, its errors, time zones, ``~``, and the anchor rules (UTC cases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trickle.engine.schedule import (
    AfterSchedule,
    AtSchedule,
    CronSchedule,
    EverySchedule,
    ManualSchedule,
    format_duration,
    parse_go_duration,
    parse_schedule,
    upcoming,
)
from trickle.errors import ScheduleError, ValidationError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(spec: str, after: datetime, count: int = 3, **kwargs: object) -> list[datetime]:
    return upcoming(parse_schedule(spec, **kwargs), after, count)  # type: ignore[arg-type]


JAN1 = utc(2024, 1, 1)  # a Monday


# --------------------------------------------------------------------------- cron forms


def test_six_field_cron_has_seconds_first():
    assert fires("15 30 2 * * *", JAN1, 2) == [
        utc(2024, 1, 1, 2, 30, 15),
        utc(2024, 1, 2, 2, 30, 15),
    ]


def test_six_field_cron_can_fire_every_few_seconds():
    assert fires("*/20 * * * * *", JAN1, 4) == [
        utc(2024, 1, 1, 0, 0, 20),
        utc(2024, 1, 1, 0, 0, 40),
        utc(2024, 1, 1, 0, 1, 0),
        utc(2024, 1, 1, 0, 1, 20),
    ]


def test_five_field_crontab_has_minutes_first_and_seconds_zero():
    assert fires("30 2 * * *", JAN1, 2) == [utc(2024, 1, 1, 2, 30), utc(2024, 1, 2, 2, 30)]
    assert fires("*/20 * * * *", JAN1, 3) == [
        utc(2024, 1, 1, 0, 20),
        utc(2024, 1, 1, 0, 40),
        utc(2024, 1, 1, 1, 0),
    ]


def test_five_and_six_field_forms_of_the_same_schedule_agree():
    assert fires("0 15 9 * * MON-FRI", JAN1, 10) == fires("15 9 * * MON-FRI", JAN1, 10)


def test_next_after_is_strictly_after():
    schedule = parse_schedule("0 0 12 * * *")
    assert schedule.next_after(utc(2024, 1, 1, 12)) == utc(2024, 1, 2, 12)
    assert schedule.next_after(utc(2024, 1, 1, 11, 59, 59, 999999)) == utc(2024, 1, 1, 12)


def test_month_and_weekday_names_are_case_insensitive():
    assert fires("0 0 9 * jan-Mar mon", utc(2024, 3, 20), 2) == [
        utc(2024, 3, 25, 9),
        utc(2025, 1, 6, 9),
    ]
    assert fires("0 0 9 1 FEB,dec *", JAN1, 2) == [utc(2024, 2, 1, 9), utc(2024, 12, 1, 9)]


def test_question_mark_means_any():
    assert fires("0 0 9 ? * MON", JAN1, 2) == fires("0 0 9 * * MON", JAN1, 2)


def test_single_value_with_step_runs_to_the_end_of_the_range():
    assert fires("0 5/20 * * * *", JAN1, 4) == [
        utc(2024, 1, 1, 0, 5),
        utc(2024, 1, 1, 0, 25),
        utc(2024, 1, 1, 0, 45),
        utc(2024, 1, 1, 1, 5),
    ]


def test_ranges_lists_and_stepped_ranges_combine():
    assert fires("0 0 8-18/5,23 * * *", JAN1, 5) == [
        utc(2024, 1, 1, 8),
        utc(2024, 1, 1, 13),
        utc(2024, 1, 1, 18),
        utc(2024, 1, 1, 23),
        utc(2024, 1, 2, 8),
    ]


def test_crontab_accepts_seven_as_sunday():
    assert fires("0 9 * * 7", JAN1, 1) == [utc(2024, 1, 7, 9)]
    assert fires("0 9 * * 5-7", JAN1, 3) == [
        utc(2024, 1, 5, 9),
        utc(2024, 1, 6, 9),
        utc(2024, 1, 7, 9),
    ]


def test_dkron_six_field_form_rejects_seven_for_sunday():
    with pytest.raises(ScheduleError, match=r"7 is above the maximum 6 \(use 0 for Sunday"):
        parse_schedule("0 0 9 * * 7")


# ---------------------------------------------------------------- day of month and week


def test_restricted_day_of_month_and_weekday_combine_with_or():
    # the 13th of each month OR any Friday
    assert fires("0 0 0 13 * FRI", JAN1, 4) == [
        utc(2024, 1, 5),
        utc(2024, 1, 12),
        utc(2024, 1, 13),
        utc(2024, 1, 19),
    ]


def test_a_day_field_starting_with_a_star_makes_the_days_combine_with_and():
    # odd days of the month that are Mondays (Vixie's rule; croniter's default would OR)
    assert fires("0 0 0 */2 * MON", JAN1, 3) == [
        utc(2024, 1, 15),
        utc(2024, 1, 29),
        utc(2024, 2, 5),
    ]
    assert fires("0 0 0 1-7 * */7", JAN1, 2) == [utc(2024, 1, 7), utc(2024, 2, 4)]


def test_an_unrestricted_day_field_leaves_only_the_other_one():
    assert fires("0 0 0 * * MON", JAN1, 2) == [utc(2024, 1, 8), utc(2024, 1, 15)]
    assert fires("0 0 0 15 * ?", JAN1, 2) == [utc(2024, 1, 15), utc(2024, 2, 15)]


def test_a_full_day_of_month_range_ored_with_a_weekday_is_every_day():
    assert fires("0 0 0 1-31 * MON", JAN1, 3) == [utc(2024, 1, 2), utc(2024, 1, 3), utc(2024, 1, 4)]


def test_february_29th_fires_in_leap_years_only():
    assert fires("0 0 0 29 2 *", JAN1, 2) == [utc(2024, 2, 29), utc(2028, 2, 29)]


# -------------------------------------------------------------------------- descriptors


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        ("@yearly", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@annually", [utc(2025, 1, 1), utc(2026, 1, 1)]),
        ("@monthly", [utc(2024, 2, 1), utc(2024, 3, 1)]),
        ("@weekly", [utc(2024, 1, 7), utc(2024, 1, 14)]),
        ("@daily", [utc(2024, 1, 2), utc(2024, 1, 3)]),
        ("@midnight", [utc(2024, 1, 2), utc(2024, 1, 3)]),
        ("@hourly", [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]),
        ("@minutely", [utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 2)]),
    ],
)
def test_descriptors(descriptor, expected):
    assert fires(descriptor, JAN1, 2) == expected


def test_descriptors_honour_the_job_time_zone():
    # Dkron ignores the job's timezone for descriptors; trickle does not.
    assert fires("@daily", JAN1, 2, timezone="America/New_York") == [
        utc(2024, 1, 1, 5),
        utc(2024, 1, 2, 5),
    ]
    assert fires("@weekly", JAN1, 1, timezone="Asia/Tokyo") == [utc(2024, 1, 6, 15)]


def test_descriptor_names_are_case_insensitive():
    assert fires("@Daily", JAN1, 1) == [utc(2024, 1, 2)]


def test_descriptor_schedules_show_their_cron_equivalent():
    schedule = parse_schedule("@hourly", timezone="Europe/Berlin")
    assert isinstance(schedule, CronSchedule)
    assert schedule.describe() == "cron 0 0 * * * * in Europe/Berlin"
    assert schedule.spec == "@hourly"


# --------------------------------------------------------------------------- time zones


def test_an_empty_time_zone_means_utc():
    schedule = parse_schedule("0 0 9 * * *", timezone="")
    assert schedule.next_after(JAN1) == utc(2024, 1, 1, 9)
    assert schedule.describe() == "cron 0 0 9 * * * in UTC"


def test_cron_runs_in_the_job_time_zone():
    assert fires("0 0 9 * * *", JAN1, 1, timezone="Asia/Kolkata") == [utc(2024, 1, 1, 3, 30)]


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_a_tz_prefix_overrides_the_job_time_zone(prefix):
    schedule = parse_schedule(f"{prefix}=Asia/Tokyo 0 0 9 * * *", timezone="Europe/Berlin")
    assert schedule.next_after(JAN1) == utc(2024, 1, 2, 0)
    assert schedule.describe() == "cron 0 0 9 * * * in Asia/Tokyo"


def test_a_tz_prefix_works_with_descriptors_and_crontab_lines():
    assert fires("TZ=Asia/Tokyo @daily", JAN1, 1) == [utc(2024, 1, 1, 15)]
    assert fires("CRON_TZ=Asia/Tokyo 0 9 * * *", JAN1, 1) == [utc(2024, 1, 2, 0)]


def test_an_unknown_job_time_zone_is_a_timezone_error():
    with pytest.raises(ScheduleError) as info:
        parse_schedule("@daily", timezone="Mars/Olympus_Mons")
    assert str(info.value) == "unknown time zone Mars/Olympus_Mons"
    assert info.value.field == "timezone"
    assert isinstance(info.value, ValidationError)


@pytest.mark.parametrize("zone", ["Europe", "/etc/passwd", "../UTC", "utc", "Local"])
def test_odd_time_zone_names_are_unknown_zones(zone):
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse_schedule("@daily", timezone=zone)


def test_an_unknown_zone_in_a_tz_prefix_is_a_schedule_error():
    with pytest.raises(ScheduleError) as info:
        parse_schedule("TZ=Nowhere/Land 0 0 9 * * *")
    assert str(info.value) == "unknown time zone Nowhere/Land in TZ=Nowhere/Land"
    assert info.value.field == "schedule"


def test_a_tz_prefix_alone_is_an_error():
    with pytest.raises(ScheduleError, match="missing schedule after TZ=UTC"):
        parse_schedule("TZ=UTC")


# --------------------------------------------------------------------------------- hash


def test_hash_spreads_dkrons_example_to_hour_18():
    # sum of the code points of "test_job" is 858; 858 % 24 == 18
    schedule = parse_schedule("0 0 ~ * * *", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "0 0 18 * * *"
    assert schedule.next_after(JAN1) == utc(2024, 1, 1, 18)


def test_hash_uses_each_fields_modulus_and_offset():
    # "test_job" sums to 858: sec/min 858%60=18, hour 18, dom 858%28+1=19, month 858%12+1=7,
    # dow 858%7=4
    schedule = parse_schedule("~ ~ ~ ~ ~ *", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "18 18 18 19 7 *"
    schedule = parse_schedule("0 0 0 * * ~", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "0 0 0 * * 4"


def test_hash_in_a_step_becomes_the_start_of_the_range():
    schedule = parse_schedule("0 ~/15 * * * *", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "0 18/15 * * * *"
    assert upcoming(schedule, JAN1, 3) == [
        utc(2024, 1, 1, 0, 18),
        utc(2024, 1, 1, 0, 33),
        utc(2024, 1, 1, 0, 48),
    ]


def test_hash_counts_unicode_code_points_not_bytes():
    name = "é"  # one code point, 233 (two bytes in UTF-8)
    schedule = parse_schedule("0 0 ~ * * *", job_name=name)
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == f"0 0 {233 % 24} * * *"


def test_hash_in_a_five_field_line_starts_at_the_minute():
    schedule = parse_schedule("~ ~ * * *", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "18 18 * * *"


def test_hash_skips_the_tz_prefix():
    schedule = parse_schedule("TZ=UTC 0 0 ~ * * *", job_name="test_job")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "0 0 18 * * *"


def test_hash_spreads_different_jobs_apart():
    hours = {
        parse_schedule("0 0 ~ * * *", job_name=f"job-{chr(97 + i)}").next_after(JAN1).hour  # type: ignore[union-attr]
        for i in range(24)  # job-a .. job-x
    }
    assert len(hours) == 24


def test_hash_is_not_applied_to_descriptors():
    with pytest.raises(ScheduleError, match="invalid duration ~"):
        parse_schedule("@every ~", job_name="test_job")


# --------------------------------------------------------------------------------- @every


def test_every_counts_from_the_anchor_keeping_its_sub_second_phase():
    half = timedelta(microseconds=500_000)
    anchor = utc(2024, 1, 1, 0, 0, 7) + half
    schedule = parse_schedule("@every 10s", anchor=anchor)
    assert isinstance(schedule, EverySchedule)
    assert schedule.interval == 10
    assert upcoming(schedule, anchor, 3) == [
        utc(2024, 1, 1, 0, 0, 17) + half,
        utc(2024, 1, 1, 0, 0, 27) + half,
        utc(2024, 1, 1, 0, 0, 37) + half,
    ]


def test_every_keeps_its_phase_far_from_the_anchor():
    schedule = parse_schedule("@every 1h30m", anchor=utc(2024, 1, 1, 0, 10))
    assert schedule.next_after(utc(2024, 1, 3, 5, 0)) == utc(2024, 1, 3, 6, 10)
    assert schedule.next_after(utc(2024, 1, 3, 6, 10)) == utc(2024, 1, 3, 7, 40)


def test_every_fires_first_one_interval_after_the_anchor():
    schedule = parse_schedule("@every 1m", anchor=utc(2024, 6, 1, 12))
    assert schedule.next_after(utc(2020, 1, 1)) == utc(2024, 6, 1, 12, 1)
    assert schedule.next_after(utc(2024, 6, 1, 12)) == utc(2024, 6, 1, 12, 1)


def test_every_without_an_anchor_is_aligned_to_the_epoch():
    assert fires("@every 1h30m", JAN1, 2) == [utc(2024, 1, 1, 1, 30), utc(2024, 1, 1, 3)]


@pytest.mark.parametrize(
    ("duration", "interval"),
    [("500ms", 1), ("1ns", 1), ("1.9s", 1), ("2500ms", 2), ("90m", 5400), ("1h30m", 5400)],
)
def test_every_rounds_up_to_a_second_and_truncates_fractions(duration, interval):
    schedule = parse_schedule(f"@every {duration}")
    assert isinstance(schedule, EverySchedule)
    assert schedule.interval == interval


def test_every_describes_itself_in_go_syntax():
    assert parse_schedule("@every 90m").describe() == "every 1h30m0s from the epoch"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("@every 10x", 'invalid duration 10x in @every 10x: unknown unit "x"'),
        ("@every 10", "invalid duration 10 in @every 10: missing unit"),
        ("@every", "missing duration in @every"),
        ("@every 0s", "@every needs a positive duration, got 0s"),
        ("@every -5s", "@every needs a positive duration, got -5s"),
        ("@every 1h 30m", "invalid duration 1h 30m"),
    ],
)
def test_bad_every_durations(spec, message):
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(spec)
    assert info.value.field == "schedule"


# ------------------------------------------------------------------------------------ @at


def test_at_fires_once_at_its_time():
    schedule = parse_schedule("@at 2024-05-01T09:00:00Z", anchor=JAN1)
    assert isinstance(schedule, AtSchedule)
    assert upcoming(schedule, JAN1, 5) == [utc(2024, 5, 1, 9)]


def test_at_reads_the_offset_of_its_time():
    assert fires("@at 2024-05-01T09:00:00+02:00", JAN1) == [utc(2024, 5, 1, 7)]
    assert fires("@at 2024-05-01T09:00:00.250-05:30", JAN1) == [
        utc(2024, 5, 1, 14, 30) + timedelta(milliseconds=250)
    ]


def test_at_ignores_the_job_time_zone():
    assert fires("@at 2024-05-01T09:00:00Z", JAN1, timezone="Asia/Tokyo") == [utc(2024, 5, 1, 9)]


def test_at_set_after_its_time_never_fires():
    schedule = parse_schedule("@at 2024-05-01T09:00:00Z", anchor=utc(2024, 5, 1, 9, 0, 1))
    assert schedule.next_after(JAN1) is None
    assert "never" in schedule.describe()


def test_at_set_exactly_at_its_time_still_fires():
    schedule = parse_schedule("@at 2024-05-01T09:00:00Z", anchor=utc(2024, 5, 1, 9))
    assert schedule.next_after(utc(2024, 5, 1, 8, 59)) == utc(2024, 5, 1, 9)


def test_at_without_an_anchor_fires_while_its_time_is_ahead():
    schedule = parse_schedule("@at 2024-05-01T09:00:00Z")
    assert schedule.next_after(JAN1) == utc(2024, 5, 1, 9)
    assert schedule.next_after(utc(2024, 5, 1, 9)) is None


@pytest.mark.parametrize(
    "spec",
    [
        "@at badtime",
        "@at 2024-05-01",
        "@at 2024-05-01T09:00:00",  # no offset
        "@at 2024-05-01 09:00:00Z",
        "@at 2024-13-01T09:00:00Z",
        "@at 2024-02-30T09:00:00Z",
        "@at 2024-05-01T09:00:00+25:00",
    ],
)
def test_bad_at_times(spec):
    with pytest.raises(ScheduleError, match="failed to parse date @at|in @at") as info:
        parse_schedule(spec)
    assert info.value.field == "schedule"


def test_bad_at_message_names_the_text():
    with pytest.raises(ScheduleError) as info:
        parse_schedule("@at badtime")
    assert str(info.value).startswith("failed to parse date @at badtime: ")


def test_at_needs_exactly_one_time():
    with pytest.raises(ScheduleError, match="missing time in @at"):
        parse_schedule("@at")


# --------------------------------------------------------------------------------- @after

AFTER = "@after 2024-01-01T09:00:00Z <PT30M"
NINE = utc(2024, 1, 1, 9)


def test_after_set_before_its_time_fires_at_the_time():
    schedule = parse_schedule(AFTER, anchor=utc(2024, 1, 1, 8))
    assert isinstance(schedule, AfterSchedule)
    assert upcoming(schedule, utc(2024, 1, 1, 8), 3) == [NINE]


def test_after_set_within_the_grace_fires_once_when_set():
    anchor = utc(2024, 1, 1, 9, 10)
    schedule = parse_schedule(AFTER, anchor=anchor)
    assert upcoming(schedule, anchor - timedelta(microseconds=1), 3) == [anchor]
    assert schedule.next_after(anchor) is None


def test_after_grace_boundary_is_inclusive():
    anchor = utc(2024, 1, 1, 9, 30)
    schedule = parse_schedule(AFTER, anchor=anchor)
    assert schedule.next_after(utc(2024, 1, 1, 9, 29)) == anchor


def test_after_set_past_the_grace_never_fires():
    schedule = parse_schedule(AFTER, anchor=utc(2024, 1, 1, 9, 30, 1))
    assert schedule.next_after(JAN1) is None
    assert "never" in schedule.describe()


def test_after_without_an_anchor_fires_at_the_time():
    assert fires(AFTER, JAN1) == [NINE]


def test_after_grace_counts_years_as_365_days_and_months_as_30():
    late = NINE + timedelta(days=365 + 30)
    assert (
        parse_schedule("@after 2024-01-01T09:00:00Z <P1Y1M", anchor=late).next_after(JAN1) == late
    )
    too_late = late + timedelta(seconds=1)
    assert (
        parse_schedule("@after 2024-01-01T09:00:00Z <P1Y1M", anchor=too_late).next_after(JAN1)
        is None
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("@after 2024-01-01T09:00:00Z <P2H", "need the T separator"),
        ("@after 2024-01-01T09:00:00Z <PT0S", "must be greater than zero"),
        ("@after 2024-01-01T09:00:00Z <PT", "invalid ISO 8601 duration"),
        ("@after 2024-01-01T09:00:00Z <-PT1H", "invalid ISO 8601 duration"),
        ("@after 2024-01-01T09:00:00Z PT30M", 'must start with "<"'),
        ("@after 2024-01-01T09:00:00Z", "@after needs a time and a grace period"),
        ("@after", "@after needs a time and a grace period"),
        ("@after tomorrow <PT30M", "failed to parse date @after tomorrow"),
    ],
)
def test_bad_after_schedules(spec, message):
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(spec)
    assert info.value.field == "schedule"


# ------------------------------------------------------------------------------ @manually


def test_manually_never_fires():
    schedule = parse_schedule("@manually")
    assert isinstance(schedule, ManualSchedule)
    assert schedule.next_after(JAN1) is None
    assert upcoming(schedule, JAN1, 3) == []


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "schedule cannot be empty"),
        ("   ", "schedule cannot be empty"),
        ("1 2 3", r"expected 5 or 6 fields, found 3: \[1 2 3\]"),
        ("0 0 0 1 1 * 2030", r"expected 5 or 6 fields, found 7: \[0 0 0 1 1 \* 2030\]"),
        ("@foo", "unknown descriptor @foo"),
        ("@reboot", "unknown descriptor @reboot"),
        ("@triggered", "unknown descriptor @triggered"),
        ("@daily 5", "unexpected text after @daily: 5"),
        ("@manually now", "unexpected text after @manually: now"),
        ("60 * * * * *", 'invalid second field "60": 60 is above the maximum 59'),
        ("0 60 * * * *", 'invalid minute field "60": 60 is above the maximum 59'),
        ("0 0 24 * * *", 'invalid hour field "24": 24 is above the maximum 23'),
        ("0 0 0 0 * *", 'invalid day-of-month field "0": 0 is below the minimum 1'),
        ("0 0 0 32 * *", 'invalid day-of-month field "32"'),
        ("0 0 0 * 13 *", 'invalid month field "13"'),
        ("0 0 0 * 0 *", 'invalid month field "0": 0 is below the minimum 1'),
        ("0 0 0 * * 8", 'invalid day-of-week field "8"'),
        ("* * * * 8", 'invalid day-of-week field "8": 8 is above the maximum 7'),
        ("0 0 5-1 * * *", 'invalid hour field "5-1": range start 5 is after its end 1'),
        ("0 */0 * * * *", 'step "0" must be a positive whole number'),
        ("0 */x * * * *", 'step "x" must be a positive whole number'),
        ("0 1/2/3 * * * *", 'too many slashes in "1/2/3"'),
        ("0 1-2-3 * * *", 'too many hyphens in "1-2-3"'),
        ("0 1,,2 * * * *", "empty item in a list"),
        ("0 abc * * * *", 'invalid minute field "abc": "abc" is not a number'),
        ("0 0 0 * FOO *", r'"FOO" is not a number or a name \(JAN-DEC\)'),
        ("0 0 0 * * FUN", r'"FUN" is not a number or a name \(SUN-SAT\)'),
        ("0 0 MON * * *", '"MON" is not a number'),
        ("0 0 0 L * *", r'"L" is not supported \(there is no L, W or #'),
        ("0 0 0 15W * *", '"15W" is not supported'),
        ("0 0 0 * * 1#2", '"1#2" is not supported'),
        ("0 0 0 * * 5L", '"5L" is not supported'),
        ("0 0 -5 * * *", "missing a value"),
        ("0 0 0 30 2 *", "schedule never fires: day-of-month 30 does not occur in month 2"),
        ("0 0 0 31 4,6,9,11 *", "schedule never fires"),
        ("H * * * *", '"H" is not a number'),
    ],
)
def test_invalid_schedules_say_what_is_wrong(spec, message):
    with pytest.raises(ScheduleError, match=message) as info:
        parse_schedule(spec)
    assert info.value.field == "schedule"
    assert info.value.http_status == 400


def test_a_never_matching_day_is_accepted_when_ored_with_a_weekday():
    assert fires("0 0 0 30 2 MON", JAN1, 1) == [utc(2024, 2, 5)]


def test_naive_datetimes_are_refused():
    schedule = parse_schedule("@daily")
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("@every 1s", anchor=datetime(2024, 1, 1))


def test_aware_non_utc_inputs_give_utc_outputs():
    schedule = parse_schedule("0 0 12 * * *")
    after = datetime(2024, 1, 1, 13, tzinfo=timezone(timedelta(hours=5)))  # 08:00 UTC
    result = schedule.next_after(after)
    assert result == utc(2024, 1, 1, 12)
    assert result is not None and result.tzinfo is UTC


def test_the_schedule_keeps_the_text_as_written():
    spec = "  0 0 ~ * * *  "
    assert parse_schedule(spec, job_name="x").spec == spec


# ----------------------------------------------------------------------- end of the line


def test_a_schedule_past_year_9999_is_exhausted():
    assert parse_schedule("@yearly").next_after(utc(9999, 6, 1)) is None
    assert parse_schedule("0 0 0 29 2 *").next_after(utc(9997, 1, 1)) is None
    assert parse_schedule("@every 1000h").next_after(utc(9999, 12, 31)) is None


# -------------------------------------------------------------------------------- upcoming


def test_upcoming_lists_the_next_fires():
    schedule = parse_schedule("@every 1m", anchor=JAN1)
    assert upcoming(schedule, JAN1, 3) == [
        utc(2024, 1, 1, 0, 1),
        utc(2024, 1, 1, 0, 2),
        utc(2024, 1, 1, 0, 3),
    ]
    assert upcoming(schedule, JAN1, 0) == []


def test_upcoming_stops_when_the_schedule_ends():
    assert upcoming(parse_schedule("@at 2024-01-02T00:00:00Z"), JAN1, 10) == [utc(2024, 1, 2)]


def test_upcoming_refuses_a_negative_count():
    with pytest.raises(ValueError, match="count must be >= 0"):
        upcoming(parse_schedule("@daily"), JAN1, -1)


# ------------------------------------------------------------------------------ durations


def test_go_durations_read_and_write_as_go_does():
    assert parse_go_duration("1h30m") == 5400.0
    assert parse_go_duration("1.5h") == 5400.0
    assert parse_go_duration("-300ms") == -0.3
    assert parse_go_duration("0") == 0.0
    assert parse_go_duration("1µs") == pytest.approx(1e-6)
    assert format_duration(5400.0) == "1h30m0s"
    assert format_duration(0) == "0s"
    assert format_duration(0.3) == "300ms"
    assert format_duration(90.5) == "1m30.5s"
    with pytest.raises(ValueError, match='unknown unit "x" in duration "10x"'):
        parse_go_duration("10x")
