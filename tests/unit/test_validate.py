"""Job validation without state: each bad field is refused with a message naming it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.model import Job
from trickle.engine.processors import ProcessorRegistry
from trickle.engine.validate import validate_job
from trickle.errors import ValidationError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def check(**fields) -> None:
    fields.setdefault("name", "job")
    fields.setdefault("schedule", "@daily")
    fields.setdefault("executor", "shell")
    fields.setdefault("executor_config", {"command": "true"})
    validate_job(
        Job(**fields), executors=ExecutorRegistry(), processors=ProcessorRegistry(), now=NOW
    )


def refused(field: str, **fields) -> str:
    with pytest.raises(ValidationError) as info:
        check(**fields)
    assert info.value.field == field, info.value
    return info.value.message


def test_a_complete_job_is_valid():
    check(
        timezone="Europe/Berlin",
        tags={"dkron_server": "true:1"},
        retries=2,
        processors={"log": {"forward": "true"}},
    )


@pytest.mark.parametrize("name", ["job-1", "a_b", "ßñé", "0"])
def test_dkron_name_rule_accepts_lower_case_letters_digits_dash_underscore(name):
    check(name=name)


@pytest.mark.parametrize(
    ("name", "bad"), [("Job", "J"), ("a b", " "), ("a.b", "."), ("a/b", "/"), ("a:b", ":")]
)
def test_dkron_name_rule_names_the_illegal_character(name, bad):
    assert refused("name", name=name) == f"name contains illegal character '{bad}'"


def test_empty_name_is_refused():
    assert refused("name", name="") == "name cannot be empty"


def test_a_job_cannot_be_its_own_parent():
    message = refused("parent_job", name="a", parent_job="a", schedule="")
    assert message == "the job can not have itself as parent"


def test_schedule_is_required_unless_the_job_has_a_parent():
    assert "schedule cannot be empty" in refused("schedule", schedule="")
    check(schedule="", parent_job="other")


def test_a_childs_schedule_is_still_checked():
    refused("schedule", schedule="not a schedule", parent_job="other")


def test_unknown_time_zone_is_refused():
    assert refused("timezone", timezone="Mars/Olympus") == "unknown time zone Mars/Olympus"


def test_unknown_executor_lists_the_known_ones():
    message = refused("executor", executor="nope")
    assert "http" in message and "shell" in message


def test_executor_config_is_checked_by_the_executor():
    assert refused(
        "executor_config.timeout", executor_config={"command": "true", "timeout": "soon"}
    )


def test_unknown_processor_is_refused():
    assert "log" in refused("processors", processors={"nope": {}})


@pytest.mark.parametrize(
    ("field", "value"), [("retries", -1), ("retry_interval", -1.0), ("catchup_window", -5.0)]
)
def test_negative_numbers_are_refused(field, value):
    refused(field, **{field: value})


def test_expiry_before_start_is_refused():
    refused(
        "expires_at",
        starts_at=datetime(2026, 2, 1, tzinfo=UTC),
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize("value", ["true:0", "true:x", "true:-1"])
def test_tag_count_must_be_a_positive_integer(value):
    assert "count" in refused("tags.role", tags={"role": value})
