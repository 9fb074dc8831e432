"""The REST API against a real Engine on a SQLite data dir: in-process through Quart's test
client for most cases, and over real HTTP (hypercorn on port 0, httpx) for a few."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from quart.typing import TestClientProtocol as QuartClient
from werkzeug.datastructures import FileStorage

from trickle import Engine, EngineConfig, ExecutionContext
from trickle.http.app import MAX_JOB_BODY, create_agent_app, create_app, serve_http

NODE = "test-node"
WAIT = 10  # seconds a test waits for an event before failing (a guard, never a sleep)


@attrs.define
class Api:
    """One engine, its app's test client, and a gate the ``block`` executor waits on."""

    engine: Engine
    client: QuartClient
    gate: trio.Event

    async def create(self, name: str, **fields: Any) -> Any:
        body = {"name": name, "schedule": "@every 1h", "executor": "noop", **fields}
        r = await self.client.post("/v1/jobs", json=body)
        assert r.status_code == 201, await r.get_data(as_text=True)
        return await r.get_json()

    async def run_and_wait(
        self, name: str, path: str | None = None, *, children: tuple[str, ...] = ()
    ) -> Any:
        """Run ``name`` and wait until it (and the ``children`` it triggers) finished."""
        with self.engine.subscribe(kinds=["execution_finished"], jobs=[name, *children]) as sub:
            r = await self.client.post(path or f"/v1/jobs/{name}/run")
            assert r.status_code == 200, await r.get_data(as_text=True)
            with trio.fail_after(WAIT):
                for _ in range(1 + len(children)):
                    await sub.receive()
        return await r.get_json()

    async def text(self, method: str, path: str, **kwargs: Any) -> tuple[int, str, Any]:
        r = await self.client.open(path, method=method, **kwargs)
        return r.status_code, await r.get_data(as_text=True), r.headers


async def _noop(ctx: ExecutionContext) -> None:
    ctx.output.write(f"hello from {ctx.job.name}\n")


def _engine(data_dir: Path, gate: trio.Event) -> Engine:
    engine = Engine(EngineConfig(data_dir=data_dir, node_name=NODE))

    async def block(ctx: ExecutionContext) -> None:
        ctx.output.write("working\n")
        await gate.wait()

    async def fail(ctx: ExecutionContext) -> bool:
        ctx.output.write("boom\n")
        return False

    engine.register_executor("noop", _noop)
    engine.register_executor("block", block)
    engine.register_executor("fail", fail)
    return engine


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    gate = trio.Event()
    async with _engine(tmp_path / "data", gate) as engine:
        app = create_app(engine)
        async with app.test_app() as test_app:
            yield Api(engine, test_app.test_client(), gate)
        gate.set()


# -- node routes ---------------------------------------------------------------------------


async def test_health_reports_healthy_and_leadership(api: Api) -> None:
    r = await api.client.get("/health")
    assert r.status_code == 200
    assert await r.get_json() == {"status": "healthy", "leader": True}
    assert r.headers["X-Whom"] == NODE


async def test_health_is_503_when_the_engine_is_not_running(tmp_path: Path) -> None:
    from trickle import Engine, EngineConfig

    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name=NODE))
    app = create_app(engine)
    async with app.test_app() as test_app:
        r = await test_app.test_client().get("/health")
        assert r.status_code == 503
        assert (await r.get_json())["status"] == "unhealthy"


async def test_metrics_are_prometheus_text_with_dkron_counters(api: Api) -> None:
    await api.create("counted")
    await api.run_and_wait("counted")
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await r.get_data(as_text=True)
    assert 'dkron_job_executions_succeeded_total{job_name="counted"} 1.0' in text
    assert "trickle_jobs 1.0" in text


async def test_root_redirects_browsers_to_the_ui(api: Api) -> None:
    r = await api.client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 303 and r.headers["Location"] == "/ui/"
    r = await api.client.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 404


@pytest.mark.parametrize("path", ["/v1", "/v1/"])
async def test_index_describes_the_agent(api: Api, path: str) -> None:
    r = await api.client.get(path)
    data = await r.get_json()
    assert r.status_code == 200
    assert data["agent"]["name"] == NODE and data["agent"]["version"]
    assert data["serf"]["members"] == "1"
    assert data["tags"]["server"] == "true" and data["tags"]["dkron_server"] == "true"


async def test_members_leader_and_isleader(api: Api) -> None:
    r = await api.client.get("/v1/members")
    members = await r.get_json()
    assert r.headers["X-Total-Count"] == "1"
    assert [m["Name"] for m in members] == [NODE]
    assert members[0]["Status"] == 1 and members[0]["statusText"] == "alive"
    r = await api.client.get("/v1/leader")
    assert r.status_code == 200 and (await r.get_json())["Name"] == NODE
    r = await api.client.get("/v1/isleader")
    assert r.status_code == 200 and await r.get_json() == "I am a leader"


async def test_openapi_document_is_served(api: Api) -> None:
    r = await api.client.get("/v1/openapi.json")
    doc = await r.get_json()
    assert r.status_code == 200 and doc["openapi"] == "3.1.0"
    assert "/v1/jobs/{job}/executions" in doc["paths"]


# -- common headers ---------------------------------------------------------------------------


async def test_every_response_names_the_node_and_allows_cors(api: Api) -> None:
    for method, path in [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/nope"),
        ("GET", "/nowhere"),
        ("POST", "/v1/jobs"),
    ]:
        _, _, headers = await api.text(method, path)
        assert headers["X-Whom"] == NODE, path
        assert headers["Access-Control-Allow-Origin"] == "*", path
        assert "X-Total-Count" in headers["Access-Control-Expose-Headers"], path


async def test_cors_preflight_is_answered(api: Api) -> None:
    status, _, headers = await api.text(
        "OPTIONS",
        "/v1/jobs/x",
        headers={
            "Origin": "http://ui.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "content-type,authorization",
        },
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "DELETE" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Headers"] == "content-type,authorization"


async def test_pretty_indents_json(api: Api) -> None:
    await api.create("a")
    _, compact, _ = await api.text("GET", "/v1/jobs/a")
    _, pretty, _ = await api.text("GET", "/v1/jobs/a?pretty")
    assert "\n" not in compact and "\n    " in pretty
    assert json.loads(compact) == json.loads(pretty)


async def test_unknown_route_and_method(api: Api) -> None:
    status, body, _ = await api.text("GET", "/v2/jobs")
    assert status == 404 and body == "404 page not found"
    status, _, headers = await api.text("DELETE", "/v1/busy")
    assert status == 405 and "GET" in headers["Allow"]


async def test_trailing_slash_is_accepted(api: Api) -> None:
    await api.create("a")
    r = await api.client.get("/v1/jobs/")
    assert r.status_code == 200 and len(await r.get_json()) == 1


# -- jobs -------------------------------------------------------------------------------------


async def test_create_answers_201_with_location_and_the_stored_job(api: Api) -> None:
    r = await api.client.post(
        "/v1/jobs",
        json={
            "name": "backup",
            "schedule": "0 30 2 * * *",
            "timezone": "Europe/Berlin",
            "executor": "noop",
            "retry_interval": "30s",
            "unknown_field": 1,
        },
    )
    assert r.status_code == 201
    assert r.headers["Location"] == "/v1/jobs/backup"
    assert r.headers["X-Trickle-Created"] == "true"
    job = await r.get_json()
    assert job["id"] == "backup" and job["name"] == "backup"
    assert job["next"] != "0001-01-01T00:00:00Z" and job["next"].endswith("Z")
    assert job["retry_interval"] == "30s" and job["concurrency"] == "allow"
    r = await api.client.get("/v1/jobs/backup")
    assert r.status_code == 200 and await r.get_json() == job


async def test_update_is_a_full_replace_and_still_answers_201(api: Api) -> None:
    await api.create("a", displayname="First", metadata={"team": "x"})
    await api.run_and_wait("a")
    r = await api.client.patch(
        "/v1/jobs", json={"name": "a", "schedule": "@daily", "executor": "noop"}
    )
    assert r.status_code == 201
    assert r.headers["X-Trickle-Created"] == "false"
    job = await r.get_json()
    assert job["displayname"] == "" and job["metadata"] == {}  # omitted: back to defaults
    assert job["schedule"] == "@daily"
    assert job["success_count"] == 1  # counters are kept


async def test_put_takes_the_name_from_the_path_when_the_body_has_none(api: Api) -> None:
    r = await api.client.put("/v1/jobs/from-path", json={"schedule": "@daily", "executor": "noop"})
    assert r.status_code == 201
    assert (await r.get_json())["name"] == "from-path"
    assert r.headers["Location"] == "/v1/jobs/from-path"


async def test_runoncreate_runs_the_new_job(api: Api) -> None:
    with api.engine.subscribe(kinds=["execution_finished"], jobs=["now"]) as sub:
        r = await api.client.post(
            "/v1/jobs?runoncreate=true",
            json={"name": "now", "schedule": "@manually", "executor": "noop"},
        )
        assert r.status_code == 201
        with trio.fail_after(WAIT):
            event = await sub.receive()
    assert event.execution is not None and event.execution.success


async def test_get_and_delete_a_job(api: Api) -> None:
    await api.create("a")
    await api.run_and_wait("a")
    r = await api.client.delete("/v1/jobs/a")
    assert r.status_code == 200 and (await r.get_json())["name"] == "a"
    assert (await api.client.get("/v1/jobs/a")).status_code == 404
    assert (await api.client.get("/v1/jobs/a/executions")).status_code == 404
    assert (await api.client.delete("/v1/jobs/a")).status_code == 404


@pytest.mark.parametrize("path", ["/v1/jobs/{}", "/v1/jobs/{}/run"])
async def test_run_answers_200_with_the_job_and_records_an_execution(api: Api, path: str) -> None:
    await api.create("r")
    job = await api.run_and_wait("r", path.format("r"))
    assert job["name"] == "r"
    r = await api.client.get("/v1/jobs/r/executions")
    [execution] = await r.get_json()
    assert execution["success"] is True and execution["trigger"] == "manual"
    assert execution["output"] == "hello from r\n"


async def test_run_of_unknown_or_disabled_job(api: Api) -> None:
    assert (await api.client.post("/v1/jobs/ghost/run")).status_code == 404
    await api.create("off", disabled=True)
    status, body, _ = await api.text("POST", "/v1/jobs/off/run")
    assert status == 409 and "disabled" in body


async def test_toggle_flips_disabled(api: Api) -> None:
    await api.create("t")
    r = await api.client.post("/v1/jobs/t/toggle")
    assert r.status_code == 200 and (await r.get_json())["disabled"] is True
    r = await api.client.post("/v1/jobs/t/toggle")
    assert (await r.get_json())["disabled"] is False
    assert (await api.client.post("/v1/jobs/ghost/toggle")).status_code == 404


# -- job listing ------------------------------------------------------------------------------


async def _five_jobs(api: Api) -> None:
    await api.create("alpha", displayname="Database backup", metadata={"team": "db"})
    await api.create("bravo", metadata={"team": "db", "tier": "1"})
    await api.create("charlie", disabled=True, metadata={"team": "web"})
    await api.create("delta", displayname="Report")
    await api.create("echo", executor="fail")
    with api.engine.subscribe(kinds=["execution_finished"]) as sub:
        for name in ("alpha", "echo"):
            assert (await api.client.post(f"/v1/jobs/{name}/run")).status_code == 200
        with trio.fail_after(WAIT):
            await sub.receive()
            await sub.receive()


async def _names(api: Api, query: str) -> tuple[list[str], str]:
    r = await api.client.get(f"/v1/jobs{query}")
    assert r.status_code == 200, await r.get_data(as_text=True)
    return [j["name"] for j in await r.get_json()], r.headers["X-Total-Count"]


async def test_list_filters(api: Api) -> None:
    await _five_jobs(api)
    assert await _names(api, "") == (["alpha", "bravo", "charlie", "delta", "echo"], "5")
    assert await _names(api, "?q=elt") == (["delta"], "1")
    assert await _names(api, "?q=ta") == (["alpha", "delta"], "2")  # "Database backup"
    assert await _names(api, "?q=Report") == (["delta"], "1")  # displayname too
    assert await _names(api, "?q=report") == ([], "0")  # case-sensitive, as Dkron
    assert await _names(api, "?status=success") == (["alpha"], "1")
    assert await _names(api, "?status=failed") == (["echo"], "1")
    assert await _names(api, "?status=untriggered") == (["bravo", "charlie", "delta"], "3")
    assert await _names(api, "?disabled=true") == (["charlie"], "1")
    assert (await _names(api, "?disabled=false"))[1] == "4"
    assert await _names(api, "?metadata[team]=db") == (["alpha", "bravo"], "2")
    assert await _names(api, "?metadata[team]=db&metadata[tier]=1") == (["bravo"], "1")


async def test_list_sorting_and_pagination(api: Api) -> None:
    await _five_jobs(api)
    assert (await _names(api, "?_sort=id&_order=DESC"))[0] == [
        "echo",
        "delta",
        "charlie",
        "bravo",
        "alpha",
    ]
    names, _ = await _names(api, "?_sort=success_count&_order=DESC")
    assert names[0] == "alpha"
    assert await _names(api, "?_start=1&_end=3") == (["bravo", "charlie"], "5")
    assert await _names(api, "?_start=4&_end=100") == (["echo"], "5")
    assert await _names(api, "?_start=10") == ([], "5")
    assert await _names(api, "?_start=3&_end=1") == ([], "5")
    assert await _names(api, "?q=a&_start=0&_end=2") == (["alpha", "bravo"], "4")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("_start=-1", "_start"),
        ("_start=x", "_start"),
        ("_end=1.5", "_end"),
        ("_sort=owner", "_sort"),
        ("_order=up", "_order"),
        ("status=running", "status"),
        ("disabled=yes", "disabled"),
    ],
)
async def test_list_rejects_bad_parameters_naming_them(api: Api, query: str, field: str) -> None:
    status, body, headers = await api.text("GET", f"/v1/jobs?{query}")
    assert status == 400
    assert body.startswith(f"{field}:")
    assert headers["X-Trickle-Error-Field"] == field


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        (
            {"name": "a", "schedule": "@daily", "retries": "3"},
            "retries",
            'Unable to parse payload: retries: expected a non-negative integer, got "3".',
        ),
        (
            {"name": "a", "schedule": "@daily", "executor_config": {"timeout": 5}},
            "executor_config.timeout",
            "Unable to parse payload: executor_config.timeout: expected a string, got 5.",
        ),
        (
            {"name": "Upper", "schedule": "@daily"},
            "name",
            "Job validation failed: name contains illegal character 'U'.",
        ),
        (
            {"name": "", "schedule": "@daily"},
            "name",
            "Job validation failed: name cannot be empty.",
        ),
        (
            {"name": "a", "schedule": "@at badtime"},
            "schedule",
            "Job validation failed: can't parse job schedule: ",
        ),
        (
            {"name": "a", "schedule": "@daily", "concurrency": "replace"},
            "concurrency",
            'invalid concurrency policy value, use "allow" or "forbid"',
        ),
        (
            {"name": "a", "schedule": "@daily", "timezone": "Mars/Base"},
            "timezone",
            "Job validation failed: unknown time zone Mars/Base.",
        ),
        (
            {"name": "a", "schedule": "@daily", "parent_job": "a"},
            "parent_job",
            "Job validation failed: the job can not have itself as parent.",
        ),
        ({"name": "a", "schedule": "@daily", "executor": "nope"}, "executor", "noop"),
    ],
)
async def test_invalid_job_is_400_naming_the_field_and_stores_nothing(
    api: Api, body: dict[str, Any], field: str, text: str
) -> None:
    status, answer, headers = await api.text("POST", "/v1/jobs", json=body)
    assert status == 400
    assert text in answer
    assert headers["X-Trickle-Error-Field"] == field
    assert headers["Content-Type"].startswith("text/plain")
    assert await _names(api, "") == ([], "0")


async def test_errors_are_json_when_the_client_asks_for_json(api: Api) -> None:
    r = await api.client.post(
        "/v1/jobs", json={"name": "a", "retries": -1}, headers={"Accept": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/json")
    data = await r.get_json()
    assert data["field"] == "retries"
    assert data["error"] == data["message"]
    assert data["error"].startswith("Unable to parse payload: retries:")


@pytest.mark.parametrize("payload", [b"{not json", b"", b"[1,", b'{"name": NaN}', b"\xff\xfe"])
async def test_malformed_json_is_400(api: Api, payload: bytes) -> None:
    status, body, _ = await api.text(
        "POST", "/v1/jobs", data=payload, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    assert body.startswith("Unable to parse payload:")


async def test_a_job_must_be_an_object(api: Api) -> None:
    status, body, _ = await api.text("POST", "/v1/jobs", json=[{"name": "a"}])
    assert status == 400 and "expected a JSON object" in body


async def test_body_over_the_limit_is_413_and_stores_nothing(api: Api) -> None:
    body = {
        "name": "big",
        "schedule": "@daily",
        "executor": "noop",
        "displayname": "x" * MAX_JOB_BODY,
    }
    status, text, _ = await api.text("POST", "/v1/jobs", json=body)
    assert status == 413 and "limit" in text
    assert (await api.client.get("/v1/jobs/big")).status_code == 404


async def test_missing_parent_is_404_and_stores_nothing(api: Api) -> None:
    status, body, _ = await api.text(
        "POST", "/v1/jobs", json={"name": "child", "parent_job": "ghost", "executor": "noop"}
    )
    assert status == 404 and body == "specified parent job not found"
    assert (await api.client.get("/v1/jobs/child")).status_code == 404


async def test_deleting_a_parent_with_children_is_409(api: Api) -> None:
    await api.create("parent")
    await api.create("child", schedule="", parent_job="parent")
    r = await api.client.get("/v1/jobs/parent")
    assert (await r.get_json())["dependent_jobs"] == ["child"]
    status, body, _ = await api.text("DELETE", "/v1/jobs/parent")
    assert status == 409 and "child" in body
    assert (await api.client.get("/v1/jobs/parent")).status_code == 200


async def test_pause_blocks_create_and_update_only(api: Api) -> None:
    await api.create("existing")
    r = await api.client.post("/v1/pause")
    assert await r.get_json() == {"paused": True}
    assert await (await api.client.get("/v1/pause")).get_json() == {"paused": True}
    job = {"name": "existing", "schedule": "@daily", "executor": "noop"}
    for method, path in [("POST", "/v1/jobs"), ("PATCH", "/v1/jobs"), ("PUT", "/v1/jobs/existing")]:
        status, body, _ = await api.text(method, path, json=job)
        assert status == 503 and "paused" in body, method
    assert (await api.client.post("/v1/jobs/existing/toggle")).status_code == 200
    assert (await api.client.post("/v1/jobs/existing/toggle")).status_code == 200
    await api.run_and_wait("existing")
    r = await api.client.post("/v1/restore", files=_upload(json.dumps([job]).encode()))
    assert r.status_code == 200  # restore is not a submission (Dkron)
    assert (await api.client.delete("/v1/jobs/existing")).status_code == 200
    r = await api.client.post("/v1/unpause")
    assert await r.get_json() == {"paused": False}
    await api.create("after")


# -- executions -------------------------------------------------------------------------------


async def test_executions_list_pages_sorts_and_truncates(api: Api) -> None:
    await api.create("x", timezone="Asia/Tokyo")
    for _ in range(3):
        await api.run_and_wait("x")
    r = await api.client.get("/v1/jobs/x/executions")
    assert r.headers["X-Total-Count"] == "3"
    items = await r.get_json()
    started = [e["started_at"] for e in items]
    assert started == sorted(started, reverse=True)  # newest first by default
    assert all(s.endswith("+09:00") for s in started)  # the job's timezone
    assert all(e["output_truncated"] is False for e in items)

    r = await api.client.get("/v1/jobs/x/executions?_order=ASC&_start=1&_end=2")
    page = await r.get_json()
    assert r.headers["X-Total-Count"] == "3"
    assert [e["id"] for e in page] == [items[1]["id"]]

    r = await api.client.get("/v1/jobs/x/executions?output_size_limit=6")
    cut = (await r.get_json())[0]
    assert cut["output"] == "hello from x\n"[-6:] and cut["output_truncated"] is True

    r = await api.client.get(f"/v1/jobs/x/executions/{items[0]['id']}")
    full = await r.get_json()
    assert full["output"] == "hello from x\n" and "output_truncated" not in full


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("_sort=bogus", "_sort"),
        ("_start=-2", "_start"),
        ("output_size_limit=big", "output_size_limit"),
    ],
)
async def test_executions_list_rejects_bad_parameters(api: Api, query: str, field: str) -> None:
    await api.create("x")
    status, _, headers = await api.text("GET", f"/v1/jobs/x/executions?{query}")
    assert status == 400 and headers["X-Trickle-Error-Field"] == field


async def test_executions_of_unknown_job_or_id_are_404(api: Api) -> None:
    assert (await api.client.get("/v1/jobs/ghost/executions")).status_code == 404
    await api.create("x")
    assert await (await api.client.get("/v1/jobs/x/executions")).get_json() == []
    assert (await api.client.get("/v1/jobs/x/executions/123-node")).status_code == 404
    assert (await api.client.delete("/v1/jobs/ghost/executions")).status_code == 404


async def test_delete_executions_resets_counters(api: Api) -> None:
    await api.create("x")
    await api.run_and_wait("x")
    r = await api.client.delete("/v1/jobs/x/executions")
    job = await r.get_json()
    assert r.status_code == 200
    assert job["success_count"] == 0 and job["last_success"] is None
    r = await api.client.get("/v1/jobs/x/executions")
    assert await r.get_json() == [] and r.headers["X-Total-Count"] == "0"


async def test_busy_shows_running_executions_with_their_output(api: Api) -> None:
    await api.create("slow", executor="block")
    with (
        api.engine.subscribe(kinds=["execution_output"], jobs=["slow"]) as started,
        api.engine.subscribe(kinds=["execution_finished"], jobs=["slow"]) as finished,
    ):
        assert (await api.client.post("/v1/jobs/slow/run")).status_code == 200
        with trio.fail_after(WAIT):
            await started.receive()
        r = await api.client.get("/v1/busy")
        [item] = await r.get_json()
        assert r.headers["X-Total-Count"] == "1"
        assert item["job_name"] == "slow" and item["queued"] is False
        assert item["finished_at"] == "0001-01-01T00:00:00Z"
        assert item["output"] == "working\n"
        r = await api.client.get("/v1/jobs/slow/executions")
        [running] = await r.get_json()
        assert running["status"] == "running"
        api.gate.set()
        with trio.fail_after(WAIT):
            await finished.receive()
    assert await (await api.client.get("/v1/busy")).get_json() == []


# -- stats, schedule preview ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "days"),
    [
        ("", 30),
        ("?days=7", 7),
        ("?days=0", 30),
        ("?days=-3", 30),
        ("?days=abc", 30),
        ("?days=1000", 365),
    ],
)
async def test_stats_follow_dkrons_day_rules(api: Api, query: str, days: int) -> None:
    r = await api.client.get(f"/v1/stats{query}")
    stats = (await r.get_json())["stats"]
    assert r.status_code == 200 and len(stats) == days
    assert stats[0]["date"] < stats[-1]["date"] or days == 1


async def test_stats_count_todays_executions(api: Api) -> None:
    await api.create("ok")
    await api.create("bad", executor="fail")
    await api.run_and_wait("ok")
    await api.run_and_wait("bad")
    r = await api.client.get("/v1/stats?days=1")
    [today] = (await r.get_json())["stats"]
    assert today["success_count"] == 1 and today["failed_count"] == 1


async def test_schedule_preview(api: Api) -> None:
    r = await api.client.get(
        "/v1/schedule/next",
        query_string={"schedule": "0 0 9 * * *", "timezone": "Europe/Berlin", "count": "3"},
    )
    data = await r.get_json()
    assert r.status_code == 200 and len(data["next"]) == 3
    assert all("T09:00:00+0" in t for t in data["next"])
    r = await api.client.get("/v1/schedule/next", query_string={"schedule": "@every 10s"})
    assert len((await r.get_json())["next"]) == 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"schedule": "61 * * * *"}, "schedule"),
        ({}, "schedule"),
        ({"schedule": "@daily", "count": "0"}, "count"),
        ({"schedule": "@daily", "count": "1000"}, "count"),
        ({"schedule": "0 0 9 * * *", "timezone": "Nowhere/City"}, "timezone"),
    ],
)
async def test_schedule_preview_rejects_bad_input(
    api: Api, params: dict[str, str], field: str
) -> None:
    r = await api.client.get("/v1/schedule/next", query_string=params)
    assert r.status_code == 400
    assert r.headers["X-Trickle-Error-Field"] == field
    assert await r.get_data(as_text=True)


# -- restore ----------------------------------------------------------------------------------


def _upload(data: bytes) -> dict[str, FileStorage]:
    return {
        "file": FileStorage(io.BytesIO(data), filename="jobs.json", content_type="application/json")
    }


async def test_restore_round_trips_an_export(api: Api) -> None:
    await api.create("parent", metadata={"k": "v"}, retry_interval="1m")
    await api.create("child", schedule="", parent_job="parent")
    await api.run_and_wait("parent", children=("child",))
    r = await api.client.get("/v1/jobs")
    exported = await r.get_data()
    before = {j["name"]: j for j in json.loads(exported)}
    for name in ("child", "parent"):
        assert (await api.client.delete(f"/v1/jobs/{name}")).status_code == 200

    r = await api.client.post("/v1/restore", files=_upload(exported))
    assert r.status_code == 200
    messages = json.loads(await r.get_json())  # a JSON string encoding an array (Dkron)
    assert sorted(messages) == ["success create child", "success create parent"]
    after = {j["name"]: j for j in await (await api.client.get("/v1/jobs")).get_json()}
    for name, job in before.items():
        for key in (
            "schedule",
            "metadata",
            "parent_job",
            "dependent_jobs",
            "retry_interval",
            "executor",
            "success_count",
            "last_success",
            "status",
        ):
            assert after[name][key] == job[key], (name, key)


async def test_restore_accepts_a_raw_json_body_larger_than_a_job_write(api: Api) -> None:
    jobs = [
        {"name": f"job-{i}", "schedule": "@daily", "executor": "noop", "displayname": "d" * 4096}
        for i in range(300)
    ]
    body = json.dumps(jobs).encode()
    assert len(body) > MAX_JOB_BODY
    r = await api.client.post(
        "/v1/restore", data=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200, await r.get_data(as_text=True)
    assert len(json.loads(await r.get_json())) == 300
    assert (await _names(api, "?_end=1"))[1] == "300"


async def test_restore_overwrites_existing_jobs(api: Api) -> None:
    await api.create("a", displayname="old")
    r = await api.client.post(
        "/v1/restore",
        files=_upload(
            json.dumps(
                [{"name": "a", "schedule": "@daily", "executor": "noop", "displayname": "new"}]
            ).encode()
        ),
    )
    assert json.loads(await r.get_json()) == ["success update a"]
    assert (await (await api.client.get("/v1/jobs/a")).get_json())["displayname"] == "new"


async def test_restore_with_a_bad_job_stores_nothing(api: Api) -> None:
    payload = [
        {"name": "good", "schedule": "@daily", "executor": "noop"},
        {"name": "bad", "schedule": "@daily", "retries": "x"},
    ]
    r = await api.client.post("/v1/restore", files=_upload(json.dumps(payload).encode()))
    assert r.status_code == 400
    assert r.headers["X-Trickle-Error-Field"] == "[1].retries"
    payload[1] = {"name": "bad", "schedule": "not a schedule"}
    r = await api.client.post("/v1/restore", files=_upload(json.dumps(payload).encode()))
    assert r.status_code == 400 and "bad" in await r.get_data(as_text=True)
    assert await _names(api, "") == ([], "0")


async def test_restore_needs_the_file_field_and_an_array(api: Api) -> None:
    r = await api.client.post("/v1/restore", files={"other": _upload(b"[]")["file"]})
    assert r.status_code == 400 and r.headers["X-Trickle-Error-Field"] == "file"
    r = await api.client.post("/v1/restore", form={"file": "[]"})
    assert r.status_code == 400 and r.headers["X-Trickle-Error-Field"] == "file"
    r = await api.client.post("/v1/restore", files=_upload(b'{"name": "a"}'))
    assert r.status_code == 400
    assert "expected a JSON array" in await r.get_data(as_text=True)


# -- restart ----------------------------------------------------------------------------------


async def test_restart_on_the_same_data_dir_keeps_jobs_and_history(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gate = trio.Event()
    gate.set()
    async with _engine(data, gate) as engine:
        app = create_app(engine)
        async with app.test_app() as test_app:
            first = Api(engine, test_app.test_client(), gate)
            await first.create("kept", metadata={"team": "ops"})
            await first.create("kept-child", schedule="", parent_job="kept")
            await first.run_and_wait("kept", children=("kept-child",))
            r = await first.client.get("/v1/jobs/kept/executions")
            history = await r.get_json()
            jobs_before = await (await first.client.get("/v1/jobs")).get_json()

    async with _engine(data, gate) as engine:
        app = create_app(engine)
        async with app.test_app() as test_app:
            client = test_app.test_client()
            jobs_after = await (await client.get("/v1/jobs")).get_json()
            assert [j["name"] for j in jobs_after] == ["kept", "kept-child"]
            for before, after in zip(jobs_before, jobs_after, strict=True):
                for key in (
                    "metadata",
                    "success_count",
                    "last_success",
                    "status",
                    "dependent_jobs",
                    "parent_job",
                    "schedule",
                ):
                    assert after[key] == before[key], key
            r = await client.get("/v1/jobs/kept/executions")
            assert await r.get_json() == history
            r = await client.get(f"/v1/jobs/kept/executions/{history[0]['id']}")
            assert (await r.get_json())["output"] == "hello from kept\n"


# -- over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Engine]]:
    gate = trio.Event()
    gate.set()
    async with _engine(tmp_path / "data", gate) as engine:
        async with trio.open_nursery() as server:
            [url] = await server.start(
                lambda task_status: serve_http(
                    engine, host="127.0.0.1", port=0, task_status=task_status
                )
            )
            yield url, engine
            server.cancel_scope.cancel()


async def test_over_http_jobs_headers_and_cors(served: tuple[str, Engine]) -> None:
    url, engine = served
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "healthy"
        assert r.headers["x-whom"] == NODE
        for name in ("one", "two", "three"):
            r = await client.post(
                "/v1/jobs", json={"name": name, "schedule": "@daily", "executor": "noop"}
            )
            assert r.status_code == 201 and r.headers["location"] == f"/v1/jobs/{name}"
        r = await client.get(
            "/v1/jobs", params={"_sort": "name", "_order": "DESC", "_start": 0, "_end": 2}
        )
        assert [j["name"] for j in r.json()] == ["two", "three"]
        assert r.headers["x-total-count"] == "3"
        assert r.headers["access-control-allow-origin"] == "*"
        r = await client.options(
            "/v1/jobs",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        )
        assert r.status_code == 204 and "POST" in r.headers["access-control-allow-methods"]
        r = await client.post("/v1/jobs", json={"name": "x", "schedule": "@daily", "retries": "3"})
        assert r.status_code == 400 and r.headers["x-trickle-error-field"] == "retries"
        assert (await client.get("/v1/jobs/ghost")).status_code == 404


async def test_over_http_run_and_restore_multipart(served: tuple[str, Engine]) -> None:
    url, engine = served
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.post(
            "/v1/jobs", json={"name": "web", "schedule": "@daily", "executor": "noop"}
        )
        assert r.status_code == 201
        with engine.subscribe(kinds=["execution_finished"], jobs=["web"]) as sub:
            assert (await client.post("/v1/jobs/web")).status_code == 200
            with trio.fail_after(WAIT):
                await sub.receive()
        r = await client.get("/v1/jobs/web/executions")
        assert r.headers["x-total-count"] == "1" and r.json()[0]["success"] is True
        export = (await client.get("/v1/jobs")).content
        assert (await client.delete("/v1/jobs/web")).status_code == 200
        r = await client.post(
            "/v1/restore", files={"file": ("jobs.json", export, "application/json")}
        )
        assert r.status_code == 200 and json.loads(r.json()) == ["success create web"]
        assert (await client.get("/v1/jobs/web")).json()["success_count"] == 1


async def test_serve_http_stops_gracefully_on_its_shutdown_trigger(tmp_path: Path) -> None:
    gate = trio.Event()
    stop = trio.Event()
    async with _engine(tmp_path / "data", gate) as engine, trio.open_nursery() as nursery:
        [url] = await nursery.start(
            lambda task_status: serve_http(
                engine, port=0, shutdown_trigger=stop.wait, task_status=task_status
            )
        )
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/v1/isleader")).status_code == 200
        stop.set()  # serve_http returns; the nursery then exits without a cancel
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get("/health")


async def test_over_http_an_oversized_body_is_answered_413_at_once(
    served: tuple[str, Engine],
) -> None:
    # The client announces 8 MiB and stops after a few bytes: the answer must not wait for
    # the rest, and must tell the client not to reuse the connection.
    url, _ = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {8 * MAX_JOB_BODY}\r\n\r\n".encode()
            + b'{"name": "big", '
        )
        answer = b""
        with trio.fail_after(WAIT):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
            head, body = answer.split(b"\r\n\r\n", 1)
            headers = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
            while len(body) < int(headers[b"content-length"]):
                body += await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 413")
    assert headers[b"connection"] == b"close"
    assert str(MAX_JOB_BODY).encode() in body
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/v1/jobs/big")).status_code == 404


# -- cluster routes ------------------------------------------------------------------------


@attrs.define
class StopRecorder:
    """A fake stop callback for POST /v1/leave: counts its calls, sets ``called``."""

    calls: int = 0
    called: trio.Event = attrs.field(factory=trio.Event)
    fail: bool = False

    async def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        if self.fail:
            raise RuntimeError("the stop broke")


async def test_leave_answers_the_members_then_calls_the_stop_once(api: Api) -> None:
    stop = StopRecorder()
    app = create_app(api.engine, stop=stop)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        r = await client.post("/v1/leave")
        assert r.status_code == 200
        assert r.headers["X-Total-Count"] == "1" and r.headers["X-Whom"] == NODE
        [me] = await r.get_json()
        assert (me["Name"], me["Status"], me["statusText"]) == (NODE, 2, "leaving")
        with trio.fail_after(WAIT):
            await stop.called.wait()
        # asked again while the stop is under way: the same answer, no second stop
        r = await client.post("/v1/leave")
        assert r.status_code == 200 and (await r.get_json())[0]["statusText"] == "leaving"
    assert stop.calls == 1


async def test_leave_without_a_stop_callback_leaves_and_keeps_the_engine_running(
    api: Api,
) -> None:
    r = await api.client.post("/v1/leave")
    assert r.status_code == 200
    assert [m["Name"] for m in await r.get_json()] == [NODE]
    assert api.engine.running
    assert (await api.client.get("/health")).status_code == 200


async def test_a_stop_that_fails_is_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    stop = StopRecorder(fail=True)
    app = create_app(api.engine, stop=stop)
    async with app.test_app() as test_app:
        r = await test_app.test_client().post("/v1/leave")
        assert r.status_code == 200
        with trio.fail_after(WAIT):
            await stop.called.wait()
    assert "POST /v1/leave: the stop failed" in caplog.text
    assert "the stop broke" in caplog.text


async def test_leave_of_an_engine_that_is_not_running_is_503(tmp_path: Path) -> None:
    stop = StopRecorder()
    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name=NODE))
    async with create_app(engine, stop=stop).test_app() as test_app:
        r = await test_app.test_client().post("/v1/leave")
        assert r.status_code == 503
        assert await r.get_data(as_text=True) == "the engine is not running"
    assert stop.calls == 0


async def test_raft_peers_of_a_lone_server_is_itself_leading_and_voting(api: Api) -> None:
    r = await api.client.get("/v1/raft/peers")
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "1"
    [peer] = await r.get_json()
    match_index = peer.pop("match_index")
    assert isinstance(match_index, int) and match_index >= 1  # the leader tracks itself
    assert peer == {
        "id": NODE,
        "node": NODE,
        "address": "",  # no Raft listener: a lone server started without raft_bind
        "leader": True,
        "voter": True,
    }


async def test_removing_a_server_that_is_not_a_peer_is_404_naming_it(api: Api) -> None:
    status, body, _ = await api.text("DELETE", "/v1/raft/peers/nobody")
    assert (status, body) == (404, "nobody is not a server of the Raft configuration")
    r = await api.client.delete("/v1/raft/peers/nobody", headers={"Accept": "application/json"})
    assert (await r.get_json())["error"] == "nobody is not a server of the Raft configuration"
    assert [p["id"] for p in await (await api.client.get("/v1/raft/peers")).get_json()] == [NODE]


async def test_raft_peers_of_an_engine_that_is_not_running_is_503(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(data_dir=tmp_path / "data", node_name=NODE))
    async with create_app(engine).test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/v1/raft/peers")).status_code == 503
        assert (await client.delete("/v1/raft/peers/x")).status_code == 503


# -- an agent's HTTP surface ------------------------------------------------------------------


@attrs.frozen
class FakeAgentConfig:
    server: bool = False


@attrs.define
class FakeAgent:
    """What the agent's app uses of an Engine, for an agent (``config.server`` False)."""

    node_name: str = "agent-1"
    running: bool = True
    config: FakeAgentConfig = attrs.field(factory=FakeAgentConfig)
    metrics_registry: Any = attrs.field(factory=lambda: _agent_registry())

    def is_leader(self) -> bool:
        return False


def _agent_registry() -> Any:
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    Gauge("trickle_is_leader", "1 while this node leads", registry=registry).set(0)
    return registry


async def test_an_agent_serves_health_and_metrics_and_nothing_else() -> None:
    agent = FakeAgent()
    async with create_agent_app(agent).test_app() as test_app:  # type: ignore[arg-type]
        client = test_app.test_client()
        r = await client.get("/health")
        assert r.status_code == 200 and r.headers["X-Whom"] == "agent-1"
        assert await r.get_json() == {"status": "healthy", "leader": False}
        r = await client.get("/metrics")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert "trickle_is_leader 0.0" in await r.get_data(as_text=True)
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/members"),
            ("POST", "/v1/leave"),
            ("GET", "/v1/raft/peers"),
            ("GET", "/"),
        ]:
            r = await client.open(path, method=method)
            text = await r.get_data(as_text=True)
            assert r.status_code == 404, (method, path)
            assert "agent-1 is an agent, which serves only /health and /metrics" in text
        agent.running = False
        r = await client.get("/health")
        assert r.status_code == 503 and (await r.get_json())["status"] == "unhealthy"


async def test_serve_http_serves_the_agent_app_for_an_agent_engine() -> None:
    agent = FakeAgent()
    async with trio.open_nursery() as nursery:
        [url] = await nursery.start(
            lambda task_status: serve_http(
                agent,  # type: ignore[arg-type]
                port=0,
                task_status=task_status,
            )
        )
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).json() == {"status": "healthy", "leader": False}
            r = await client.get("/v1/jobs")
            assert r.status_code == 404 and "is an agent" in r.text
        nursery.cancel_scope.cancel()
