"""Every route of the API answered over real HTTP on port 0, with its expected status."""

from __future__ import annotations

import json

import httpx
import trio

from trickle import Engine, EngineConfig, EventKind, ExecutionContext
from trickle.http.app import ROUTES, serve_http

# (method, path, body or None, expected status); {job} and {execution} are filled in.
CALLS = [
    ("GET", "/health", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/", None, 404),
    ("GET", "/v1", None, 200),
    ("GET", "/v1/openapi.json", None, 200),
    ("GET", "/v1/members", None, 200),
    ("GET", "/v1/leader", None, 200),
    ("GET", "/v1/isleader", None, 200),
    ("GET", "/v1/raft/peers", None, 200),
    ("DELETE", "/v1/raft/peers/nobody", None, 404),
    ("GET", "/v1/jobs", None, 200),
    ("POST", "/v1/jobs", {"name": "posted", "schedule": "@daily", "executor": "noop"}, 201),
    ("PATCH", "/v1/jobs", {"name": "posted", "schedule": "@hourly", "executor": "noop"}, 201),
    ("PUT", "/v1/jobs/put", {"name": "put", "schedule": "@daily", "executor": "noop"}, 201),
    ("GET", "/v1/jobs/{job}", None, 200),
    ("POST", "/v1/jobs/{job}", None, 200),
    ("POST", "/v1/jobs/{job}/run", None, 200),
    ("POST", "/v1/jobs/put/toggle", None, 200),
    ("GET", "/v1/jobs/{job}/executions", None, 200),
    ("GET", "/v1/jobs/{job}/executions/{execution}", None, 200),
    ("GET", "/v1/busy", None, 200),
    ("GET", "/v1/pause", None, 200),
    ("POST", "/v1/pause", None, 200),
    ("POST", "/v1/unpause", None, 200),
    ("GET", "/v1/stats", None, 200),
    ("POST", "/v1/restore", [{"name": "restored", "schedule": "@daily", "executor": "noop"}], 200),
    ("GET", "/v1/schedule/next?schedule=@daily", None, 200),
    ("DELETE", "/v1/jobs/{job}/executions", None, 200),
    ("DELETE", "/v1/jobs/put", None, 200),
    ("POST", "/v1/leave", None, 200),  # last: the node leaves (without gossip, nothing to do)
]


def test_the_call_list_covers_every_route():
    routed = {
        (method, path.replace("<job>", "X").replace("<execution>", "Y"))
        for path, methods, _ in ROUTES
        for method in methods
    }
    called = set()
    for method, path, _, _ in CALLS:
        path = path.split("?")[0]
        for concrete in ("put", "{job}"):
            path = path.replace(f"/jobs/{concrete}", "/jobs/X")
        path = path.replace("/raft/peers/nobody", "/raft/peers/<name>")
        called.add((method, path.replace("{execution}", "Y")))
    assert routed == called


async def test_every_route_over_real_http(tmp_path):
    async def noop(ctx: ExecutionContext) -> None:
        ctx.output.write("ran\n")

    engine = Engine(EngineConfig(data_dir=tmp_path, node_name="http-node"))
    async with engine, trio.open_nursery() as nursery:
        engine.register_executor("noop", noop)
        [url] = await nursery.start(
            lambda task_status: serve_http(engine, port=0, task_status=task_status)
        )
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post(
                "/v1/jobs", json={"name": "base", "schedule": "@manually", "executor": "noop"}
            )
            assert r.status_code == 201
            with engine.subscribe(kinds=[EventKind.EXECUTION_FINISHED]) as sub:
                await client.post("/v1/jobs/base/run")
                with trio.fail_after(10):
                    execution = (await sub.receive()).execution
            for method, path, body, expected in CALLS:
                path = path.format(job="base", execution=execution.id)
                content = json.dumps(body).encode() if body is not None else None
                r = await client.request(
                    method, path, content=content, headers={"Content-Type": "application/json"}
                )
                assert r.status_code == expected, (method, path, r.status_code, r.text)
                assert r.headers["x-whom"] == "http-node", (method, path)
                assert r.headers["access-control-allow-origin"] == "*", (method, path)
        nursery.cancel_scope.cancel()
