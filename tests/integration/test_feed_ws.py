"""The live feed (``GET /v1/events``) through Quart's test client: the hello frame, filters
in the query string and by subscribe message, errors, lag frames for a slow consumer,
execution frames as the REST API renders them, output chunks as a shell job prints them,
and the close (1001) when the server stops or the engine ends."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError
from quart.typing import TestClientProtocol as QuartClient
from quart.typing import TestWebsocketConnectionProtocol as QuartWebsocket
from quart_trio import QuartTrio

from trickle import Engine, EngineConfig, ExecutionContext
from trickle._version import __version__
from trickle.http.app import create_agent_app, create_app
from trickle.http.feed import CLOSE_GOING_AWAY, close_feeds, feed_connections

NODE = "feed-node"
WAIT = 10  # seconds a test waits for a frame before failing (a guard, never a sleep)


@attrs.define
class Feed:
    engine: Engine
    app: QuartTrio
    client: QuartClient

    async def put(self, name: str, **fields: Any) -> Any:
        body = {"name": name, "schedule": "@every 1h", "executor": "noop", **fields}
        r = await self.client.post("/v1/jobs", json=body)
        assert r.status_code == 201, await r.get_data(as_text=True)
        return await r.get_json()


async def _noop(ctx: ExecutionContext) -> None:
    ctx.output.write(f"hello from {ctx.job.name}\n")


async def _frame(ws: QuartWebsocket) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        data = await ws.receive()
    assert isinstance(data, str), "frames are text"
    frame = json.loads(data)
    assert isinstance(frame, dict) and "type" in frame and isinstance(frame["seq"], int)
    return frame


async def _until(ws: QuartWebsocket, kind: str) -> dict[str, Any]:
    while True:
        frame = await _frame(ws)
        if frame["type"] == kind:
            return frame


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    engine = Engine(EngineConfig(data_dir=None, node_name=NODE, subscriber_buffer=8))
    engine.register_executor("noop", _noop)
    async with engine:
        app = create_app(engine)
        async with app.test_app() as test_app:
            yield Feed(engine, app, test_app.test_client())


async def test_first_frame_is_hello_with_the_last_seq_node_leader_and_version(
    feed: Feed,
) -> None:
    feed.engine.pause()
    feed.engine.unpause()
    seq = feed.engine.statistics().events_published
    async with feed.client.websocket("/v1/events") as ws:
        hello = await _frame(ws)
        assert hello == {
            "type": "hello",
            "seq": seq,
            "node": NODE,
            "leader": NODE,
            "version": __version__,
        }
        feed.engine.pause()
        paused = await _frame(ws)
        assert paused["type"] == "paused" and paused["seq"] == seq + 1
        assert paused["at"].endswith("Z")
        assert feed_connections(feed.app) == 1
    # the client went away: its subscription is gone with its handler
    assert feed_connections(feed.app) == 0
    assert feed.engine.statistics().subscribers == 0


async def test_job_and_execution_frames_render_as_the_rest_api(feed: Feed) -> None:
    async with feed.client.websocket("/v1/events") as ws:
        await _frame(ws)
        created = await feed.put("render", timezone="Europe/Paris")
        frame = await _until(ws, "job_created")
        assert frame["job_name"] == "render" and frame["job"] == created
        r = await feed.client.post("/v1/jobs/render/run")
        assert r.status_code == 200
        started = await _until(ws, "execution_started")
        output = await _until(ws, "execution_output")
        finished = await _until(ws, "execution_finished")
        r = await feed.client.get("/v1/jobs/render/executions")
        [listed] = await r.get_json()
        assert finished["execution"] == listed  # times in the job's zone, as listed
        assert started["execution"]["id"] == listed["id"]
        assert started["execution"]["finished_at"] == "0001-01-01T00:00:00Z"
        assert output == {
            "type": "execution_output",
            "seq": output["seq"],
            "at": output["at"],
            "job_name": "render",
            "execution_id": listed["id"],
            "node_name": NODE,
            "chunk": "hello from render\n",
        }
        assert started["seq"] < output["seq"] < finished["seq"]
        r = await feed.client.post("/v1/jobs/render/toggle")
        toggled = await _until(ws, "job_toggled")
        assert toggled["job"]["disabled"] is True
        await feed.client.delete("/v1/jobs/render")
        deleted = await _until(ws, "job_deleted")
        assert deleted["job_name"] == "render" and deleted["job"]["name"] == "render"


async def test_query_filters_select_jobs_and_kinds(feed: Feed) -> None:
    path = "/v1/events?jobs=wanted,other&kinds=job_created,job_deleted"
    async with feed.client.websocket(path) as ws:
        await _frame(ws)
        feed.engine.pause()  # not a wanted kind
        feed.engine.unpause()
        await feed.put("unwanted")
        await feed.put("wanted")
        await feed.client.delete("/v1/jobs/wanted")
        first, second = await _frame(ws), await _frame(ws)
        assert (first["type"], first["job_name"]) == ("job_created", "wanted")
        assert (second["type"], second["job_name"]) == ("job_deleted", "wanted")
        assert second["seq"] > first["seq"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("kinds=job_created,bogus", "unknown event kind 'bogus'"),
        ("kinds=lagged", "unknown event kind 'lagged'"),
        ("jobs=a&jobs=b", "jobs: give it once"),
    ],
)
async def test_a_malformed_query_is_refused_with_400_before_the_upgrade(
    feed: Feed, query: str, message: str
) -> None:
    async with feed.client.websocket(f"/v1/events?{query}") as ws:
        with pytest.raises(WebsocketResponseError) as caught:
            await ws.receive()
    response = caught.value.response
    assert response.status_code == 400
    assert message in await response.get_data(as_text=True)
    assert feed_connections(feed.app) == 0


async def test_subscribe_message_replaces_the_filters(feed: Feed) -> None:
    async with feed.client.websocket("/v1/events?kinds=paused") as ws:
        await _frame(ws)
        await ws.send(json.dumps({"type": "subscribe", "jobs": ["b"], "kinds": None}))
        answer = await _frame(ws)
        assert answer["type"] == "subscribed"
        assert (answer["jobs"], answer["kinds"]) == (["b"], None)
        await feed.put("a")
        await feed.put("b")
        feed.engine.pause()  # no job: filtered out now
        frame = await _frame(ws)
        assert (frame["type"], frame["job_name"]) == ("job_created", "b")
        await ws.send(json.dumps({"type": "subscribe"}))  # missing keys: all
        answer = await _frame(ws)
        assert (answer["type"], answer["jobs"], answer["kinds"]) == ("subscribed", None, None)
        feed.engine.unpause()
        assert (await _frame(ws))["type"] == "unpaused"


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "not JSON"),
        ("[1]", "expected a JSON object"),
        ('{"type": "hello"}', "unknown message type 'hello'"),
        ('{"type": "subscribe", "kinds": ["nope"]}', "unknown event kind 'nope'"),
        ('{"type": "subscribe", "jobs": "a"}', "jobs: expected a list"),
        ('{"type": "subscribe", "jobs": []}', "use null for all"),
        ('{"type": "subscribe", "job": ["a"]}', "unknown field 'job'"),
    ],
)
async def test_a_bad_message_gets_an_error_frame_and_the_connection_stays(
    feed: Feed, message: str, error: str
) -> None:
    async with feed.client.websocket("/v1/events?kinds=paused") as ws:
        await _frame(ws)
        await ws.send(message)
        frame = await _frame(ws)
        assert frame["type"] == "error" and error in frame["message"]
        feed.engine.pause()
        assert (await _frame(ws))["type"] == "paused"  # still subscribed as before


async def test_a_binary_message_gets_an_error_frame(feed: Feed) -> None:
    async with feed.client.websocket("/v1/events") as ws:
        await _frame(ws)
        await ws.send(b"\x00\x01")
        frame = await _frame(ws)
        assert frame["type"] == "error" and "binary" in frame["message"]


async def test_a_slow_consumer_gets_a_lag_frame_and_never_slows_the_engine(feed: Feed) -> None:
    engine = feed.engine
    async with feed.client.websocket("/v1/events") as ws:
        hello = await _frame(ws)
        # 200 events published without yielding: the engine never waits for a reader,
        # and this connection's buffer holds 8 of them.
        for _ in range(100):
            engine.pause()
            engine.unpause()
        last = hello["seq"] + 200
        assert engine.statistics().events_published == last
        frames = []
        while not frames or frames[-1]["seq"] < last:
            frames.append(await _frame(ws))
        kinds = [f["type"] for f in frames]
        assert kinds[:8] == ["paused", "unpaused"] * 4
        assert kinds[8] == "lagged" and kinds.count("lagged") == 1
        assert frames[8]["dropped"] == 200 - 8 == last - frames[7]["seq"]
        assert engine.statistics().events_dropped >= 192
        engine.pause()  # delivered normally after the lag
        assert (await _frame(ws))["seq"] == last + 1


async def test_close_feeds_closes_every_connection_with_1001_and_refuses_new_ones(
    feed: Feed,
) -> None:
    async with (
        feed.client.websocket("/v1/events") as one,
        feed.client.websocket("/v1/events?kinds=paused") as two,
    ):
        await _frame(one)
        await _frame(two)
        assert feed_connections(feed.app) == 2
        close_feeds(feed.app)
        for ws in (one, two):
            with pytest.raises(WebsocketDisconnectError) as caught, trio.fail_after(WAIT):
                await ws.receive()
            assert caught.value.args[0] == CLOSE_GOING_AWAY
    assert feed_connections(feed.app) == 0
    async with feed.client.websocket("/v1/events") as ws:
        with pytest.raises(WebsocketResponseError) as refused:
            await ws.receive()
    assert refused.value.response.status_code == 503


async def test_the_engine_stopping_closes_connections_with_1001() -> None:
    engine = Engine(EngineConfig(data_dir=None, node_name=NODE))
    app = create_app(engine)
    engine_scope = trio.CancelScope()

    async def run_engine(task_status: trio.TaskStatus[Engine]) -> None:
        with engine_scope:
            await engine.run(task_status=task_status)

    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with trio.open_nursery() as nursery:
            await nursery.start(run_engine)
            async with client.websocket("/v1/events") as ws:
                await _frame(ws)
                engine_scope.cancel()  # the engine stops
                with pytest.raises(WebsocketDisconnectError) as caught, trio.fail_after(WAIT):
                    await ws.receive()
                assert caught.value.args[0] == CLOSE_GOING_AWAY
        async with client.websocket("/v1/events") as ws:
            with pytest.raises(WebsocketResponseError) as refused:
                await ws.receive()
        assert refused.value.response.status_code == 503


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX shell job")
async def test_output_chunks_of_a_shell_job_arrive_one_by_one_before_it_finishes(
    feed: Feed,
) -> None:
    await feed.put(
        "counting",
        executor="shell",
        executor_config={"command": "echo 1; sleep 1; echo 2; sleep 1; echo 3", "shell": "true"},
    )
    path = "/v1/events?jobs=counting&kinds=execution_output,execution_finished"
    async with feed.client.websocket(path) as ws:
        await _frame(ws)
        r = await feed.client.post("/v1/jobs/counting/run")
        assert r.status_code == 200
        chunks = []
        for expected in ("1\n", "2\n", "3\n"):
            frame = await _frame(ws)
            assert frame["type"] == "execution_output", frame
            chunks.append(frame["chunk"])
            assert frame["chunk"] == expected  # one line at a time, before the finish
        finished = await _frame(ws)
        assert finished["type"] == "execution_finished"
        assert finished["execution"]["output"] == "".join(chunks)


async def test_a_websocket_to_another_path_or_an_agent_is_refused_with_404(feed: Feed) -> None:
    async with feed.client.websocket("/v1/nope") as ws:
        with pytest.raises(WebsocketResponseError) as caught:
            await ws.receive()
    assert caught.value.response.status_code == 404
    agent = create_agent_app(Engine(EngineConfig(data_dir=None, node_name="agent")))
    async with agent.test_app() as test_app:
        async with test_app.test_client().websocket("/v1/events") as ws:
            with pytest.raises(WebsocketResponseError) as caught:
                await ws.receive()
    response = caught.value.response
    assert response.status_code == 404
    assert "is an agent" in await response.get_data(as_text=True)
