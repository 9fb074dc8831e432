"""Properties of cron schedules over random expressions (hypothesis).

- fires are strictly increasing, strictly after ``after``, aware UTC, and each one is a
  matching wall-clock time (or the end of a daylight-saving gap);
- around real DST changes in many zones, the fires equal a brute-force reference model that
  enumerates every wall-clock minute and applies the documented DST rules;
- the native calendar search and croniter give the same fires.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trickle.engine.schedule import CronSchedule, parse_schedule, set_cron_backend, upcoming
from trickle.errors import ScheduleError

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@attrs.frozen
class Field:
    text: str
    values: frozenset[int]
    star: bool  # starts with * or ?


@attrs.frozen
class Spec:
    """A random cron expression and what it should mean, computed independently."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    dom: Field
    months: frozenset[int]
    dow: frozenset[int]  # 0 = Sunday (7 folded in)
    dow_star: bool
    follows_real_time: bool

    def matches(self, wall: datetime) -> bool:
        if not (
            wall.second in self.seconds
            and wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
        ):
            return False
        in_dom = wall.day in self.dom.values
        in_dow = (wall.weekday() + 1) % 7 in self.dow
        if self.dom.star or self.dow_star:
            return in_dom and in_dow
        return in_dom or in_dow

    def possible(self) -> bool:
        if not (self.dom.star or self.dow_star):
            return True
        return any(d <= MAX_DAYS[m] for d in self.dom.values for m in self.months)


@st.composite
def fields(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> Field:
    """One cron field; ``names`` (indexed from ``low``) may replace numbers."""
    star_high = min(high, 6) if names is DAYS else high  # crontab's 7 only when written

    def value(v: int) -> str:
        if names and v - low < len(names) and draw(st.booleans()):
            name = names[v - low]
            return draw(st.sampled_from([name, name.lower(), name.capitalize()]))
        return str(v)

    def item() -> tuple[str, set[int]]:
        kind = draw(st.sampled_from(["value", "range", "range_step", "start_step"]))
        a = draw(st.integers(low, high))
        if kind == "value":
            return value(a), {a}
        if kind == "start_step":
            a = min(a, star_high)
            k = draw(st.integers(1, high - low + 1))
            return f"{value(a)}/{k}", set(range(a, star_high + 1, k))
        b = draw(st.integers(a, high))
        if kind == "range":
            return f"{value(a)}-{value(b)}", set(range(a, b + 1))
        k = draw(st.integers(1, b - a + 1))
        return f"{value(a)}-{value(b)}/{k}", set(range(a, b + 1, k))

    kind = draw(st.sampled_from(["star", "question", "star_step", "item", "list"]))
    if kind in ("star", "question"):
        return Field("*" if kind == "star" else "?", frozenset(range(low, star_high + 1)), True)
    if kind == "star_step":
        k = draw(st.integers(1, star_high - low + 1))
        return Field(f"*/{k}", frozenset(range(low, star_high + 1, k)), True)
    if kind == "item":
        text, values = item()
        return Field(text, frozenset(values), False)
    parts = [item() for _ in range(draw(st.integers(2, 3)))]
    values = set().union(*(v for _, v in parts))
    return Field(",".join(t for t, _ in parts), frozenset(values), False)


@st.composite
def cron_specs(draw: st.DrawFn, *, few_seconds: bool = False) -> Spec:
    six = draw(st.booleans())
    if not six:
        seconds = Field("", frozenset({0}), False)
    elif few_seconds:
        seconds = draw(
            st.sampled_from(
                [
                    Field("0", frozenset({0}), False),
                    Field("15,45", frozenset({15, 45}), False),
                    Field("*/30", frozenset({0, 30}), True),
                ]
            )
        )
    else:
        seconds = draw(fields(0, 59))
    minutes = draw(fields(0, 59))
    hours = draw(fields(0, 23))
    dom = draw(fields(1, 31))
    months = draw(fields(1, 12, MONTHS))
    dow = draw(fields(0, 6 if six else 7, DAYS))
    tokens = [minutes.text, hours.text, dom.text, months.text, dow.text]
    if six:
        tokens.insert(0, seconds.text)
    return Spec(
        text=" ".join(tokens),
        seconds=seconds.values,
        minutes=minutes.values,
        hours=hours.values,
        dom=dom,
        months=months.values,
        dow=frozenset(0 if v == 7 else v for v in dow.values),
        dow_star=dow.star,
        follows_real_time=minutes.star or hours.star,
    )


@contextmanager
def backend(name: str) -> Iterator[None]:
    previous = set_cron_backend(name)
    try:
        yield
    finally:
        set_cron_backend(previous)


def parse_or_reject(spec: Spec, zone: str = "") -> CronSchedule:
    try:
        schedule = parse_schedule(spec.text, timezone=zone)
    except ScheduleError as exc:
        assert not spec.possible(), f"{spec.text!r} rejected: {exc}"
        assume(False)
        raise
    assert spec.possible()
    assert isinstance(schedule, CronSchedule)
    assert schedule.follows_real_time == spec.follows_real_time
    return schedule


instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)
ZONES = ["", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"]


# ------------------------------------------------------------------- basic properties


@settings(max_examples=150, deadline=None)
@given(spec=cron_specs(), zone=st.sampled_from(ZONES), after=instants)
def test_fires_increase_strictly_after_the_start_and_match_the_expression(spec, zone, after):
    schedule = parse_or_reject(spec, zone)
    got = upcoming(schedule, after, 6)
    assert got, "a possible cron expression always fires again"
    previous = after
    tz = ZoneInfo(zone) if zone else UTC
    for fire in got:
        assert fire.tzinfo is UTC
        assert fire > previous
        previous = fire
        wall = fire.astimezone(tz).replace(tzinfo=None)
        if not spec.matches(wall):
            # only the end of a spring-forward gap may stand in for a missing time
            assert not spec.follows_real_time
            assert (fire - timedelta(seconds=1)).astimezone(tz).utcoffset() != fire.astimezone(
                tz
            ).utcoffset()


@settings(max_examples=150, deadline=None)
@given(spec=cron_specs(), after=instants)
def test_native_search_and_croniter_agree(spec, after):
    with backend("native"):
        native = upcoming(parse_or_reject(spec), after, 8)
    with backend("croniter"):
        reference = upcoming(parse_or_reject(spec), after, 8)
    assert native == reference


# ---------------------------------------------------------- DST against a reference model

# (zone, a UTC day on or next to an offset change)
CHANGES = [
    ("Europe/Berlin", datetime(2024, 3, 31)),
    ("Europe/Berlin", datetime(2024, 10, 27)),
    ("America/New_York", datetime(2024, 3, 10)),
    ("America/New_York", datetime(2024, 11, 3)),
    ("Australia/Sydney", datetime(2024, 4, 6)),
    ("Australia/Sydney", datetime(2024, 10, 5)),
    ("Australia/Lord_Howe", datetime(2024, 4, 6)),  # 30-minute shift
    ("Australia/Lord_Howe", datetime(2024, 10, 5)),
    ("America/Santiago", datetime(2024, 4, 7)),  # at midnight
    ("America/Santiago", datetime(2024, 9, 8)),
    ("America/Havana", datetime(2024, 3, 10)),
    ("America/Havana", datetime(2024, 11, 3)),
    ("Antarctica/Troll", datetime(2024, 3, 31)),  # two-hour shift
    ("Antarctica/Troll", datetime(2024, 10, 27)),
    ("Pacific/Apia", datetime(2011, 12, 30)),  # a skipped day
]


def reference_fires(spec: Spec, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every fire in (start, end]: each matching wall-clock second, mapped by the DST rules."""
    out: set[datetime] = set()
    wall = start.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
    wall -= timedelta(hours=3)
    last = end.astimezone(zone).replace(tzinfo=None) + timedelta(hours=3)
    gap: tuple[datetime, datetime] | None = None  # (a wall in the gap, the first wall after)

    def exists(w: datetime) -> bool:
        return w.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == w

    while wall <= last:
        if wall.minute in spec.minutes and wall.hour in spec.hours:
            for second in sorted(spec.seconds):
                w = wall.replace(second=second)
                if not spec.matches(w):
                    continue
                first = w.replace(tzinfo=zone, fold=0).astimezone(UTC)
                second_pass = w.replace(tzinfo=zone, fold=1).astimezone(UTC)
                if first == second_pass:
                    out.add(first)
                elif exists(w):  # a repeated time
                    out.add(first)
                    if spec.follows_real_time:
                        out.add(second_pass)
                elif not spec.follows_real_time:  # a missing time: the end of the gap
                    if gap is None or not (gap[0] <= w < gap[1]):
                        after_gap = w.replace(second=0)
                        while not exists(after_gap):
                            after_gap += timedelta(minutes=1)
                        gap = (w, after_gap)
                    out.add(gap[1].replace(tzinfo=zone).astimezone(UTC))
        wall += timedelta(minutes=1)
    return sorted(t for t in out if start < t <= end)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=cron_specs(few_seconds=True),
    change=st.sampled_from(CHANGES),
    shift=st.integers(-36 * 60, 6 * 60),
    which=st.sampled_from(["native", "croniter"]),
)
def test_fires_around_dst_changes_equal_the_reference_model(spec, change, shift, which):
    zone_name, day = change
    zone = ZoneInfo(zone_name)
    start = day.replace(tzinfo=UTC) + timedelta(minutes=shift, seconds=17)
    end = start + timedelta(hours=40)
    with backend(which):
        schedule = parse_or_reject(spec, zone_name)
    got: list[datetime] = []
    current = start
    while True:
        nxt = schedule.next_after(current)
        assert nxt is not None
        if nxt > end:
            break
        got.append(nxt)
        current = nxt
    assert got == reference_fires(spec, zone, start, end)
