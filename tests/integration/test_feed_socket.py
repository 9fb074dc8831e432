"""The live feed over a real socket: ``serve_http`` on port 0 and trio-websocket clients.
Filters, subscribe messages, the HTTP 400 before the upgrade, the lag frame of a client
that does not read, and the close (1001) of every connection when the server stops."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from trickle import Engine, EngineConfig, ExecutionContext
from trickle.http import app as app_module
from trickle.http.app import serve_http
from trickle.http.feed import CLOSE_GOING_AWAY

NODE = "feed-socket"
WAIT = 10  # seconds a test waits for a frame before failing (a guard, never a sleep)


@attrs.define
class Served:
    engine: Engine
    url: str  # ws://127.0.0.1:PORT/v1/events
    http: str
    stop: trio.Event
    stopped: trio.Event


async def _noop(ctx: ExecutionContext) -> None:
    ctx.output.write("x" * 200)


async def _frame(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(WAIT):
        text = await ws.get_message()
    frame = json.loads(text)
    assert isinstance(frame, dict) and isinstance(frame["seq"], int)
    return frame


async def _close_stream(ws: WebSocketConnection) -> None:
    """trio-websocket 0.12 leaves its socket open when the server closed first."""
    await ws._stream.aclose()


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    # A graceful timeout far beyond the tests' guards: a feed that held the stop until
    # it expired would fail them.
    monkeypatch.setattr(app_module, "GRACEFUL_TIMEOUT", 60.0)
    engine = Engine(EngineConfig(data_dir=None, node_name=NODE, subscriber_buffer=16))
    engine.register_executor("noop", _noop)
    stop, stopped = trio.Event(), trio.Event()
    async with engine, trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_http(
                    engine, port=0, shutdown_trigger=stop.wait, task_status=task_status
                )
            finally:
                stopped.set()

        [http] = await nursery.start(serve)
        yield Served(engine, http.replace("http://", "ws://") + "/v1/events", http, stop, stopped)
        nursery.cancel_scope.cancel()


async def test_hello_then_filtered_events_over_a_socket(served: Served) -> None:
    async with open_websocket_url(served.url + "?kinds=paused") as ws:
        hello = await _frame(ws)
        assert (hello["type"], hello["node"], hello["leader"]) == ("hello", NODE, NODE)
        served.engine.pause()
        served.engine.unpause()  # filtered out
        served.engine.unpause()
        served.engine.pause()
        first, second = await _frame(ws), await _frame(ws)
        assert [first["type"], second["type"]] == ["paused", "paused"]
        assert second["seq"] == first["seq"] + 2  # the gap: the filtered unpaused
        await ws.send_message(json.dumps({"type": "subscribe", "kinds": ["unpaused"]}))
        answer = await _frame(ws)
        assert (answer["type"], answer["kinds"], answer["jobs"]) == (
            "subscribed",
            ["unpaused"],
            None,
        )
        served.engine.unpause()
        assert (await _frame(ws))["type"] == "unpaused"
        await ws.send_message("{")
        error = await _frame(ws)
        assert error["type"] == "error" and "not JSON" in error["message"]


async def test_an_unknown_kind_is_refused_with_400_before_the_upgrade(served: Served) -> None:
    # A plain HTTP upgrade request (trio-websocket leaks its socket on a rejection).
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with httpx.AsyncClient(base_url=served.http) as client:
        r = await client.get("/v1/events?kinds=execution_output,nope", headers=upgrade)
    assert r.status_code == 400
    assert "unknown event kind 'nope'" in r.text
    assert served.engine.statistics().subscribers == 0


async def test_a_client_that_does_not_read_gets_one_lag_frame(served: Served) -> None:
    engine = served.engine
    async with open_websocket_url(served.url, message_queue_size=1) as ws:
        hello = await _frame(ws)
        for _ in range(500):  # never waits for the client
            engine.pause()
            engine.unpause()
        last = hello["seq"] + 1000
        assert engine.statistics().events_published == last
        frames = []
        while not frames or frames[-1]["seq"] < last:
            frames.append(await _frame(ws))
        lagged = [f for f in frames if f["type"] == "lagged"]
        assert len(lagged) == 1 and lagged[0]["dropped"] == 1000 - 16
        assert len(frames) == 16 + 1 and frames[-1] == lagged[0]
        assert lagged[0]["seq"] == last


async def test_every_connection_is_closed_with_1001_when_the_server_stops(
    served: Served,
) -> None:
    async with trio.open_nursery() as nursery:
        closes: list[int] = []

        async def client(query: str, task_status: trio.TaskStatus[None]) -> None:
            async with open_websocket_url(served.url + query) as ws:
                await _frame(ws)
                task_status.started()
                try:
                    with trio.fail_after(WAIT):
                        while True:
                            await ws.get_message()
                except ConnectionClosed as exc:
                    assert exc.reason is not None
                    closes.append(exc.reason.code)
                finally:
                    await _close_stream(ws)

        for query in ("", "?kinds=execution_output", "?jobs=a,b"):
            await nursery.start(client, query)
        served.stop.set()
    assert closes == [CLOSE_GOING_AWAY] * 3
    with trio.fail_after(WAIT):  # not hypercorn's 60 s graceful timeout
        await served.stopped.wait()
