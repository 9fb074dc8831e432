"""Job validation that needs no state: the name rule, schedule, timezone, executor, limits.

Checks that depend on other jobs (the parent exists, no parent cycle) are made by the state
machine when the job is applied, so they hold however the job arrived.
"""

from __future__ import annotations

import unicodedata
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from trickle.engine.model import Job
from trickle.engine.schedule import parse_schedule
from trickle.errors import ValidationError


class ExecutorCatalog(Protocol):
    def validate(self, executor: str, config: Mapping[str, str]) -> None: ...


class ProcessorCatalog(Protocol):
    def validate(self, processors: Mapping[str, Mapping[str, str]]) -> None: ...


def check_name(name: str) -> None:
    """Dkron's rule: lower-case letters (any script), ASCII digits, '_' and '-'."""
    if not name:
        raise ValidationError("name cannot be empty", field="name")
    for ch in name:
        if ch in "_-" or ("0" <= ch <= "9") or unicodedata.category(ch) == "Ll":
            continue
        raise ValidationError(f"name contains illegal character '{ch}'", field="name")


def check_timezone(tz: str) -> None:
    if not tz:
        return
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"unknown time zone {tz}", field="timezone") from None


def check_tags(tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        if not key:
            raise ValidationError("tag names cannot be empty", field="tags")
        parts = value.split(":")
        if len(parts) == 2:
            count = parts[1]
            if not count.isdigit() or int(count) < 1:
                raise ValidationError(
                    f"tag {key}: count in {value!r} must be a positive integer",
                    field=f"tags.{key}",
                )


def validate_job(
    job: Job,
    *,
    executors: ExecutorCatalog,
    processors: ProcessorCatalog,
    now: datetime | None = None,
) -> None:
    """Raise ``ValidationError`` naming the first field that is wrong."""
    check_name(job.name)
    if job.parent_job == job.name:
        raise ValidationError("the job can not have itself as parent", field="parent_job")
    if job.parent_job:
        check_name_field(job.parent_job, "parent_job")
    check_timezone(job.timezone)
    if job.schedule or not job.parent_job:
        if not job.schedule:
            raise ValidationError(
                "schedule cannot be empty (a job without a schedule needs a parent_job)",
                field="schedule",
            )
        parse_schedule(job.schedule, timezone=job.timezone, job_name=job.name, anchor=now)
    if job.retries < 0:
        raise ValidationError("retries cannot be negative", field="retries")
    if job.retry_interval < 0:
        raise ValidationError("retry_interval cannot be negative", field="retry_interval")
    if job.concurrency_limit < 0:
        raise ValidationError("concurrency_limit cannot be negative", field="concurrency_limit")
    if job.catchup_window < 0:
        raise ValidationError("catchup_window cannot be negative", field="catchup_window")
    if job.starts_at and job.expires_at and job.expires_at <= job.starts_at:
        raise ValidationError("expires_at must be after starts_at", field="expires_at")
    check_tags(job.tags)
    executors.validate(job.executor, job.executor_config)
    processors.validate(job.processors)


def check_name_field(value: str, field: str) -> None:
    try:
        check_name(value)
    except ValidationError as exc:
        raise ValidationError(f"{field}: {exc.message}", field=field) from None
