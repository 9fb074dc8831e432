"""Unit tests of the CLI's human output and its pure helpers (no server, no sockets)."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from trickle.cli.client import CliError, _error_message, job_path, read_jobs_file
from trickle.cli.config import resolve
from trickle.cli.output import (
    cut,
    executions_table,
    first_line,
    format_time,
    job_details,
    jobs_table,
    render_table,
)
from trickle.cli.serve import connectable_url, ready_line


def test_time_is_shown_in_utc_without_fractions() -> None:
    assert format_time("2025-03-30T03:30:00.123456789+02:00") == "2025-03-30T01:30:00Z"


@pytest.mark.parametrize("value", [None, "", "0001-01-01T00:00:00Z"])
def test_missing_or_zero_time_is_a_dash(value: str | None) -> None:
    assert format_time(value) == "-"


def test_unparseable_time_is_shown_as_sent() -> None:
    assert format_time("yesterday") == "yesterday"


def test_long_cell_is_cut_with_an_ellipsis() -> None:
    assert cut("abcdef", 4) == "abc…"
    assert cut("a\nb", 10) == "a b"


def test_first_line_skips_blank_lines() -> None:
    assert (
        first_line("\n\n  Tue Jan  7 10:00:00 UTC 2025\nmore\n") == "Tue Jan  7 10:00:00 UTC 2025"
    )
    assert first_line("") == "-"
    assert first_line(None) == "-"


def test_table_aligns_columns_without_trailing_spaces() -> None:
    text = render_table(("A", "LONG HEADER"), [("xxxx", "1"), ("y", "")])
    assert text.splitlines() == ["A     LONG HEADER", "xxxx  1", "y"]


JOB = {
    "name": "job1",
    "schedule": "@every 10s",
    "status": "",
    "disabled": False,
    "last_success": None,
    "last_error": "2025-01-02T03:04:05Z",
    "next": "2025-01-02T03:04:15Z",
    "tags": {"dkron_server": "true:1"},
    "executor_config": {"command": "date"},
    "dependent_jobs": [],
}


def test_jobs_table_shows_the_columns_a_user_scans() -> None:
    lines = jobs_table([JOB, {**JOB, "name": "job2", "status": "success", "disabled": True}])
    header, first, second = lines.splitlines()
    assert header.split() == [
        "NAME",
        "SCHEDULE",
        "STATUS",
        "DISABLED",
        "LAST",
        "SUCCESS",
        "LAST",
        "ERROR",
        "NEXT",
    ]
    assert first.split() == [
        "job1",
        "@every",
        "10s",
        "untriggered",
        "no",
        "-",
        "2025-01-02T03:04:05Z",
        "2025-01-02T03:04:15Z",
    ]
    assert second.split()[3:5] == ["success", "yes"]


def test_executions_table_derives_status_when_the_server_sends_none() -> None:
    running = {
        "id": "1-n",
        "started_at": "2025-01-02T03:04:05Z",
        "finished_at": "0001-01-01T00:00:00Z",
        "success": False,
        "node_name": "n",
        "attempt": 1,
    }
    failed = {
        **running,
        "id": "2-n",
        "finished_at": "2025-01-02T03:04:06Z",
        "exit_code": 3,
        "output": "boom\nstack",
    }
    rows = executions_table([running, failed]).splitlines()
    assert rows[0].split() == [
        "ID",
        "STARTED",
        "FINISHED",
        "STATUS",
        "NODE",
        "ATTEMPT",
        "EXIT",
        "OUTPUT",
    ]
    assert rows[1].split() == ["1-n", "2025-01-02T03:04:05Z", "-", "running", "n", "1", "-", "-"]
    assert rows[2].split() == [
        "2-n",
        "2025-01-02T03:04:05Z",
        "2025-01-02T03:04:06Z",
        "failed",
        "n",
        "1",
        "3",
        "boom",
    ]


def test_executions_table_prefers_the_servers_status() -> None:
    missed = {"id": "3-n", "status": "missed", "finished_at": "2025-01-02T03:04:06Z"}
    assert "missed" in executions_table([missed]).splitlines()[1].split()


def test_job_details_lists_every_field_with_tables_indented() -> None:
    text = job_details(JOB)
    assert "name:           job1" in text
    assert "status:         untriggered" in text
    assert "last_success:   -" in text
    assert "dependent_jobs: -" in text
    assert "tags:\n  dkron_server: true:1" in text
    assert "executor_config:\n  command: date" in text


# --- client helpers ---------------------------------------------------------------------------


def test_job_name_is_percent_encoded_in_paths() -> None:
    assert job_path("a/b c", "run") == "/v1/jobs/a%2Fb%20c/run"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "job not found: x"}', "job not found: x"),
        (b'{"message": "nope"}', "nope"),
        (
            b"Job validation failed: name cannot be empty.",
            "Job validation failed: name cannot be empty.",
        ),
        (b"", "Not Found"),
    ],
)
def test_server_error_message_is_taken_from_the_body(body: bytes, expected: str) -> None:
    assert _error_message(httpx.Response(404, content=body)) == expected


def _stream(text: str, name: str = "jobs.json") -> io.StringIO:
    stream = io.StringIO(text)
    stream.name = name
    return stream


def test_jobs_file_may_hold_one_job_or_an_array() -> None:
    assert read_jobs_file(_stream('{"name": "a"}')) == [{"name": "a"}]
    assert read_jobs_file(_stream('[{"name": "a"}, {"name": "b"}]')) == [
        {"name": "a"},
        {"name": "b"},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"name": }', "jobs.json is not valid JSON: line 1 column 10"),
        ("[1]", "item 0 of jobs.json is not a job object (got int)"),
        ('"job"', "jobs.json is not a job object (got str)"),
        ("[]", "jobs.json holds no jobs"),
    ],
)
def test_bad_jobs_file_is_rejected_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(CliError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        read_jobs_file(_stream(text))


def test_jobs_from_stdin_are_named_standard_input() -> None:
    with pytest.raises(CliError, match="^standard input is not valid JSON"):
        read_jobs_file(_stream("x", "<stdin>"))


# --- the ready line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        ("http://0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("http://[::]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:41234", "http://127.0.0.1:41234"),
        ("http://10.1.2.3:80", "http://10.1.2.3:80"),
    ],
)
def test_ready_url_is_one_a_local_client_can_use(bound: str, expected: str) -> None:
    assert connectable_url(bound) == expected


def test_ready_line_reports_the_bound_port_and_the_node() -> None:
    settings = resolve(
        {"server": True, "http-addr": "127.0.0.1:0", "node-name": "n1", "data-dir": "/tmp/x"}, {}
    )
    line = ready_line(settings, ["http://127.0.0.1:45678"])
    assert line["event"] == "ready"
    assert line["node"] == "n1"
    assert line["http"] == "http://127.0.0.1:45678"
    assert line["http_addresses"] == ["http://127.0.0.1:45678"]
    assert line["data_dir"] == "/tmp/x"
    assert json.loads(json.dumps(line)) == line
