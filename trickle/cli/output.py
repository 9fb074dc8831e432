"""Human-readable output of the client commands: tables of jobs, executions, members and
Raft peers, job details.

Pure functions from the API's JSON (dicts as ``GET /v1/...`` returns them) to text. Times are
shown in UTC as ``2025-01-02T10:00:05Z``; a missing or zero time (Dkron's
``0001-01-01T00:00:00Z``) is ``-``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

EMPTY = "-"
MAX_CELL = 48  # characters shown per table cell before it is cut with an ellipsis
MAX_OUTPUT_CELL = 60  # the output column gets a little more
TIME_FIELDS = frozenset(
    {
        "last_success",
        "last_error",
        "next",
        "starts_at",
        "expires_at",
        "started_at",
        "finished_at",
        "created_at",
        "updated_at",
        "schedule_anchor",
        "scheduled_at",
    }
)


def format_time(value: Any) -> str:
    """An API timestamp (RFC 3339 text) as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, or ``-``."""
    if not value:
        return EMPTY
    if not isinstance(value, str):
        return str(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # not ours to judge: show what the server said
    if moment.year <= 1:
        return EMPTY
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cut(text: str, width: int = MAX_CELL) -> str:
    """``text`` on one line, at most ``width`` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split("\n"))
    return text if len(text) <= width else text[: width - 1] + "…"


def first_line(text: Any, width: int = MAX_OUTPUT_CELL) -> str:
    """The first non-blank line of an execution's output, cut to ``width``; ``-`` if none."""
    if not text or not isinstance(text, str):
        return EMPTY
    for line in text.splitlines():
        if line.strip():
            return cut(line.strip(), width)
    return EMPTY


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces, a header row, no trailing spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        lines.append(line.rstrip())
    return "\n".join(lines)


def job_status(job: Mapping[str, Any]) -> str:
    return str(job.get("status") or "untriggered")


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    """Name, schedule, status, disabled, last success, last error, next."""
    headers = ("NAME", "SCHEDULE", "STATUS", "DISABLED", "LAST SUCCESS", "LAST ERROR", "NEXT")
    rows = [
        (
            cut(str(job.get("name", ""))),
            cut(str(job.get("schedule") or EMPTY)),
            job_status(job),
            "yes" if job.get("disabled") else "no",
            format_time(job.get("last_success")),
            format_time(job.get("last_error")),
            format_time(job.get("next")),
        )
        for job in jobs
    ]
    return render_table(headers, rows)


def execution_status(execution: Mapping[str, Any]) -> str:
    """trickle's ``status`` field when present, else derived from Dkron's fields."""
    status = execution.get("status")
    if status:
        return str(status)
    if format_time(execution.get("finished_at")) == EMPTY:
        return "running"
    return "success" if execution.get("success") else "failed"


def executions_table(executions: Sequence[Mapping[str, Any]]) -> str:
    """Id, started, finished, status, node, attempt, exit code, first line of output."""
    headers = ("ID", "STARTED", "FINISHED", "STATUS", "NODE", "ATTEMPT", "EXIT", "OUTPUT")
    rows = []
    for execution in executions:
        exit_code = execution.get("exit_code")
        rows.append(
            (
                str(execution.get("id", "")),
                format_time(execution.get("started_at")),
                format_time(execution.get("finished_at")),
                execution_status(execution),
                cut(str(execution.get("node_name") or EMPTY)),
                str(execution.get("attempt") or EMPTY),
                EMPTY if exit_code is None else str(exit_code),
                first_line(execution.get("output")),
            )
        )
    return render_table(headers, rows)


def _value(key: str, value: Any) -> str:
    if key in TIME_FIELDS:
        return format_time(value)
    if value is None or value == "" or value == [] or value == {}:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def job_details(job: Mapping[str, Any]) -> str:
    """Every field of a job, one per line in the API's order; tables indented below
    their name. ``status`` shows ``untriggered`` for a job that never ran."""
    width = max((len(k) for k, v in job.items() if not (isinstance(v, dict) and v)), default=0) + 1
    lines = []
    for key, value in job.items():
        if key == "status":
            value = job_status(job)
        if isinstance(value, dict) and value:
            lines.append(f"{key}:")
            inner = max(len(str(k)) for k in value) + 1
            for sub_key, sub_value in value.items():
                text = (
                    json.dumps(sub_value)
                    if isinstance(sub_value, dict)
                    else _value(str(sub_key), sub_value)
                )
                lines.append(f"  {(str(sub_key) + ':').ljust(inner)} {text}")
        else:
            lines.append(f"{(key + ':').ljust(width)} {_value(key, value)}")
    return "\n".join(lines)


def host_port(host: Any, port: Any) -> str:
    """``host:port``, an IPv6 host in brackets; ``-`` when the host is unknown."""
    host = str(host or "")
    if not host:
        return EMPTY
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port in (None, "", 0) else f"{host}:{port}"


# serf's member status codes, as /v1/members carries them in "Status"
MEMBER_STATUSES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def member_status(member: Mapping[str, Any]) -> str:
    """``statusText``, or the text of serf's ``Status`` code when there is none."""
    text = member.get("statusText")
    if isinstance(text, str) and text:
        return text
    code = member.get("Status")
    return MEMBER_STATUSES.get(code, str(code)) if isinstance(code, int) else EMPTY


def format_tags(tags: Any) -> str:
    """``k=v, k2=v2`` sorted by key; ``-`` for none."""
    if not isinstance(tags, Mapping) or not tags:
        return EMPTY
    return ", ".join(f"{key}={tags[key]}" for key in sorted(tags))


def members_table(members: Sequence[Mapping[str, Any]]) -> str:
    """Name, gossip address, status (alive, leaving, left, failed) and tags, whole."""
    headers = ("NAME", "ADDRESS", "STATUS", "TAGS")
    rows = [
        (
            cut(str(member.get("Name", ""))),
            host_port(member.get("Addr"), member.get("Port")),
            member_status(member),
            format_tags(member.get("Tags")),  # the last column: never cut
        )
        for member in members
    ]
    return render_table(headers, rows)


def raft_peers_table(peers: Sequence[Mapping[str, Any]]) -> str:
    """Dkron's ``raft list-peers`` table: ``Node  ID  Address  State  Voter``, the state
    ``leader`` or ``follower``, the voter ``true`` or ``false``."""
    headers = ("Node", "ID", "Address", "State", "Voter")
    rows = [
        (
            str(peer.get("node") or peer.get("id") or ""),
            str(peer.get("id") or peer.get("node") or ""),
            str(peer.get("address") or EMPTY),
            "leader" if peer.get("leader") else "follower",
            "true" if peer.get("voter") else "false",
        )
        for peer in peers
    ]
    return render_table(headers, rows)
