"""The client commands (`trickle jobs ...`, `trickle executions`) against a real server.

The Engine and the HTTP API run in the test's nursery on port 0; the click commands run
with CliRunner in a worker thread, so they talk to the server over a real socket.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from click.testing import CliRunner, Result

from trickle import Engine, EngineConfig, EventKind
from trickle.cli.main import cli
from trickle.http.app import serve_http

EXAMPLE_JOB = Path(__file__).resolve().parents[2] / "examples" / "job.json"
WAIT = 30  # seconds allowed for a run to finish before the test fails


@attrs.frozen
class Server:
    engine: Engine
    address: str

    async def invoke(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> Result:
        """Run ``trickle ARGS`` against this server (through ``TRICKLE_ADDRESS``)."""
        environment = {"TRICKLE_ADDRESS": self.address, **(env or {})}
        return await invoke(list(args), input=input, env=environment)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.address) as client:
            return await client.get(path)


async def invoke(
    args: Sequence[str], *, input: str | None = None, env: Mapping[str, str] | None = None
) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(
            runner.invoke, cli, list(args), input=input, env=dict(env or {}), catch_exceptions=False
        )
    )


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name="cli-test"))
    await nursery.start(engine.run)
    urls = await nursery.start(partial(serve_http, engine, host="127.0.0.1", port=0))
    return Server(engine, urls[0])


def shell_job(name: str, command: str, **extra: Any) -> dict[str, Any]:
    """A manual shell job; ``command`` runs through the shell (Dkron's ``shell: true``)."""
    return {
        "name": name,
        "schedule": "@manually",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
        **extra,
    }


async def put(server: Server, *jobs: Mapping[str, Any]) -> Result:
    body = json.dumps(jobs[0] if len(jobs) == 1 else list(jobs))
    result = await server.invoke("jobs", "put", "-", input=body)
    assert result.exit_code == 0, result.output
    return result


async def run_and_wait(server: Server, name: str) -> Result:
    """``trickle jobs run NAME`` and wait for the run's execution_finished event."""
    async with server.engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED], jobs=[name]) as events:
        result = await server.invoke("jobs", "run", name)
        assert result.exit_code == 0, result.output
        with trio.fail_after(WAIT):
            await events.receive()
    return result


# --- jobs put / list / get --------------------------------------------------------------------


async def test_put_creates_then_updates_the_example_job(server: Server) -> None:
    first = await server.invoke("jobs", "put", str(EXAMPLE_JOB))
    assert first.exit_code == 0, first.output
    assert re.fullmatch(r"(created|saved) job job1\n", first.stdout)
    again = await server.invoke("jobs", "put", str(EXAMPLE_JOB))
    assert again.exit_code == 0, again.output
    assert re.fullmatch(r"(updated|saved) job job1\n", again.stdout)
    stored = (await server.get("/v1/jobs/job1")).json()
    assert stored["schedule"] == "@every 10s"
    assert stored["executor_config"] == {"command": "date"}


async def test_list_shows_a_table_of_jobs(server: Server) -> None:
    await put(
        server,
        shell_job("alpha", "true", schedule="@every 1h"),
        shell_job("beta", "true", disabled=True),
    )
    result = await server.invoke("jobs", "list")
    assert result.exit_code == 0, result.output
    header, alpha, beta = result.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "SCHEDULE", "STATUS", "DISABLED"]
    assert alpha.split()[:6] == ["alpha", "@every", "1h", "untriggered", "no", "-"]
    assert alpha.split()[-1].endswith("Z")  # the next fire, in UTC
    assert beta.split()[:4] == ["beta", "@manually", "untriggered", "yes"]


async def test_list_json_is_exactly_the_api_body(server: Server) -> None:
    await put(server, shell_job("alpha", "true"), shell_job("beta", "true"))
    result = await server.invoke("jobs", "list", "--json")
    assert result.exit_code == 0, result.output
    api = await server.get("/v1/jobs")
    assert result.stdout == api.text.rstrip("\n") + "\n"
    assert [job["name"] for job in json.loads(result.stdout)] == ["alpha", "beta"]


async def test_list_filters_are_passed_to_the_api(server: Server) -> None:
    await put(
        server,
        shell_job("alpha", "true", metadata={"team": "a"}),
        shell_job("beta", "true", metadata={"team": "b"}),
    )
    by_query = await server.invoke("jobs", "list", "--json", "-q", "alp")
    assert [j["name"] for j in json.loads(by_query.stdout)] == ["alpha"]
    by_metadata = await server.invoke("jobs", "list", "--json", "--metadata", "team=b")
    assert [j["name"] for j in json.loads(by_metadata.stdout)] == ["beta"]
    descending = await server.invoke("jobs", "list", "--json", "--desc")
    assert [j["name"] for j in json.loads(descending.stdout)] == ["beta", "alpha"]


async def test_list_without_jobs_says_so(server: Server) -> None:
    result = await server.invoke("jobs", "list")
    assert (result.exit_code, result.stdout) == (0, "no jobs\n")


async def test_get_shows_every_field_and_json_is_the_api_body(server: Server) -> None:
    await put(server, shell_job("alpha", "echo hi", tags={"dkron_server": "true:1"}))
    readable = await server.invoke("jobs", "get", "alpha")
    assert readable.exit_code == 0, readable.output
    assert "name:" in readable.stdout and "alpha" in readable.stdout
    assert "executor_config:\n  command: echo hi\n  shell:   true" in readable.stdout
    assert "tags:\n  dkron_server: true:1" in readable.stdout
    raw = await server.invoke("jobs", "get", "alpha", "--json")
    api = await server.get("/v1/jobs/alpha")
    assert raw.stdout == api.text.rstrip("\n") + "\n"


async def test_put_array_sends_every_job_and_fails_on_the_bad_one(server: Server) -> None:
    body = json.dumps(
        [shell_job("good1", "true"), shell_job("Bad", "true"), shell_job("good2", "true")]
    )
    result = await server.invoke("jobs", "put", "-", input=body)
    assert result.exit_code == 1
    assert re.fullmatch(r"(created|saved) job good1\n(created|saved) job good2\n", result.stdout)
    assert result.stderr.startswith("error: job Bad: 400 ")
    assert "illegal character" in result.stderr
    listed = await server.get("/v1/jobs")
    assert [job["name"] for job in listed.json()] == ["good1", "good2"]


async def test_put_json_prints_the_stored_jobs(server: Server) -> None:
    single = await server.invoke(
        "jobs", "put", "--json", "-", input=json.dumps(shell_job("one", "true"))
    )
    assert json.loads(single.stdout)["name"] == "one"
    many = await server.invoke(
        "jobs",
        "put",
        "--json",
        "-",
        input=json.dumps([shell_job("a", "true"), shell_job("b", "true")]),
    )
    assert [job["name"] for job in json.loads(many.stdout)] == ["a", "b"]


async def test_put_of_a_file_that_is_not_json_changes_nothing(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.json"
    path.write_text("{not json", encoding="utf-8")
    result = await server.invoke("jobs", "put", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {path} is not valid JSON: line 1 column 2")
    assert (await server.get("/v1/jobs")).json() == []


async def test_put_of_a_missing_file_is_a_usage_error(server: Server, tmp_path: Path) -> None:
    result = await server.invoke("jobs", "put", str(tmp_path / "nope.json"))
    assert result.exit_code == 2
    assert "nope.json" in result.stderr


# --- errors -----------------------------------------------------------------------------------


async def test_unknown_job_prints_status_and_message_on_stderr(server: Server) -> None:
    for args in (
        ["jobs", "get", "nope"],
        ["jobs", "run", "nope"],
        ["jobs", "toggle", "nope"],
        ["jobs", "delete", "nope"],
        ["executions", "nope"],
    ):
        result = await server.invoke(*args)
        assert result.exit_code == 1, args
        assert result.stdout == "", args
        assert result.stderr.startswith("error: 404 "), (args, result.stderr)
        assert "nope" in result.stderr, args


async def test_refused_connection_names_the_address_tried() -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    result = await invoke(["jobs", "list", "--address", address])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot connect to trickle at {address}: ")
    assert "TRICKLE_ADDRESS" in result.stderr


async def test_address_flag_wins_over_the_environment(server: Server) -> None:
    result = await invoke(
        ["jobs", "list", "--json", "--address", server.address],
        env={"TRICKLE_ADDRESS": "http://127.0.0.1:1"},
    )
    assert (result.exit_code, result.stdout) == (0, "[]\n")


async def test_address_without_scheme_is_accepted(server: Server) -> None:
    bare = server.address.removeprefix("http://")
    result = await invoke(["jobs", "list", "--json", "--address", bare])
    assert (result.exit_code, result.stdout) == (0, "[]\n")


# --- run, executions, toggle, delete ---------------------------------------------------------


async def test_run_records_an_execution_shown_by_executions(server: Server) -> None:
    await put(server, shell_job("hello", "echo hello from trickle; echo second line"))
    result = await run_and_wait(server, "hello")
    assert "job hello started" in result.stdout
    table = await server.invoke("executions", "hello")
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "STARTED",
        "FINISHED",
        "STATUS",
        "NODE",
        "ATTEMPT",
        "EXIT",
        "OUTPUT",
    ]
    cells = row.split()
    assert cells[0].endswith("-cli-test")
    assert cells[3:7] == ["success", "cli-test", "1", "0"]
    assert row.endswith("hello from trickle")


async def test_executions_json_is_the_api_body_and_limit_keeps_the_newest(
    server: Server,
) -> None:
    await put(server, shell_job("twice", "echo run"))
    await run_and_wait(server, "twice")
    await run_and_wait(server, "twice")
    raw = await server.invoke("executions", "twice", "--json")
    api = await server.get("/v1/jobs/twice/executions")
    assert raw.stdout == api.text.rstrip("\n") + "\n"
    executions = json.loads(raw.stdout)
    assert len(executions) == 2
    limited = await server.invoke("executions", "twice", "--json", "--limit", "1")
    assert [e["id"] for e in json.loads(limited.stdout)] == [executions[0]["id"]]
    table = await server.invoke("executions", "twice", "--limit", "1")
    assert len(table.stdout.splitlines()) == 2
    assert executions[0]["id"] in table.stdout


async def test_failed_run_shows_its_exit_code(server: Server) -> None:
    await put(server, shell_job("broken", "echo oops >&2; exit 3"))
    await run_and_wait(server, "broken")
    table = await server.invoke("executions", "broken")
    row = table.stdout.splitlines()[1]
    assert row.split()[3:7] == ["failed", "cli-test", "1", "3"]
    assert row.endswith("oops")


async def test_executions_of_a_job_that_never_ran(server: Server) -> None:
    await put(server, shell_job("idle", "true"))
    result = await server.invoke("executions", "idle")
    assert (result.exit_code, result.stdout) == (0, "no executions of job idle\n")


async def test_toggle_disables_then_enables(server: Server) -> None:
    await put(server, shell_job("flip", "true"))
    off = await server.invoke("jobs", "toggle", "flip")
    assert off.stdout == "job flip is now disabled\n"
    assert (await server.get("/v1/jobs/flip")).json()["disabled"] is True
    on = await server.invoke("jobs", "toggle", "flip", "--json")
    assert json.loads(on.stdout)["disabled"] is False


async def test_run_of_a_disabled_job_is_refused(server: Server) -> None:
    await put(server, shell_job("off", "true", disabled=True))
    result = await server.invoke("jobs", "run", "off")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 409 ")


async def test_delete_removes_the_job(server: Server) -> None:
    await put(server, shell_job("gone", "true"))
    result = await server.invoke("jobs", "delete", "gone")
    assert (result.exit_code, result.stdout) == (0, "deleted job gone\n")
    assert (await server.get("/v1/jobs/gone")).status_code == 404


async def test_list_json_output_can_be_put_back(server: Server, tmp_path: Path) -> None:
    await put(server, shell_job("alpha", "true"), shell_job("beta", "true"))
    await run_and_wait(server, "alpha")
    backup = tmp_path / "backup.json"
    backup.write_text((await server.invoke("jobs", "list", "--json")).stdout, encoding="utf-8")
    await server.invoke("jobs", "delete", "beta")
    restored = await server.invoke("jobs", "put", str(backup))
    assert restored.exit_code == 0, restored.output
    names = [job["name"] for job in (await server.get("/v1/jobs")).json()]
    assert names == ["alpha", "beta"]
    assert (await server.get("/v1/jobs/alpha")).json()["success_count"] == 1


async def test_put_with_run_runs_the_job_once_stored(server: Server) -> None:
    async with server.engine.subscribe(
        kinds=[EventKind.EXECUTION_FINISHED], jobs=["now"]
    ) as events:
        result = await server.invoke(
            "jobs", "put", "--run", "-", input=json.dumps(shell_job("now", "echo ran"))
        )
        assert result.exit_code == 0, result.output
        with trio.fail_after(WAIT):
            event = await events.receive()
    assert event.execution is not None and event.execution.success
