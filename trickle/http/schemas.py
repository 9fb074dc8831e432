"""JSON shapes of the REST API: Dkron's job, execution and member JSON <-> trickle's values.

Every JSON field name the API speaks lives here; the model classes know none of them.

Input (``job_from_json``) follows Go's ``encoding/json`` as Dkron uses it: unknown fields are
ignored, ``null`` leaves a field at its default, and a value of the wrong type is refused
with a ``ValidationError`` whose ``field`` names it and whose message says what was expected.
Output (``job_to_json``, ``execution_to_json``, ``member_to_json``) has Dkron's shape, plus
trickle's own fields, which a Dkron client ignores.
"""

from __future__ import annotations

import json
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset
from typing import Any

import attrs

from trickle.engine.durations import format_duration, parse_go_duration
from trickle.engine.model import (
    DEFAULT_CATCHUP_WINDOW,
    BusyExecution,
    Concurrency,
    DayStats,
    Execution,
    Job,
    JobStatus,
    Member,
    RaftPeer,
)
from trickle.errors import ValidationError

__all__ = [
    "ZERO_TIME",
    "busy_to_json",
    "execution_to_json",
    "format_time",
    "job_from_json",
    "job_to_json",
    "leader_to_json",
    "member_to_json",
    "parse_time",
    "raft_peer_to_json",
    "stats_to_json",
]

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, as Dkron renders "never"

# serf's MemberStatus values, as Dkron's /v1/members renders them
MEMBER_STATUS_CODES = {"none": 0, "alive": 1, "leaving": 2, "left": 3, "failed": 4}
# serf protocol versions a Dkron 4 node reports; clients only display them
SERF_PROTOCOL = {
    "ProtocolMin": 1,
    "ProtocolMax": 5,
    "ProtocolCur": 2,
    "DelegateMin": 2,
    "DelegateMax": 5,
    "DelegateCur": 4,
}

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_HTML_LOCAL = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})")  # "2006-01-02T15:04"

_CONCURRENCY = {"": Concurrency.ALLOW, "allow": Concurrency.ALLOW, "forbid": Concurrency.FORBID}
_STATUSES = {s.value: s for s in JobStatus}


# ---------------------------------------------------------------------------------------
# input helpers


def _describe(value: object) -> str:
    """A short JSON rendering of a rejected value for error messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(field: str, expected: str, value: object) -> ValidationError:
    return ValidationError(f"{field}: expected {expected}, got {_describe(value)}", field=field)


def _string(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _type_error(field, "a string", value)
    return value


def _bool(value: object, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(field, "true or false", value)
    return value


def _count(value: object, field: str) -> int:
    """A non-negative JSON integer (Go ``uint``; ``3.0`` and ``"3"`` are refused as Go does)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _type_error(field, "a non-negative integer", value)
    return value


def _string_map(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(field, "an object of strings", value)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise _type_error(f"{field}.{key}", "a string", item)
        out[key] = item
    return out


def _processors(value: object, field: str) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(field, "an object of processor configs", value)
    out: dict[str, dict[str, str]] = {}
    for name, config in value.items():
        out[name] = _string_map(config, f"{field}.{name}")
    return out


def _string_list(value: object, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _type_error(field, "an array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _type_error(f"{field}[{i}]", "a string", item)
    return tuple(value)


def _duration(value: object, field: str, default: float) -> float:
    """A Go duration string (``"30s"``, ``"1h30m"``) or a number of seconds, >= 0."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise _type_error(field, 'a duration such as "30s" or a number of seconds', value)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_go_duration(value.strip())
        except ValueError as exc:
            raise ValidationError(
                f'{field}: expected a duration such as "30s" or "1h", got '
                f"{_describe(value)} ({exc})",
                field=field,
            ) from None
    else:
        raise _type_error(field, 'a duration such as "30s" or a number of seconds', value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(
            f"{field}: expected a non-negative duration, got {_describe(value)}", field=field
        )
    return seconds


def parse_time(value: object, field: str) -> datetime | None:
    """A Dkron nullable time -> aware UTC datetime, or None.

    Accepts ``null``, ``""``, RFC3339 with or without fractional seconds (up to
    nanoseconds; kept to microseconds) and ``"2006-01-02T15:04"`` (HTML datetime-local,
    read as UTC). Go's zero time ``0001-01-01T00:00:00Z`` means "no time" (None).
    Raises ``ValidationError(field=field)`` for anything else.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _type_error(field, "an RFC3339 time or null", value)
    text = value.strip()
    try:
        m = _RFC3339.fullmatch(text)
        if m:
            (year, month, day, hour, minute, second, frac, zulu, sign, oh, om) = m.groups()
            micros = int((frac or "0").ljust(6, "0")[:6])
            if zulu:
                tz: tzinfo = UTC
            else:
                offset = timedelta(hours=int(oh), minutes=int(om))
                tz = UTC if not offset else fixed_offset(-offset if sign == "-" else offset)
            sec = int(second)
            if sec == 60:  # a leap second, as Go reads it: the next second
                sec = 59
                micros = 999_999
            local = datetime(
                int(year), int(month), int(day), int(hour), int(minute), sec, micros, tzinfo=tz
            )
        else:
            m = _HTML_LOCAL.fullmatch(text)
            if not m:
                raise ValueError("unrecognised format")
            year, month, day, hour, minute = (int(g) for g in m.groups())
            local = datetime(year, month, day, hour, minute, tzinfo=UTC)
        if (
            local.year == 1
            and local.month == 1
            and local.day == 1
            and local.hour == 0
            and local.minute == 0
            and local.second == 0
            and local.microsecond == 0
        ):
            return None
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(
            f'{field}: expected an RFC3339 time such as "2024-01-31T09:00:00Z" or '
            f'"2024-01-31T09:00" (UTC), got {_describe(value)}',
            field=field,
        ) from None


def _concurrency(value: object, field: str) -> Concurrency:
    text = _string(value, field) if value is not None else "allow"
    try:
        return _CONCURRENCY[text]
    except KeyError:
        raise ValidationError(
            'invalid concurrency policy value, use "allow" or "forbid"', field=field
        ) from None


def _status(value: object, field: str) -> JobStatus:
    text = _string(value, field)
    try:
        return _STATUSES[text]
    except KeyError:
        raise ValidationError(
            f'{field}: expected one of "", "success", "failed", "partially_failed", '
            f"got {_describe(value)}",
            field=field,
        ) from None


_Reader = Callable[[object, str], Any]

# JSON field -> (Job attribute, reader). Read-only fields are read too: the engine merges
# them with what it stores (Dkron's max/later-wins rules), so an export restores as it was.
_JOB_FIELDS: dict[str, tuple[str, _Reader]] = {
    "name": ("name", _string),
    "displayname": ("displayname", _string),
    "schedule": ("schedule", _string),
    "timezone": ("timezone", _string),
    "owner": ("owner", _string),
    "owner_email": ("owner_email", _string),
    "disabled": ("disabled", _bool),
    "tags": ("tags", _string_map),
    "metadata": ("metadata", _string_map),
    "concurrency": ("concurrency", _concurrency),
    "executor": ("executor", _string),
    "executor_config": ("executor_config", _string_map),
    "processors": ("processors", _processors),
    "retries": ("retries", _count),
    "concurrency_limit": ("concurrency_limit", _count),
    "parent_job": ("parent_job", _string),
    "dependent_jobs": ("dependent_jobs", _string_list),
    "ephemeral": ("ephemeral", _bool),
    "starts_at": ("starts_at", parse_time),
    "expires_at": ("expires_at", parse_time),
    "success_count": ("success_count", _count),
    "error_count": ("error_count", _count),
    "last_success": ("last_success", parse_time),
    "last_error": ("last_error", parse_time),
    "status": ("status", _status),
    "next": ("next", parse_time),
    "missed_count": ("missed_count", _count),
    "skipped_count": ("skipped_count", _count),
    "last_skipped": ("last_skipped", parse_time),
}


def job_from_json(data: object) -> Job:
    """Dkron's job JSON (already decoded) -> ``Job``.

    Every field of Dkron's job with its default; unknown fields (``id``, v1's ``command``,
    ...) are ignored. trickle's ``retry_interval`` and ``catchup_window`` take a Go duration
    string or a number of seconds. Type errors raise ``ValidationError`` naming the field
    (``field`` is e.g. ``"retries"`` or ``"executor_config.timeout"``). Semantic checks (the
    name rule, the schedule, the timezone, the executor) are the engine's.
    """
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object (a job), got {_json_kind(data)}", field="")
    values: dict[str, Any] = {}
    for key, (attr, reader) in _JOB_FIELDS.items():
        if key in data:
            values[attr] = reader(data[key], key)
        elif key == "concurrency":
            values[attr] = Concurrency.ALLOW
    if "retry_interval" in data:
        values["retry_interval"] = _duration(data["retry_interval"], "retry_interval", 0.0)
    if "catchup_window" in data:
        values["catchup_window"] = _duration(
            data["catchup_window"], "catchup_window", DEFAULT_CATCHUP_WINDOW
        )
    values.setdefault("name", "")
    return Job(**values)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# output


def _zone(timezone: str) -> tzinfo:
    if not timezone:
        return UTC
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def format_time(value: datetime | None, *, timezone: str = "", zero: bool = False) -> str | None:
    """RFC3339 with microseconds when non-zero, in ``timezone`` ('' = UTC, written ``Z``).

    ``None`` renders as JSON null, or as Go's zero time when ``zero`` (fields that are never
    null in Dkron: ``next``, ``finished_at``).
    """
    if value is None:
        return ZERO_TIME if zero else None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(_zone(timezone))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset() or timedelta(0)
    if not offset:
        return text + "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{text}{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def job_to_json(job: Job) -> dict[str, Any]:
    """``Job`` -> Dkron's job JSON (``id`` = name, ``next`` never null), plus trickle's
    ``retry_interval``/``catchup_window`` (Go duration strings), ``missed_count``,
    ``created_at`` and ``updated_at``."""
    return {
        "id": job.name,
        "name": job.name,
        "displayname": job.displayname,
        "timezone": job.timezone,
        "schedule": job.schedule,
        "owner": job.owner,
        "owner_email": job.owner_email,
        "success_count": job.success_count,
        "error_count": job.error_count,
        "last_success": format_time(job.last_success),
        "last_error": format_time(job.last_error),
        "disabled": job.disabled,
        "tags": dict(job.tags),
        "metadata": dict(job.metadata),
        "retries": job.retries,
        "dependent_jobs": list(job.dependent_jobs),
        "parent_job": job.parent_job,
        "processors": {k: dict(v) for k, v in job.processors.items()},
        "concurrency": job.concurrency.value,
        "concurrency_limit": job.concurrency_limit,
        "executor": job.executor,
        "executor_config": dict(job.executor_config),
        "status": job.status.value,
        "next": format_time(job.next, zero=True),
        "ephemeral": job.ephemeral,
        "expires_at": format_time(job.expires_at),
        "starts_at": format_time(job.starts_at),
        "retry_interval": format_duration(job.retry_interval),
        "catchup_window": format_duration(job.catchup_window),
        "missed_count": job.missed_count,
        "skipped_count": job.skipped_count,
        "last_skipped": format_time(job.last_skipped),
        "last_skip_reason": job.last_skip_reason,
        "created_at": format_time(job.created_at),
        "updated_at": format_time(job.updated_at),
    }


def truncate_output(output: str, limit: int) -> tuple[str, bool]:
    """Keep the last ``limit`` bytes of ``output`` (UTF-8), never splitting a character."""
    raw = output.encode("utf-8")
    if len(raw) <= limit:
        return output, False
    tail = raw[len(raw) - limit :] if limit > 0 else b""
    return tail.decode("utf-8", errors="ignore"), True


def execution_to_json(
    execution: Execution,
    *,
    timezone: str = "",
    output_size_limit: int | None = None,
    listing: bool = False,
) -> dict[str, Any]:
    """``Execution`` -> Dkron's execution JSON plus ``exit_code``, ``status``, ``trigger``
    and ``scheduled_at``.

    Times are rendered in ``timezone`` (the job's; '' = UTC); ``finished_at`` is Go's zero
    time while the execution runs. ``output`` is omitted when empty (Dkron's omitempty).
    ``output_size_limit`` keeps the last N bytes of output. ``listing`` adds Dkron's
    ``output_truncated`` flag (list items only).
    """
    output = execution.output
    truncated = False
    if output_size_limit is not None:
        output, truncated = truncate_output(output, output_size_limit)
    out: dict[str, Any] = {
        "id": execution.id,
        "job_name": execution.job_name,
        "started_at": format_time(execution.started_at, timezone=timezone, zero=True),
        "finished_at": format_time(execution.finished_at, timezone=timezone, zero=True),
        "success": execution.success,
    }
    if output:
        out["output"] = output
    out.update(
        {
            "node_name": execution.node_name,
            "group": execution.group,
            "attempt": execution.attempt,
            "exit_code": execution.exit_code,
            "status": execution.status.value,
            "trigger": execution.trigger.value,
            "scheduled_at": format_time(execution.scheduled_at, timezone=timezone),
        }
    )
    if listing:
        out["output_truncated"] = truncated
    return out


def busy_to_json(busy: BusyExecution, *, timezone: str = "") -> dict[str, Any]:
    """One ``/v1/busy`` item: the execution with its current output tail, plus ``queued``
    (waiting for a free executor slot on this node)."""
    execution = busy.execution
    if busy.output_tail or not execution.output:
        execution = _with_output(execution, busy.output_tail)
    out = execution_to_json(execution, timezone=timezone)
    out["queued"] = busy.queued
    return out


def _with_output(execution: Execution, output: str) -> Execution:
    return attrs.evolve(execution, output=output)


def member_to_json(member: Member) -> dict[str, Any]:
    """A member in serf's shape as Dkron renders it (``Status`` as serf's integer,
    ``statusText``); ``id`` is the member name (Dkron sends a fresh random UUID)."""
    status = member.status.lower()
    return {
        "Name": member.name,
        "Addr": member.addr,
        "Port": member.port,
        "Tags": dict(member.tags),
        "Status": MEMBER_STATUS_CODES.get(status, 0),
        **SERF_PROTOCOL,
        "id": member.name,
        "statusText": status if status in MEMBER_STATUS_CODES else "none",
    }


def leader_to_json(member: Member | None) -> dict[str, Any] | None:
    """The leader for ``/v1/leader``: a member, or None (rendered ``null``)."""
    return None if member is None else member_to_json(member)


def raft_peer_to_json(peer: RaftPeer) -> dict[str, Any]:
    """A server of the Raft configuration for ``/v1/raft/peers``, with the fields of
    Dkron's ``RaftServer`` (``id`` and ``node`` are both the node name in trickle) plus
    ``match_index`` (the leader's view of its log; null on a follower)."""
    return {
        "id": peer.name,
        "node": peer.name,
        "address": peer.address,
        "leader": peer.leader,
        "voter": peer.voter,
        "match_index": peer.match_index,
    }


def stats_to_json(days: list[DayStats]) -> dict[str, Any]:
    """``/v1/stats``: ``{"stats": [{"date", "success_count", "failed_count"}, ...]}``."""
    return {
        "stats": [
            {
                "date": format_time(day.date),
                "success_count": day.success_count,
                "failed_count": day.failed_count,
            }
            for day in days
        ]
    }


def jobs_from_json_array(data: object) -> list[Job]:
    """A restore file (the array ``GET /v1/jobs`` returns) -> jobs. A bad job raises
    ``ValidationError`` whose field is prefixed with the job's index: ``[3].retries``."""
    if not isinstance(data, list):
        raise ValidationError(f"expected a JSON array of jobs, got {_json_kind(data)}", field="")
    jobs: list[Job] = []
    for i, item in enumerate(data):
        try:
            jobs.append(job_from_json(item))
        except ValidationError as exc:
            field = f"[{i}].{exc.field}" if exc.field else f"[{i}]"
            raise ValidationError(f"job [{i}]: {exc.message}", field=field) from None
    return jobs
