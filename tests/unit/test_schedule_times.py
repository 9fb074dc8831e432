"""The time and duration syntaxes inside schedules: ISO 8601 grace periods (``@after``) and
RFC 3339 times (``@at``, ``@after``), read as Dkron reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trickle.engine.schedule import parse_iso8601_duration, parse_rfc3339

DAY = 86400


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT30M", 1800),
        ("PT2H", 7200),
        ("PT1.5S", 1.5),
        ("PT0,5S", 0.5),
        ("P1D", DAY),
        ("P1W", 7 * DAY),
        ("P1M", 30 * DAY),
        ("P1Y", 365 * DAY),
        ("P1DT2H30M", DAY + 2 * 3600 + 1800),
        ("P1Y2M3W4DT5H6M7S", 365 * DAY + 60 * DAY + 21 * DAY + 4 * DAY + 5 * 3600 + 6 * 60 + 7),
        ("PT1H0.5M", 3630),
        ("pt30m", 1800),
        ("PT0S", 0),
    ],
)
def test_iso8601_durations(text, seconds):
    assert parse_iso8601_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("P2H", "need the T separator"),
        ("P30S", "need the T separator"),
        ("PT", "invalid ISO 8601 duration 'PT'"),
        ("P", "invalid ISO 8601 duration 'P'"),
        ("P1DT", "invalid ISO 8601 duration"),
        ("30M", "invalid ISO 8601 duration"),
        ("-PT1H", "invalid ISO 8601 duration"),
        ("PT1.5H30M", "only the last component may have a fraction"),
        ("PT1M1H", "invalid ISO 8601 duration"),  # out of order
        ("", "invalid ISO 8601 duration"),
    ],
)
def test_bad_iso8601_durations(text, message):
    with pytest.raises(ValueError, match=message):
        parse_iso8601_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T09:00:00Z", datetime(2024, 1, 1, 9, tzinfo=UTC)),
        ("2024-01-01t09:00:00z", datetime(2024, 1, 1, 9, tzinfo=UTC)),
        ("2024-01-01T09:00:00+02:00", datetime(2024, 1, 1, 7, tzinfo=UTC)),
        ("2024-01-01T09:00:00-05:30", datetime(2024, 1, 1, 14, 30, tzinfo=UTC)),
        ("2024-01-01T00:30:00+01:00", datetime(2023, 12, 31, 23, 30, tzinfo=UTC)),
        (
            "2024-01-01T09:00:00.123456789Z",
            datetime(2024, 1, 1, 9, tzinfo=UTC) + timedelta(microseconds=123456),
        ),
        ("2024-01-01T09:00:00.5Z", datetime(2024, 1, 1, 9, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_rfc3339_times(text, expected):
    result = parse_rfc3339(text)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01",
        "2024-01-01T09:00Z",  # seconds are required
        "2024-01-01T09:00:00",  # so is the offset
        "2024-01-01 09:00:00Z",
        "2024-1-1T09:00:00Z",
        "2024-13-01T09:00:00Z",
        "2024-02-30T09:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T09:00:00+24:00",
        "2024-01-01T09:00:00+0200",
        "tomorrow",
    ],
)
def test_bad_rfc3339_times(text):
    with pytest.raises(ValueError, match=repr(text).replace("+", r"\+")):
        parse_rfc3339(text)
