"""Go duration strings: parse_go_duration and format_duration (Go's Duration.String)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trickle.engine.durations import (
    format_duration,
    format_duration_nanos,
    parse_go_duration,
    parse_go_duration_nanos,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("10s", 10.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        ("-1.5h", -5400.0),
        ("+2m", 120.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2h45m0.5s", 9900.5),
        ("1us", 1e-6),
        ("1µs", 1e-6),
        ("1μs", 1e-6),
        ("100ns", 1e-7),
        ("1h1h", 7200.0),
    ],
)
def test_parses_go_syntax(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'invalid duration ""'),
        ("abc", 'invalid duration "abc"'),
        ("-", 'invalid duration "-"'),
        (".s", 'invalid duration ".s"'),
        ("10", 'missing unit in duration "10"'),
        ("1h30", 'missing unit in duration "1h30"'),
        ("1d", 'unknown unit "d" in duration "1d"'),
        ("5 s", 'unknown unit " s"'),
        ("9999999999h", "out of range"),
    ],
)
def test_rejects_bad_durations_with_gos_messages(text, message):
    with pytest.raises(ValueError, match=message):
        parse_go_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (5400, "1h30m0s"),
        (61, "1m1s"),
        (1.5, "1.5s"),
        (0.3, "300ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2µs"),
        (1e-9, "1ns"),
        (-90, "-1m30s"),
        (86400, "24h0m0s"),
        (3600.25, "1h0m0.25s"),
    ],
)
def test_formats_like_gos_duration_string(seconds, text):
    assert format_duration(seconds) == text


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_format_then_parse_round_trips_nanoseconds(nanos):
    assert parse_go_duration_nanos(format_duration_nanos(nanos)) == nanos
