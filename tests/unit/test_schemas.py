"""The REST API's JSON shapes: Dkron's job JSON in and out, executions, members, stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest

from trickle.engine.model import (
    BusyExecution,
    Concurrency,
    DayStats,
    Execution,
    ExecutionId,
    ExecutionStatus,
    Job,
    JobStatus,
    Member,
    Trigger,
)
from trickle.errors import ValidationError
from trickle.http import schemas
from trickle.http.schemas import (
    ZERO_TIME,
    busy_to_json,
    execution_to_json,
    format_time,
    job_from_json,
    job_to_json,
    jobs_from_json_array,
    member_to_json,
    parse_time,
    stats_to_json,
)

T0 = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)

FULL_JOB_JSON = {
    "id": "ignored",
    "name": "backup-db",
    "displayname": "Nightly backup",
    "schedule": "0 30 2 * * *",
    "timezone": "Europe/Berlin",
    "owner": "ops",
    "owner_email": "ops@example.com",
    "disabled": True,
    "tags": {"role": "db:1"},
    "metadata": {"team": "core"},
    "concurrency": "forbid",
    "executor": "shell",
    "executor_config": {"command": "pg_dump", "timeout": "1h"},
    "processors": {"files": {"forward": "true", "log_dir": "/tmp"}},
    "retries": 2,
    "parent_job": "",
    "dependent_jobs": ["verify-backup"],
    "ephemeral": True,
    "starts_at": "2024-01-01T00:00:00Z",
    "expires_at": "2025-01-01T00:00:00Z",
    "success_count": 7,
    "error_count": 1,
    "last_success": "2024-03-01T12:30:15.123456Z",
    "last_error": "2024-02-01T00:00:00Z",
    "status": "partially_failed",
    "next": "2024-03-02T01:30:00Z",
    "retry_interval": "30s",
    "catchup_window": "2h",
    "missed_count": 3,
}


def _execution(**overrides: object) -> Execution:
    values: dict[str, object] = {
        "id": ExecutionId("1709296215123456000-node1"),
        "job_name": "backup-db",
        "node_name": "node1",
        "group": 1709296215000000000,
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=2),
        "success": True,
        "output": "done\n",
        "exit_code": 0,
        "status": ExecutionStatus.SUCCESS,
        "trigger": Trigger.SCHEDULE,
        "scheduled_at": T0.replace(microsecond=0),
    }
    values.update(overrides)
    return Execution(**values)  # type: ignore[arg-type]


# -- job input ----------------------------------------------------------------------------


def test_minimal_job_gets_dkron_defaults() -> None:
    job = job_from_json({"name": "a", "schedule": "@every 10s"})
    assert job == Job(name="a", schedule="@every 10s")
    assert job.concurrency is Concurrency.ALLOW
    assert job.retries == 0 and job.tags == {} and job.next is None
    assert job.catchup_window == Job(name="x").catchup_window


def test_every_field_is_read() -> None:
    job = job_from_json(FULL_JOB_JSON)
    assert job.name == "backup-db"
    assert job.displayname == "Nightly backup"
    assert job.schedule == "0 30 2 * * *"
    assert job.timezone == "Europe/Berlin"
    assert job.owner == "ops" and job.owner_email == "ops@example.com"
    assert job.disabled is True and job.ephemeral is True
    assert job.tags == {"role": "db:1"} and job.metadata == {"team": "core"}
    assert job.concurrency is Concurrency.FORBID
    assert job.executor == "shell"
    assert job.executor_config == {"command": "pg_dump", "timeout": "1h"}
    assert job.processors == {"files": {"forward": "true", "log_dir": "/tmp"}}
    assert job.retries == 2
    assert job.dependent_jobs == ("verify-backup",)
    assert job.starts_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert job.expires_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert job.success_count == 7 and job.error_count == 1
    assert job.last_success == T0
    assert job.last_error == datetime(2024, 2, 1, tzinfo=UTC)
    assert job.status is JobStatus.PARTIALLY_FAILED
    assert job.next == datetime(2024, 3, 2, 1, 30, tzinfo=UTC)
    assert job.retry_interval == 30.0
    assert job.catchup_window == 7200.0
    assert job.missed_count == 3


def test_unknown_fields_are_ignored_as_dkron_does() -> None:
    job = job_from_json({"name": "a", "command": "echo hi", "shell": True, "id": 5})
    assert job == Job(name="a")


def test_null_leaves_a_field_at_its_default() -> None:
    data = {key: None for key in FULL_JOB_JSON}
    data["name"] = "a"
    assert job_from_json(data) == Job(name="a")


def test_missing_name_is_left_to_the_engine_to_refuse() -> None:
    assert job_from_json({}).name == ""


@pytest.mark.parametrize("data", [[], "job", 3, None, True])
def test_a_job_must_be_a_json_object(data: object) -> None:
    with pytest.raises(ValidationError, match="expected a JSON object"):
        job_from_json(data)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", 5, "a string"),
        ("displayname", ["x"], "a string"),
        ("schedule", 10, "a string"),
        ("timezone", False, "a string"),
        ("owner", {}, "a string"),
        ("owner_email", 1.5, "a string"),
        ("executor", 0, "a string"),
        ("parent_job", 1, "a string"),
        ("disabled", "true", "true or false"),
        ("ephemeral", 1, "true or false"),
        ("tags", ["a"], "an object of strings"),
        ("metadata", "k=v", "an object of strings"),
        ("executor_config", "echo", "an object of strings"),
        ("processors", [], "an object of processor configs"),
        ("retries", "3", "a non-negative integer"),
        ("retries", -1, "a non-negative integer"),
        ("retries", 3.0, "a non-negative integer"),
        ("retries", True, "a non-negative integer"),
        ("success_count", "1", "a non-negative integer"),
        ("error_count", -2, "a non-negative integer"),
        ("missed_count", 0.5, "a non-negative integer"),
        ("dependent_jobs", "child", "an array of strings"),
        ("starts_at", 1700000000, "an RFC3339 time"),
        ("expires_at", "tomorrow", "an RFC3339 time"),
        ("last_success", "2024-13-01T00:00:00Z", "an RFC3339 time"),
        ("last_error", True, "an RFC3339 time"),
        ("next", "2024-01-01", "an RFC3339 time"),
        ("concurrency", 1, "a string"),
        ("status", 2, "a string"),
        ("retry_interval", True, "a duration"),
        ("retry_interval", [], "a duration"),
        ("catchup_window", {}, "a duration"),
    ],
)
def test_wrong_type_names_the_field_and_the_expected_type(
    field: str, value: object, expected: str
) -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", field: value})
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: ")
    assert expected in info.value.message


def test_wrong_type_message_shows_the_value_as_json() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "retries": "3"})
    assert info.value.message == 'retries: expected a non-negative integer, got "3"'


def test_executor_config_values_must_be_strings() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "executor_config": {"command": "x", "timeout": 30}})
    assert info.value.field == "executor_config.timeout"
    assert "expected a string, got 30" in info.value.message


def test_dependent_jobs_items_must_be_strings() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "dependent_jobs": ["b", 3]})
    assert info.value.field == "dependent_jobs[1]"


def test_processor_values_must_be_strings_as_in_dkron() -> None:
    # Dkron's own OpenAPI example ("forward": true) fails to bind in Dkron too.
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "processors": {"files": {"forward": True}}})
    assert info.value.field == "processors.files.forward"


def test_processors_must_be_a_map_of_maps() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "processors": {"log": "yes"}})
    assert info.value.field == "processors.log"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("allow", Concurrency.ALLOW), ("forbid", Concurrency.FORBID), ("", Concurrency.ALLOW)],
)
def test_concurrency_values(value: str, expected: Concurrency) -> None:
    assert job_from_json({"name": "a", "concurrency": value}).concurrency is expected


def test_unknown_concurrency_gets_dkrons_message() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "concurrency": "replace"})
    assert info.value.field == "concurrency"
    assert info.value.message == 'invalid concurrency policy value, use "allow" or "forbid"'


@pytest.mark.parametrize("status", ["", "success", "failed", "partially_failed"])
def test_status_values_are_accepted(status: str) -> None:
    assert job_from_json({"name": "a", "status": status}).status.value == status


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "status": "running"})
    assert info.value.field == "status"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30.0), ("1h30m", 5400.0), ("0s", 0.0), (45, 45.0), (2.5, 2.5), (0, 0.0)],
)
def test_durations_take_go_strings_or_seconds(value: object, seconds: float) -> None:
    job = job_from_json({"name": "a", "retry_interval": value, "catchup_window": value})
    assert job.retry_interval == seconds
    assert job.catchup_window == seconds


@pytest.mark.parametrize("value", ["soon", "10", "-5s", -1, float("inf")])
def test_bad_or_negative_durations_name_the_field(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        job_from_json({"name": "a", "catchup_window": value})
    assert info.value.field == "catchup_window"
    assert "catchup_window" in info.value.message


# -- times --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:30:15Z", datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2024-03-01T12:30:15.5Z", datetime(2024, 3, 1, 12, 30, 15, 500000, tzinfo=UTC)),
        # nanoseconds as Go writes them: kept to microseconds
        ("2024-03-01T12:30:15.123456789Z", datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)),
        ("2024-03-01T13:30:15+01:00", datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2024-03-01T07:00:15-05:30", datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)),
        ("2024-03-01t12:30:15z", datetime(2024, 3, 1, 12, 30, 15, tzinfo=UTC)),
        # the HTML datetime-local form Dkron's UI sends, read as UTC
        ("2024-03-01T12:30", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_time_formats(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "starts_at")
    assert parsed == expected
    assert parsed is not None and parsed.tzinfo is UTC


@pytest.mark.parametrize("value", [None, "", ZERO_TIME, "0001-01-01T00:00:00.000Z"])
def test_null_empty_and_go_zero_time_mean_no_time(value: object) -> None:
    assert parse_time(value, "starts_at") is None


@pytest.mark.parametrize(
    "text",
    [
        "2024-03-01",
        "2024-03-01 12:30",
        "12:30",
        "2024-02-30T00:00:00Z",
        "2024-03-01T12:30:15",
        "2024-03-01T12:30:15+0100",
        "yesterday",
    ],
)
def test_bad_times_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_time(text, "expires_at")
    assert info.value.field == "expires_at"
    assert "RFC3339" in info.value.message


def test_format_time_is_rfc3339_utc_with_z() -> None:
    assert format_time(T0) == "2024-03-01T12:30:15.123456Z"
    assert format_time(T0.replace(microsecond=0)) == "2024-03-01T12:30:15Z"
    assert format_time(T0.replace(microsecond=500000)) == "2024-03-01T12:30:15.5Z"
    assert format_time(None) is None
    assert format_time(None, zero=True) == ZERO_TIME


def test_format_time_in_a_timezone_has_its_offset() -> None:
    winter = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
    summer = datetime(2024, 7, 15, 12, 0, tzinfo=UTC)
    assert format_time(winter, timezone="Europe/Berlin") == "2024-01-15T13:00:00+01:00"
    assert format_time(summer, timezone="Europe/Berlin") == "2024-07-15T14:00:00+02:00"
    assert format_time(winter, timezone="America/New_York") == "2024-01-15T07:00:00-05:00"
    assert format_time(winter, timezone="Asia/Kolkata") == "2024-01-15T17:30:00+05:30"
    # an unknown zone renders in UTC rather than failing a read
    assert format_time(winter, timezone="Mars/Olympus") == "2024-01-15T12:00:00Z"


def test_format_time_reads_back_to_the_same_instant() -> None:
    for zone in ("", "Europe/Berlin", "America/St_Johns"):
        text = format_time(T0, timezone=zone)
        assert parse_time(text, "t") == T0


# -- job output ---------------------------------------------------------------------------


def test_job_json_has_dkrons_shape() -> None:
    job = Job(name="a", schedule="@every 10s", retry_interval=90, catchup_window=3600)
    data = job_to_json(job)
    assert data["id"] == "a" and data["name"] == "a"
    assert data["next"] == ZERO_TIME
    for key in ("last_success", "last_error", "starts_at", "expires_at"):
        assert data[key] is None
    assert data["concurrency"] == "allow"
    assert data["status"] == ""
    assert data["tags"] == {} and data["processors"] == {} and data["dependent_jobs"] == []
    assert data["retry_interval"] == "1m30s"
    assert data["catchup_window"] == "1h0m0s"
    assert data["missed_count"] == 0
    dkron_fields = {
        "id",
        "name",
        "displayname",
        "timezone",
        "schedule",
        "owner",
        "owner_email",
        "success_count",
        "error_count",
        "last_success",
        "last_error",
        "disabled",
        "tags",
        "metadata",
        "retries",
        "dependent_jobs",
        "parent_job",
        "processors",
        "concurrency",
        "executor",
        "executor_config",
        "status",
        "next",
        "ephemeral",
        "expires_at",
        "starts_at",
    }
    assert dkron_fields <= set(data)


def test_job_json_times_are_utc_with_z() -> None:
    berlin = timezone(timedelta(hours=1))
    job = Job(name="a", next=datetime(2024, 3, 2, 2, 30, tzinfo=berlin), last_success=T0)
    data = job_to_json(job)
    assert data["next"] == "2024-03-02T01:30:00Z"
    assert data["last_success"] == "2024-03-01T12:30:15.123456Z"


def test_job_round_trips_through_json() -> None:
    job = job_from_json(FULL_JOB_JSON)
    again = job_from_json(job_to_json(job))
    assert again == job


def test_job_round_trip_keeps_the_engine_only_fields_out() -> None:
    stored = attrs.evolve(
        job_from_json(FULL_JOB_JSON), created_at=T0, updated_at=T0, schedule_anchor=T0
    )
    data = job_to_json(stored)
    assert data["created_at"] == data["updated_at"] == format_time(T0)
    back = job_from_json(data)
    assert back.created_at is None and back.schedule_anchor is None


def test_restore_array_errors_name_the_job_index() -> None:
    with pytest.raises(ValidationError) as info:
        jobs_from_json_array([{"name": "a"}, {"name": "b", "retries": "x"}])
    assert info.value.field == "[1].retries"
    assert "job [1]" in info.value.message and "retries" in info.value.message
    with pytest.raises(ValidationError, match="expected a JSON array"):
        jobs_from_json_array({"name": "a"})
    assert [j.name for j in jobs_from_json_array([{"name": "a"}, {"name": "b"}])] == ["a", "b"]


# -- executions ---------------------------------------------------------------------------


def test_execution_json_has_dkrons_fields_and_trickles() -> None:
    data = execution_to_json(_execution())
    assert data == {
        "id": "1709296215123456000-node1",
        "job_name": "backup-db",
        "started_at": "2024-03-01T12:30:15.123456Z",
        "finished_at": "2024-03-01T12:30:17.123456Z",
        "success": True,
        "output": "done\n",
        "node_name": "node1",
        "group": 1709296215000000000,
        "attempt": 1,
        "exit_code": 0,
        "status": "success",
        "trigger": "schedule",
        "scheduled_at": "2024-03-01T12:30:15Z",
    }


def test_running_execution_has_zero_finished_at() -> None:
    data = execution_to_json(
        _execution(finished_at=None, success=False, status="running", exit_code=None)
    )
    assert data["finished_at"] == ZERO_TIME
    assert data["status"] == "running"
    assert data["exit_code"] is None


def test_empty_output_is_omitted() -> None:
    assert "output" not in execution_to_json(_execution(output=""))


def test_execution_times_render_in_the_jobs_timezone() -> None:
    data = execution_to_json(_execution(), timezone="Europe/Berlin")
    assert data["started_at"] == "2024-03-01T13:30:15.123456+01:00"
    assert data["scheduled_at"] == "2024-03-01T13:30:15+01:00"


def test_output_size_limit_keeps_the_last_bytes_and_flags_it() -> None:
    data = execution_to_json(_execution(output="0123456789"), output_size_limit=4, listing=True)
    assert data["output"] == "6789"
    assert data["output_truncated"] is True
    short = execution_to_json(_execution(output="abc"), output_size_limit=4, listing=True)
    assert short["output"] == "abc" and short["output_truncated"] is False


def test_output_truncated_is_only_on_list_items() -> None:
    assert "output_truncated" not in execution_to_json(_execution())
    assert execution_to_json(_execution(), listing=True)["output_truncated"] is False


def test_output_size_limit_never_splits_a_character() -> None:
    data = execution_to_json(_execution(output="aé€"), output_size_limit=4)  # é 2B, € 3B
    assert data["output"] == "€"


def test_busy_item_has_queued_and_the_output_tail() -> None:
    running = _execution(finished_at=None, status="running", output="")
    data = busy_to_json(BusyExecution(execution=running, queued=False, output_tail="50%"))
    assert data["queued"] is False and data["output"] == "50%"
    queued = busy_to_json(BusyExecution(execution=running, queued=True))
    assert queued["queued"] is True and "output" not in queued


# -- members and stats --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [("alive", 1), ("leaving", 2), ("left", 3), ("failed", 4)]
)
def test_member_json_has_serfs_shape(status: str, code: int) -> None:
    member = Member(
        name="node1", addr="10.0.0.1", port=8946, tags={"server": "true"}, status=status
    )
    data = member_to_json(member)
    assert data["Name"] == "node1" and data["Addr"] == "10.0.0.1" and data["Port"] == 8946
    assert data["Tags"] == {"server": "true"}
    assert data["Status"] == code and data["statusText"] == status
    assert data["id"] == "node1"
    for key in (
        "ProtocolMin",
        "ProtocolMax",
        "ProtocolCur",
        "DelegateMin",
        "DelegateMax",
        "DelegateCur",
    ):
        assert isinstance(data[key], int)


def test_unknown_member_status_is_none() -> None:
    data = member_to_json(Member(name="n", addr="a", port=1, status="weird"))
    assert data["Status"] == 0 and data["statusText"] == "none"


def test_leader_json_is_null_without_a_leader() -> None:
    assert schemas.leader_to_json(None) is None


def test_stats_json() -> None:
    days = [DayStats(date=datetime(2024, 3, 1, tzinfo=UTC), success_count=3, failed_count=1)]
    assert stats_to_json(days) == {
        "stats": [{"date": "2024-03-01T00:00:00Z", "success_count": 3, "failed_count": 1}]
    }
