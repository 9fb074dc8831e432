"""Schedules: parse a job's schedule string and compute its fire times. Pure, no clock.

Forms (see ``docs/schedules.md`` for the user reference):

* cron, 6 fields with seconds first (Dkron): ``0 30 2 * * *``;
* cron, 5 fields (crontab, seconds = 0): ``30 2 * * *``;
* descriptors ``@yearly @annually @monthly @weekly @daily @midnight @hourly @minutely``;
* ``@every <Go duration>``, ``@at <RFC 3339>``, ``@after <RFC 3339> <<ISO 8601 duration>``,
  ``@manually``;
* an optional ``TZ=Zone`` / ``CRON_TZ=Zone`` prefix, and ``~`` (hash spread) in cron fields.

Cron expressions and descriptors are evaluated in the job's time zone (UTC when empty),
with deliberate daylight-saving rules (Vixie cron's): a wall-clock time that falls in a
spring-forward gap fires once at the end of the gap, and a wall-clock time that occurs twice
fires once, on its first occurrence; a schedule whose minute or hour field starts with ``*``
follows real time instead (gap times are skipped, repeated times fire in both passes).

The calendar search runs on wall-clock seconds behind ``_CronCore``: a native search by
default, croniter as the alternative (``set_cron_backend``); the rest does not know which.
"""

from __future__ import annotations

import abc
import calendar
import functools
import math
import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import croniter

from trickle.engine import durations
from trickle.errors import ScheduleError

__all__ = [
    "AfterSchedule",
    "AtSchedule",
    "CronSchedule",
    "EverySchedule",
    "ManualSchedule",
    "Schedule",
    "format_duration",
    "load_timezone",
    "parse_go_duration",
    "parse_iso8601_duration",
    "parse_rfc3339",
    "parse_schedule",
    "set_cron_backend",
    "upcoming",
]

SCHEDULE_FIELD = "schedule"  # ScheduleError.field for a bad schedule string
TIMEZONE_FIELD = "timezone"  # ScheduleError.field for a bad job time zone
MIN_EVERY = 1  # seconds: `@every` shorter than this runs every second (Dkron/robfig)

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH_DATE.toordinal()


# --------------------------------------------------------------------------- public API


class Schedule(abc.ABC):
    """A parsed schedule. ``next_after`` is pure: same inputs, same answer.

    ``spec`` is the schedule string as the user wrote it; ``kind`` is one of ``cron``,
    ``every``, ``at``, ``after``, ``manually``.
    """

    __slots__ = ()

    spec: str  # the schedule string as the user wrote it
    kind: ClassVar[str]

    @abc.abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware UTC datetime in and out).

        None: the schedule will never fire again (``@manually``, a past ``@at``...).
        Raises ``ValueError`` if ``after`` is naive.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for people: what this schedule does (``cron 0 30 2 * * * in UTC``)."""


def parse_schedule(
    spec: str, *, timezone: str = "", job_name: str = "", anchor: datetime | None = None
) -> Schedule:
    """Parse ``spec`` for a job. ``timezone`` '' means UTC; ``job_name`` feeds ``~``;
    ``anchor`` is when the schedule was set (phase of ``@every``, grace of ``@after``).

    ``anchor`` None means the epoch for ``@every`` (fires aligned to multiples of the interval
    since 1970-01-01T00:00:00Z) and "before the time" for ``@at``/``@after``.
    Raises ``ScheduleError`` with a message naming what is wrong: ``field`` is "timezone"
    for an unknown job time zone, "schedule" for everything else. Raises ``ValueError`` for a
    naive ``anchor`` (a programming error, not bad input).
    """
    zone_name, zone = timezone, load_timezone(timezone)
    if anchor is not None:
        anchor = _as_utc(anchor, "anchor")
    text = spec.strip()
    if not text:
        raise ScheduleError("schedule cannot be empty", field=SCHEDULE_FIELD)
    tokens = text.split()
    first = tokens[0]
    if first.startswith(("TZ=", "CRON_TZ=")):
        zone_name = first.partition("=")[2]
        zone = load_timezone(zone_name, prefix=first)
        tokens = tokens[1:]
        if not tokens:
            raise _error(f"missing schedule after {first}")
        first = tokens[0]
    if first.startswith("@"):
        return _parse_descriptor(spec, tokens, zone_name, zone, anchor)
    return _parse_cron(spec, tokens, zone_name, zone, job_name)


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fires after ``after`` (fewer if the schedule ends).

    Raises ``ValueError`` for a negative ``count`` or a naive ``after``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    fires: list[datetime] = []
    current = after
    while len(fires) < count:
        nxt = schedule.next_after(current)
        if nxt is None:
            break
        fires.append(nxt)
        current = nxt
    return fires


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` syntax (``300ms``, ``1h30m``, ``-1.5h``) -> seconds.
    Raises ``ValueError`` with a message (Go's: ``unknown unit "x" in duration "10x"``)."""
    return durations.parse_go_duration(text)


def format_duration(seconds: float) -> str:
    """Seconds -> the Go duration string (``1h30m0s``) that ``parse_go_duration`` reads.

    Go's ``time.Duration.String()`` at nanosecond resolution: ``0s``, ``1.5s``, ``300ms``.
    """
    return durations.format_duration(seconds)


def parse_iso8601_duration(text: str) -> float:
    """An ISO 8601 duration (``PT30M``, ``P1DT2H``, ``PT1.5S``) -> seconds, as Dkron reads it.

    ``T`` is required before hours, minutes and seconds (``P2H`` is rejected); Y counts as
    365 days, M (before ``T``) as 30 days, W as 7 days. A decimal fraction is allowed on the
    last component only. No sign. Raises ``ValueError`` with a message.
    """
    upper = text.strip().upper()
    match = _ISO_RE.fullmatch(upper)
    parts = match.groupdict() if match else {}
    present = [key for key in _ISO_UNITS if parts.get(key) is not None]
    if (
        not match
        or not present
        or (
            match.group("t")
            and not any(parts[key] is not None for key in ("hours", "minutes", "seconds"))
        )
    ):
        hint = ""
        if re.fullmatch(r"P[^T]*\d[HS].*", upper):
            hint = " (hours, minutes and seconds need the T separator, e.g. PT2H)"
        raise ValueError(
            f"invalid ISO 8601 duration {text!r}: expected a form like PT30M, P1D or "
            f"P1DT2H30M{hint}"
        )
    total = 0.0
    for key in present[:-1]:
        if not parts[key].isdigit():
            raise ValueError(
                f"invalid ISO 8601 duration {text!r}: only the last component may have a fraction"
            )
    for key in present:
        total += float(parts[key].replace(",", ".")) * _ISO_UNITS[key]
    return total


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 time as Go's ``time.RFC3339`` layout reads it -> aware UTC datetime.

    ``2024-01-01T09:00:00Z``, ``2024-01-01T09:00:00.5+02:00``; seconds and an offset are
    required. Fractions beyond microseconds are truncated. Raises ``ValueError``.
    """
    match = _RFC3339_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2024-01-01T09:00:00Z")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    offset = 0
    if zone not in ("Z", "z"):
        off_h, off_m = int(zone[1:3]), int(zone[4:6])
        if off_h > 23 or off_m > 59:
            raise ValueError(f"{text!r} has an invalid UTC offset {zone}")
        offset = (off_h * 60 + off_m) * 60 * (-1 if zone[0] == "-" else 1)
    try:
        local = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=UTC,
        )
        return local - timedelta(seconds=offset)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None


def load_timezone(name: str, *, prefix: str = "") -> tzinfo:
    """The zone called ``name`` ('' and 'UTC' are UTC) from the IANA database (zoneinfo).

    Raises ``ScheduleError("unknown time zone X")``; the error's field is "schedule" when the
    name came from a ``TZ=`` prefix (``prefix`` is that prefix), else "timezone".
    """
    if name in ("", "UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if prefix:
            raise _error(f"unknown time zone {name} in {prefix}") from None
        raise ScheduleError(f"unknown time zone {name}", field=TIMEZONE_FIELD) from None


# ---------------------------------------------------------------------------- schedules


@attrs.frozen
class CronSchedule(Schedule):
    """A cron expression (or a descriptor such as ``@daily``) in a time zone.

    ``expression`` is the expression after ``~`` substitution (a descriptor is shown as its
    6-field equivalent); ``timezone`` is the zone it is evaluated in (``UTC`` when none).
    ``follows_real_time`` is true when the minute or hour field starts with ``*`` (daylight
    saving: such schedules skip gap times and fire in both passes of a repeated hour).
    """

    kind: ClassVar[str] = "cron"

    spec: str
    expression: str
    timezone: str
    follows_real_time: bool
    _zone: tzinfo = attrs.field(eq=False, repr=False)
    _core: _CronCore = attrs.field(eq=False, repr=False)

    def describe(self) -> str:
        return f"cron {self.expression} in {self.timezone}"

    def next_after(self, after: datetime) -> datetime | None:
        a = _as_utc(after, "after").timestamp()
        try:
            if self._zone is UTC:
                found = self._core.next_wall(a)
            else:
                found = self._next_in_zone(a)
            return None if found is None else datetime.fromtimestamp(found, UTC)
        except (OverflowError, ValueError):  # beyond year 9999: nothing more to fire
            return None

    # The search runs on "wall seconds": local wall-clock time written as if it were UTC.
    # Every instant after an unambiguous wall time w has a wall time > w, so a forward
    # search on wall time finds fires in order; only a repeated (fall-back) span needs care.

    def _next_in_zone(self, a: float) -> int | None:
        zone = self._zone
        local = datetime.fromtimestamp(a, zone)
        off = _seconds(local.utcoffset())
        other = _seconds(local.replace(fold=1 - local.fold).utcoffset())
        wall = a + off
        if other == off:
            return self._scan(wall)
        # `after` is inside a repeated span [start, end) of wall time.
        off0, off1 = (off, other) if local.fold == 0 else (other, off)
        ai = math.floor(a)
        if local.fold == 0:
            t = _transition(zone, ai, math.ceil(a) + (off0 - off1))
        else:
            t = _transition(zone, ai - (off0 - off1), math.ceil(a))
        end = t + off0
        start = t + off1
        core = self._core
        if local.fold == 0:  # first pass: the rest of it, then the second pass
            w = core.next_wall(wall)
            if w is not None and w < end:
                return w - off0
            if self.follows_real_time:
                w = core.next_wall(start - 1)
                if w is not None and w < end:
                    return w - off1
        elif self.follows_real_time:  # second pass
            w = core.next_wall(wall)
            if w is not None and w < end:
                return w - off1
        return self._scan(end - 1)

    def _scan(self, wall: float) -> int | None:
        """The first fire at a wall time after ``wall`` (which is not in a repeated span)."""
        zone = self._zone
        core = self._core
        while True:
            w = core.next_wall(wall)
            if w is None:
                return None
            naive = _EPOCH_NAIVE + timedelta(seconds=w)
            local = naive.replace(tzinfo=zone)
            off0 = _seconds(local.utcoffset())
            off1 = _seconds(local.replace(fold=1).utcoffset())
            if off0 >= off1:  # an ordinary time, or the first pass of a repeated one
                return w - off0
            # w does not exist (spring-forward gap): the transition is the first valid
            # instant after it.
            t = _transition(zone, math.floor(w - off1), math.ceil(w - off0))
            if not self.follows_real_time:
                return t
            wall = t + off1 - 1  # skip the rest of the gap


@attrs.frozen
class EverySchedule(Schedule):
    """``@every d``: fires at ``anchor + k*interval`` for k >= 1 (anchor None = the epoch).

    ``interval`` is whole seconds (>= 1); the anchor keeps its sub-second phase.
    """

    kind: ClassVar[str] = "every"

    spec: str
    interval: int
    anchor: datetime | None

    def describe(self) -> str:
        start = "the epoch" if self.anchor is None else _iso(self.anchor)
        return f"every {format_duration(self.interval)} from {start}"

    def next_after(self, after: datetime) -> datetime | None:
        after = _as_utc(after, "after")
        base = _EPOCH_UTC if self.anchor is None else self.anchor
        step = timedelta(seconds=self.interval)
        try:
            if after < base:
                return base + step
            return base + ((after - base) // step + 1) * step
        except OverflowError:
            return None


@attrs.frozen
class AtSchedule(Schedule):
    """``@at T``: fires once at ``at``, unless it was set (``anchor``) after ``at``."""

    kind: ClassVar[str] = "at"

    spec: str
    at: datetime
    anchor: datetime | None

    def describe(self) -> str:
        if self.anchor is not None and self.anchor > self.at:
            return f"once at {_iso(self.at)} (already past when set: never)"
        return f"once at {_iso(self.at)}"

    def next_after(self, after: datetime) -> datetime | None:
        after = _as_utc(after, "after")
        if self.anchor is not None and self.anchor > self.at:
            return None
        return self.at if self.at > after else None


@attrs.frozen
class AfterSchedule(Schedule):
    """``@after T <G``: once at ``at`` if set by then; set within ``(at, at+grace]``: once at
    the anchor (the moment it was set); set later: never."""

    kind: ClassVar[str] = "after"

    spec: str
    at: datetime
    grace: timedelta
    anchor: datetime | None

    @property
    def fire(self) -> datetime | None:
        """The single fire time, or None when the schedule was set after the grace window."""
        if self.anchor is None or self.anchor <= self.at:
            return self.at
        if self.anchor <= self.at + self.grace:
            return self.anchor
        return None

    def describe(self) -> str:
        fire = self.fire
        grace = format_duration(self.grace.total_seconds())
        window = f"at {_iso(self.at)} with {grace} of grace"
        if fire is None:
            return f"once {window} (set too late: never)"
        return f"once {window}" if fire == self.at else f"once {window} (late, at {_iso(fire)})"

    def next_after(self, after: datetime) -> datetime | None:
        after = _as_utc(after, "after")
        fire = self.fire
        return fire if fire is not None and fire > after else None


@attrs.frozen
class ManualSchedule(Schedule):
    """``@manually``: never fires by itself; manual and dependent runs still work."""

    kind: ClassVar[str] = "manually"

    spec: str

    def describe(self) -> str:
        return "manually (never by itself)"

    def next_after(self, after: datetime) -> datetime | None:
        _as_utc(after, "after")
        return None


# --------------------------------------------------------------------------- the backend
#
# A backend finds the first wall second (local wall-clock time written as if it were UTC)
# strictly after a given one that matches a cron expression; it knows nothing of zones.
# Two exist: "native" (the default: a field-by-field search, ~10x faster) and "croniter".
# Both are exercised by the test suite against each other.


@attrs.frozen
class _CronFields:
    """A cron expression as value sets; ``dom``/``dow`` None means "every day"."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    dom: frozenset[int] | None
    months: tuple[int, ...]
    dow: frozenset[int] | None  # 0 = Sunday
    day_or: bool  # both dom and dow restricted: a day matches either (Vixie)

    def croniter_expression(self) -> str:
        """The 6-field, seconds-first, numbers-only text croniter reads (day rule apart)."""

        def text(values: tuple[int, ...] | frozenset[int] | None, size: int) -> str:
            if values is None or len(values) == size:
                return "*"
            return ",".join(str(v) for v in sorted(values))

        return " ".join(
            [
                text(self.seconds, 60),
                text(self.minutes, 60),
                text(self.hours, 24),
                text(self.dom, 31),
                text(self.months, 12),
                text(self.dow, 7),
            ]
        )


class _CronCore(abc.ABC):
    """The calendar search for one expression. Thread-safe."""

    __slots__ = ("__weakref__",)

    @abc.abstractmethod
    def next_wall(self, wall: float) -> int | None:
        """The first matching wall second strictly after ``wall``; None if there is none."""


class _NativeCore(_CronCore):
    """Field-by-field search: month, day, hour, minute, second, carrying upward."""

    __slots__ = ("_all_days", "_f", "_month_set")

    def __init__(self, fields: _CronFields) -> None:
        self._f = fields
        self._month_set = frozenset(fields.months)
        self._all_days = fields.dom is None and fields.dow is None

    def next_wall(self, wall: float) -> int | None:
        months = self._f.months
        t = math.floor(wall) + 1
        try:
            while True:
                day_start = t - t % 86400
                day = _EPOCH_DATE + timedelta(days=day_start // 86400)
                y, mo, d = day.year, day.month, day.day
                if mo not in self._month_set:
                    i = bisect_left(months, mo)
                    if i == len(months):
                        t = _day_seconds(y + 1, months[0], 1)
                    else:
                        t = _day_seconds(y, months[i], 1)
                    continue
                if not self._all_days:
                    found = self._first_day(y, mo, d)
                    if found is None:
                        t = _day_seconds(y + 1, 1, 1) if mo == 12 else _day_seconds(y, mo + 1, 1)
                        continue
                    if found != d:
                        t = _day_seconds(y, mo, found)
                        continue
                found = self._time_of_day(t - day_start)
                if found is None:
                    t = day_start + 86400
                    continue
                return day_start + found
        except (OverflowError, ValueError):  # past year 9999
            return None

    def _time_of_day(self, start: int) -> int | None:
        """The first matching second of the day at or after ``start`` (seconds since 00:00)."""
        f = self._f
        hours, minutes, seconds = f.hours, f.minutes, f.seconds
        h, rest = divmod(start, 3600)
        mi, s = divmod(rest, 60)
        while True:
            i = bisect_left(hours, h)
            if i == len(hours):
                return None
            if hours[i] != h:
                h, mi, s = hours[i], 0, 0
            i = bisect_left(minutes, mi)
            if i == len(minutes):
                h, mi, s = h + 1, 0, 0
                continue
            if minutes[i] != mi:
                mi, s = minutes[i], 0
            i = bisect_left(seconds, s)
            if i == len(seconds):
                mi, s = mi + 1, 0
                if mi == 60:
                    h, mi = h + 1, 0
                continue
            return h * 3600 + mi * 60 + seconds[i]

    def _first_day(self, y: int, mo: int, d: int) -> int | None:
        f = self._f
        dom, dow = f.dom, f.dow
        last = _MAX_DAYS[mo] if mo != 2 else (29 if calendar.isleap(y) else 28)
        weekday = (date(y, mo, d).weekday() + 1) % 7  # cron numbering: Sunday = 0
        for day in range(d, last + 1):
            if f.day_or:
                assert dom is not None and dow is not None
                if day in dom or weekday in dow:
                    return day
            elif (dom is None or day in dom) and (dow is None or weekday in dow):
                return day
            weekday = 0 if weekday == 6 else weekday + 1
        return None


class _CroniterCore(_CronCore):
    """croniter on naive wall seconds (it never sees a zone). The iterator is built lazily."""

    __slots__ = ("_day_or", "_expr", "_iter", "_lock")

    def __init__(self, fields: _CronFields) -> None:
        self._expr = fields.croniter_expression()
        self._day_or = fields.day_or
        self._iter: croniter | None = None
        self._lock = threading.Lock()

    def next_wall(self, wall: float) -> int | None:
        with self._lock:
            it = self._iter
            if it is None:
                it = self._iter = croniter(
                    self._expr, 0.0, second_at_beginning=True, day_or=self._day_or
                )
            try:
                it.set_current(wall, force=True)
                return int(it.get_next(float))
            except (ValueError, OverflowError):  # CroniterBadDateError, or past year 9999
                return None


_BACKENDS: dict[str, type[_CronCore]] = {"native": _NativeCore, "croniter": _CroniterCore}
_backend = "native"
_CORES: weakref.WeakValueDictionary[tuple[str, _CronFields], _CronCore] = (
    weakref.WeakValueDictionary()
)
_CORES_LOCK = threading.Lock()


def set_cron_backend(name: str) -> str:
    """Choose the calendar search for schedules parsed from now on: "native" (default) or
    "croniter". Returns the previous choice. Meant for tests and comparisons."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"unknown cron backend {name!r}, expected one of {sorted(_BACKENDS)}")
    previous, _backend = _backend, name
    return previous


def _core_for(fields: _CronFields) -> _CronCore:
    """The shared core for these fields (schedules with equal expressions share one)."""
    key = (_backend, fields)
    with _CORES_LOCK:
        core = _CORES.get(key)
        if core is None:
            core = _CORES[key] = _BACKENDS[_backend](fields)  # type: ignore[call-arg]
        return core


def _day_seconds(y: int, mo: int, d: int) -> int:
    return (date(y, mo, d).toordinal() - _EPOCH_ORDINAL) * 86400


# ------------------------------------------------------------------------- cron parsing

_MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DOW_NAMES = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_MAX_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


@attrs.frozen
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = attrs.field(factory=dict)
    hint: str = ""


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, "JAN-DEC")
_DOW6 = _Field("day-of-week", 0, 6, _DOW_NAMES, "SUN-SAT")
_DOW5 = _Field("day-of-week", 0, 7, _DOW_NAMES, "SUN-SAT")  # crontab: 7 is Sunday too

_FIELDS = {
    6: (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW6),
    5: (_MINUTE, _HOUR, _DOM, _MONTH, _DOW5),
}
# Dkron's `~`: (modulus, offset) per field, seconds first.
_HASH = {
    6: ((60, 0), (60, 0), (24, 0), (28, 1), (12, 1), (7, 0)),
    5: ((60, 0), (24, 0), (28, 1), (12, 1), (7, 0)),
}

_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
    "@minutely": "0 * * * * *",
}


def _parse_cron(
    spec: str, tokens: list[str], zone_name: str, zone: tzinfo, job_name: str
) -> CronSchedule:
    count = len(tokens)
    if count not in _FIELDS:
        raise _error(f"expected 5 or 6 fields, found {count}: [{' '.join(tokens)}]")
    if any("~" in token for token in tokens):
        tokens = _apply_hash(tokens, job_name)
    return _build_cron(spec, tokens, zone_name, zone)


def _apply_hash(tokens: list[str], job_name: str) -> list[str]:
    """Dkron's ``~``: every ``~`` becomes a number derived from the job name."""
    digest = sum(ord(ch) for ch in job_name)
    return [
        token.replace("~", str(digest % mod + offset)) if "~" in token else token
        for token, (mod, offset) in zip(tokens, _HASH[len(tokens)], strict=True)
    ]


def _build_cron(spec: str, tokens: list[str], zone_name: str, zone: tzinfo) -> CronSchedule:
    fields, follows_real_time = _compile_cron(tuple(tokens))
    return CronSchedule(
        spec=spec,
        expression=" ".join(tokens),
        timezone=zone_name or "UTC",
        follows_real_time=follows_real_time,
        zone=zone,
        core=_core_for(fields),
    )


@functools.lru_cache(maxsize=4096)
def _compile_cron(tokens: tuple[str, ...]) -> tuple[_CronFields, bool]:
    """5 or 6 cron fields (after ``~``) -> value sets, and whether the schedule follows real
    time across DST changes (its minute or hour field starts with ``*``)."""
    specs = _FIELDS[len(tokens)]
    parsed = [_parse_field(token, field) for token, field in zip(tokens, specs, strict=True)]
    if len(tokens) == 5:
        parsed.insert(0, (frozenset({0}), False))  # crontab: seconds = 0
        dow_values, dow_star = parsed[5]
        parsed[5] = (frozenset(0 if v == 7 else v for v in dow_values), dow_star)
    (
        (secs, _),
        (mins, min_star),
        (hours, hour_star),
        (dom, dom_star),
        (months, _),
        (dow, dow_star),
    ) = parsed
    # DOM/DOW (Vixie, robfig): AND when either field starts with `*`, OR otherwise.
    day_or = not (dom_star or dow_star)
    dom_all, dow_all = len(dom) == 31, len(dow) == 7
    if day_or and (dom_all or dow_all):
        day_or = False  # one side matches every day, so the union does too
        dom_all = dow_all = True
    if not day_or and not any(day <= _MAX_DAYS[month] for day in dom for month in months):
        # (an OR of two restricted fields always matches some day)
        raise _error(
            f"schedule never fires: day-of-month {tokens[-3]} does not occur in month {tokens[-2]}"
        )
    fields = _CronFields(
        seconds=tuple(sorted(secs)),
        minutes=tuple(sorted(mins)),
        hours=tuple(sorted(hours)),
        dom=None if dom_all else dom,
        months=tuple(sorted(months)),
        dow=None if dow_all else dow,
        day_or=day_or,
    )
    return fields, min_star or hour_star


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """A field's values and whether it starts with ``*`` or ``?`` (an unrestricted field)."""
    values: set[int] = set()
    for part in text.split(","):
        values.update(_parse_range(part, text, field))
    return frozenset(values), text[0] in "*?"


def _parse_range(part: str, text: str, field: _Field) -> range:
    def fail(problem: str) -> ScheduleError:
        return _error(f'invalid {field.name} field "{text}": {problem}')

    if not part:
        raise fail("empty item in a list")
    range_text, slash, step_text = part.partition("/")
    if "/" in step_text:
        raise fail(f'too many slashes in "{part}"')
    if range_text in ("*", "?"):
        low, high, single = field.low, field.high, False
        if field is _DOW5:
            high = 6
    else:
        bounds = range_text.split("-")
        if len(bounds) > 2:
            raise fail(f'too many hyphens in "{part}"')
        low = _value(bounds[0], field, fail)
        high = _value(bounds[1], field, fail) if len(bounds) == 2 else low
        single = len(bounds) == 1
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise fail(f'step "{step_text}" must be a positive whole number')
        step = int(step_text)
        if single:
            high = field.high  # "N/step" means "N-max/step"
            if field is _DOW5:
                high = 6
    for value in (low, high):
        if value < field.low:
            raise fail(f"{value} is below the minimum {field.low}")
        if value > field.high:
            extra = (
                " (use 0 for Sunday in 6-field schedules)"
                if (field is _DOW6 and value == 7)
                else ""
            )
            raise fail(f"{value} is above the maximum {field.high}{extra}")
    if low > high:
        raise fail(f"range start {low} is after its end {high}")
    return range(low, high + 1, step)


def _value(token: str, field: _Field, fail: Callable[[str], ScheduleError]) -> int:
    if token.isascii() and token.isdigit():
        return int(token)
    named = field.names.get(token.upper())
    if named is not None:
        return named
    what = f"a number or a name ({field.hint})" if field.names else "a number"
    if not token:
        raise fail(f"missing a value, expected {what}")
    if re.search(r"[LW#]", token.upper()):
        raise fail(f'"{token}" is not supported (there is no L, W or # in cron expressions)')
    raise fail(f'"{token}" is not {what}')


# ------------------------------------------------------------------ descriptor parsing

_AT_USAGE = "expected @at <RFC 3339 time>, e.g. @at 2024-01-01T09:00:00Z"
_AFTER_USAGE = (
    "expected @after <RFC 3339 time> <<ISO 8601 duration>, e.g. @after 2024-01-01T09:00:00Z <PT30M"
)
_EVERY_USAGE = "expected @every <duration>, e.g. @every 10s or @every 1h30m"


def _parse_descriptor(
    spec: str, tokens: list[str], zone_name: str, zone: tzinfo, anchor: datetime | None
) -> Schedule:
    name = tokens[0].lower()
    args = tokens[1:]
    if name in _DESCRIPTORS or name == "@manually":
        if args:
            raise _error(f"unexpected text after {tokens[0]}: {' '.join(args)}")
        if name == "@manually":
            return ManualSchedule(spec=spec)
        return _build_cron(spec, _DESCRIPTORS[name].split(), zone_name, zone)
    if name == "@every":
        return _parse_every(spec, args, anchor)
    if name == "@at":
        if len(args) != 1:
            raise _error(f"{'missing time' if not args else 'too many values'} in @at: {_AT_USAGE}")
        try:
            at = parse_rfc3339(args[0])
        except ValueError as exc:
            raise _error(f"failed to parse date @at {args[0]}: {exc}") from None
        return AtSchedule(spec=spec, at=at, anchor=anchor)
    if name == "@after":
        return _parse_after(spec, args, anchor)
    raise _error(
        f"unknown descriptor {tokens[0]} (known: @yearly @annually @monthly @weekly @daily "
        "@midnight @hourly @minutely @every @at @after @manually)"
    )


def _parse_every(spec: str, args: list[str], anchor: datetime | None) -> EverySchedule:
    if not args:
        raise _error(f"missing duration in @every: {_EVERY_USAGE}")
    text = " ".join(args)
    try:
        ns = durations.parse_go_duration_nanos(text)
    except ValueError as exc:
        raise _error(f"invalid duration {text} in @every {text}: {exc}") from None
    if ns <= 0:
        raise _error(f"@every needs a positive duration, got {text}")
    interval = max(MIN_EVERY, ns // 1_000_000_000)  # sub-second part truncated, as Dkron
    # The anchor keeps its sub-second phase (Dkron truncates it to the second): jobs set at
    # different moments fire at different moments, instead of all on the whole second.
    return EverySchedule(spec=spec, interval=interval, anchor=anchor)


def _parse_after(spec: str, args: list[str], anchor: datetime | None) -> AfterSchedule:
    if len(args) != 2:
        raise _error(f"@after needs a time and a grace period: {_AFTER_USAGE}")
    time_text, grace_text = args
    try:
        at = parse_rfc3339(time_text)
    except ValueError as exc:
        raise _error(f"failed to parse date @after {time_text}: {exc}") from None
    if not grace_text.startswith("<"):
        raise _error(f'the grace period "{grace_text}" must start with "<": {_AFTER_USAGE}')
    try:
        seconds = parse_iso8601_duration(grace_text[1:])
    except ValueError as exc:
        raise _error(f"invalid grace period in @after: {exc}") from None
    if seconds <= 0:
        raise _error(f"the grace period in @after must be greater than zero, got {grace_text[1:]}")
    try:
        grace = timedelta(seconds=seconds)
    except OverflowError:
        raise _error(f"the grace period {grace_text[1:]} in @after is too long") from None
    return AfterSchedule(spec=spec, at=at, grace=grace, anchor=anchor)


# ---------------------------------------------------------------- durations and times

_ISO_NUM = r"\d+(?:[.,]\d+)?"
_ISO_RE = re.compile(
    rf"P(?:(?P<years>{_ISO_NUM})Y)?(?:(?P<months>{_ISO_NUM})M)?"
    rf"(?:(?P<weeks>{_ISO_NUM})W)?(?:(?P<days>{_ISO_NUM})D)?"
    rf"(?P<t>T(?:(?P<hours>{_ISO_NUM})H)?(?:(?P<minutes>{_ISO_NUM})M)?"
    rf"(?:(?P<seconds>{_ISO_NUM})S)?)?"
)
_ISO_UNITS = {
    "years": 365 * 86400,
    "months": 30 * 86400,
    "weeks": 7 * 86400,
    "days": 86400,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
}
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


# --------------------------------------------------------------------------- helpers


def _error(message: str) -> ScheduleError:
    return ScheduleError(message, field=SCHEDULE_FIELD)


def _as_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _seconds(offset: timedelta | None) -> int:
    assert offset is not None
    return offset.days * 86400 + offset.seconds


def _transition(zone: tzinfo, low: int, high: int) -> int:
    """The first whole second in (low, high] whose UTC offset is the one at ``high``.

    Requires exactly one offset change in between (the offsets at ``low`` and ``high`` differ).
    """
    target = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == target:
            high = mid
        else:
            low = mid
    return high


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
