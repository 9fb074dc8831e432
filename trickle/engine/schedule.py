"""Schedules: parse a job's schedule string and compute its fire times. Pure, no clock.

CONTRACT (implementation to be written): see the docstrings.
"""

from __future__ import annotations

import abc
from datetime import datetime

from trickle.errors import ScheduleError  # noqa: F401  (raised by everything here)


class Schedule(abc.ABC):
    """A parsed schedule. ``next_after`` is pure: same inputs, same answer."""

    spec: str  # the schedule string as the user wrote it

    @abc.abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware UTC datetime in and out).

        None: the schedule will never fire again (``@manually``, a past ``@at``...).
        """


def parse_schedule(
    spec: str, *, timezone: str = "", job_name: str = "", anchor: datetime | None = None
) -> Schedule:
    """Parse ``spec`` for a job. ``timezone`` '' means UTC; ``job_name`` feeds ``~``;
    ``anchor`` is when the schedule was set (phase of ``@every``, grace of ``@after``).
    Raises ``ScheduleError`` with a message naming what is wrong."""
    raise NotImplementedError


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fires after ``after`` (fewer if the schedule ends)."""
    raise NotImplementedError


def parse_go_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` syntax (``300ms``, ``1h30m``, ``-1.5h``) -> seconds.
    Raises ``ValueError`` with a message."""
    raise NotImplementedError


def format_duration(seconds: float) -> str:
    """Seconds -> the Go duration string (``1h30m0s``) that ``parse_go_duration`` reads."""
    raise NotImplementedError
