"""The live feed: engine events as JSON frames over the ``/v1/events`` WebSocket.

The protocol (``docs/feed.md``): filters in the query string (``?jobs=a,b&kinds=...``,
comma-separated, absent = all; a malformed one answers HTTP 400 before the upgrade); a
client may replace them at any time with a text frame ``{"type": "subscribe", "jobs": [...]
| null, "kinds": [...] | null}`` (answered ``subscribed``, or ``error`` with the connection
kept open). Every frame the server sends is one JSON object with ``type`` and ``seq`` (the
engine's event sequence number); the first is ``hello``.

Each connection holds one bounded engine subscription (``EngineConfig.subscriber_buffer``
events): a client that reads too slowly gets a ``lagged`` frame saying how many events it
missed, and never slows the engine. When the server stops, every connection is closed with
1001 (going away): ``close_feeds(app)`` at the start of the HTTP server's graceful stop
(``serve_http`` does it), or the engine's own stop (its subscriptions end).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio
from quart import Response, websocket
from quart_trio import QuartTrio

from trickle._version import __version__
from trickle.engine._engine import Engine
from trickle.engine.events import Event, EventKind, Subscription
from trickle.engine.model import Member
from trickle.errors import TrickleError
from trickle.http import schemas

logger = logging.getLogger(__name__)

FEED_PATH = "/v1/events"
CLOSE_GOING_AWAY = 1001  # RFC 6455: the server is going away
CLOSE_REASON = "server stopping"
ZONE_LOOKUP_TIMEOUT = 1.0  # seconds to read a job's timezone before rendering in UTC
# Serialised frames kept, shared by the connections of one app: at most this many, and this
# many characters in all (a finished execution carries its output, up to 256 KB).
FRAME_CACHE_SIZE = 4096
FRAME_CACHE_CHARS = 8 << 20
# Kinds a client may filter on; ``lagged`` is not one (a connection always gets its own).
FILTER_KINDS: tuple[str, ...] = tuple(k.value for k in EventKind if k is not EventKind.LAGGED)
_JOB_KINDS = frozenset(
    {EventKind.JOB_CREATED, EventKind.JOB_UPDATED, EventKind.JOB_DELETED, EventKind.JOB_TOGGLED}
)
_EXECUTION_KINDS = frozenset({EventKind.EXECUTION_STARTED, EventKind.EXECUTION_FINISHED})
_MEMBER_KINDS = frozenset(
    {
        EventKind.MEMBER_JOINED,
        EventKind.MEMBER_UPDATED,
        EventKind.MEMBER_FAILED,
        EventKind.MEMBER_LEFT,
        EventKind.MEMBER_REAPED,
    }
)
_STATE_KEY = "trickle.feed"


class FeedError(ValueError):
    """A filter or client message the feed refuses; the text says what is wrong."""


@attrs.frozen
class Filters:
    """What one connection receives: job names and event kinds (None: all)."""

    jobs: frozenset[str] | None = None
    kinds: frozenset[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "jobs": None if self.jobs is None else sorted(self.jobs),
            "kinds": None if self.kinds is None else sorted(self.kinds),
        }


# -- pure parsing and rendering ---------------------------------------------------------------


def _check_kinds(kinds: Iterable[str], where: str) -> frozenset[str]:
    found = frozenset(kinds)
    unknown = sorted(found - set(FILTER_KINDS))
    if unknown:
        raise FeedError(
            f"{where}: unknown event kind {', '.join(map(repr, unknown))}; "
            f"use any of {', '.join(FILTER_KINDS)}"
        )
    return found


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def filters_from_query(args: Mapping[str, str]) -> Filters:
    """The filters of ``?jobs=a,b&kinds=x,y`` (comma-separated; absent or empty: all).
    Raises ``FeedError`` for an unknown kind or a repeated parameter."""
    getlist = getattr(args, "getlist", None)
    values: dict[str, list[str]] = {}
    for name in ("jobs", "kinds"):
        given = getlist(name) if getlist is not None else [args[name]] if name in args else []
        if len(given) > 1:
            raise FeedError(f"{name}: give it once, as a comma-separated list")
        values[name] = _split(given[0]) if given else []
    jobs = frozenset(values["jobs"]) or None
    kinds = _check_kinds(values["kinds"], "kinds") or None
    return Filters(jobs=jobs, kinds=kinds)


def _name_list(value: object, field: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FeedError(f"{field}: expected a list of non-empty strings or null, got {value!r}")
    if not value:
        raise FeedError(f"{field}: an empty list matches nothing; use null for all")
    return frozenset(value)


def parse_client_message(text: str | bytes) -> Filters:
    """The filters a client frame asks for. The only message is ``{"type": "subscribe",
    "jobs": [...] | null, "kinds": [...] | null}`` (a missing key: null, all). Raises
    ``FeedError`` saying what is wrong with anything else."""
    if isinstance(text, bytes):
        raise FeedError("expected a text frame with a JSON object, got a binary frame")
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise FeedError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise FeedError(f"expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if kind != "subscribe":
        raise FeedError(f'unknown message type {kind!r}; the only one is "subscribe"')
    extra = sorted(set(message) - {"type", "jobs", "kinds"})
    if extra:
        raise FeedError(f"subscribe: unknown field {', '.join(map(repr, extra))}")
    jobs = _name_list(message.get("jobs"), "jobs")
    kinds = _name_list(message.get("kinds"), "kinds")
    if kinds is not None:
        kinds = _check_kinds(kinds, "kinds")
    return Filters(jobs=jobs, kinds=kinds)


def _member(data: Mapping[str, Any]) -> dict[str, Any]:
    return schemas.member_to_json(
        Member(
            name=str(data.get("member", "")),
            addr=str(data.get("addr", "")),
            port=int(data.get("port", 0) or 0),
            tags=dict(data.get("tags") or {}),
            status=str(data.get("status", "")),
        )
    )


def event_to_frame(event: Event, *, timezone: str = "") -> dict[str, Any]:
    """One engine event as its feed frame (``docs/feed.md``). Jobs, executions and members
    are rendered as the REST API renders them; execution times in ``timezone`` (the job's,
    as ``GET /v1/jobs/{job}/executions`` does; '' = UTC)."""
    kind = event.kind
    frame: dict[str, Any] = {
        "type": kind.value,
        "seq": event.seq,
        "at": schemas.format_time(event.at),
    }
    if kind is EventKind.EXECUTION_OUTPUT:
        ex = event.execution
        frame["job_name"] = event.job_name
        frame["execution_id"] = ex.id if ex is not None else ""
        frame["node_name"] = ex.node_name if ex is not None else ""
        frame["chunk"] = event.chunk
    elif kind in _JOB_KINDS:
        frame["job_name"] = event.job_name
        frame["job"] = schemas.job_to_json(event.job) if event.job is not None else None
        if "reason" in event.data:
            frame["reason"] = event.data["reason"]
    elif kind in _EXECUTION_KINDS:
        frame["job_name"] = event.job_name
        frame["execution"] = (
            schemas.execution_to_json(event.execution, timezone=timezone, listing=True)
            if event.execution is not None
            else None
        )
    elif kind in _MEMBER_KINDS:
        frame["member"] = _member(event.data)
    elif kind is EventKind.LEADER_CHANGED:
        frame["leader"] = event.data.get("leader")
    elif kind is EventKind.LAGGED:
        frame["dropped"] = int(event.data.get("dropped", 0))
    else:  # fire_skipped, fire_missed, paused, unpaused, and kinds added later
        if event.job_name:
            frame["job_name"] = event.job_name
        for key, value in event.data.items():
            frame.setdefault(key, value)
        if kind is EventKind.FIRE_MISSED and event.execution is not None:
            frame["execution"] = schemas.execution_to_json(
                event.execution, timezone=timezone, listing=True
            )
    return frame


def _dumps(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str)


# -- per-app state --------------------------------------------------------------------------


@attrs.define(eq=False)
class _FeedState:
    """The feed's state in one app: the stop signal and the frames already serialised
    (an event goes to every connection that wants it: it is encoded once)."""

    going_away: trio.Event = attrs.field(factory=trio.Event)
    connections: int = 0
    frames: OrderedDict[int, str] = attrs.field(factory=OrderedDict)
    chars: int = 0  # in ``frames``

    def cached(self, seq: int) -> str | None:
        return self.frames.get(seq)

    def remember(self, seq: int, text: str) -> None:
        if seq in self.frames or len(text) > FRAME_CACHE_CHARS // 4:
            return
        self.frames[seq] = text
        self.chars += len(text)
        while len(self.frames) > FRAME_CACHE_SIZE or self.chars > FRAME_CACHE_CHARS:
            _, dropped = self.frames.popitem(last=False)
            self.chars -= len(dropped)

    def clear(self) -> None:
        self.frames.clear()
        self.chars = 0


def _state(app: QuartTrio) -> _FeedState:
    state = app.extensions.get(_STATE_KEY)
    if not isinstance(state, _FeedState):
        state = app.extensions[_STATE_KEY] = _FeedState()
    return state


def close_feeds(app: QuartTrio) -> None:
    """Close every feed connection of ``app`` with 1001 (going away), and refuse new ones
    (503) until the app is served again. Call it when the server starts its graceful stop,
    before waiting for connections to end (``serve_http`` does): a WebSocket would
    otherwise hold the stop for the server's whole graceful timeout."""
    _state(app).going_away.set()


def feed_connections(app: QuartTrio) -> int:
    """How many feed connections ``app`` has open now."""
    return _state(app).connections


def register_feed(app: QuartTrio, engine: Engine) -> None:
    """Serve the feed of ``engine`` at ``FEED_PATH`` in ``app``."""
    state = _state(app)

    @app.before_serving
    async def _reset() -> None:  # an app served again after a stop takes connections again
        state.going_away = trio.Event()
        state.clear()

    async def events() -> Response | None:
        try:
            filters = filters_from_query(websocket.args)
        except FeedError as exc:
            return Response(str(exc), status=400, content_type="text/plain; charset=utf-8")
        if state.going_away.is_set() or not engine.running:
            return Response(
                "the server is stopping" if engine.running else "the engine is not running",
                status=503,
                content_type="text/plain; charset=utf-8",
            )
        await _Connection(engine, state, filters).serve()
        return None

    app.add_websocket(FEED_PATH, endpoint="events", view_func=events)


class _Connection:
    """One client: its subscription, a reader for its messages, a writer of frames."""

    def __init__(self, engine: Engine, state: _FeedState, filters: Filters) -> None:
        self.engine = engine
        self.state = state
        self.filters = filters
        self.zones: dict[str, str] = {}  # job name -> timezone, for execution times
        self.send_lock = trio.Lock()

    def _seq(self) -> int:
        return self.engine.statistics().events_published

    async def _send(self, frame: Mapping[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else _dumps(frame)
        lock = self.send_lock  # the reader's answers and the writer's frames, one at a time
        if lock.locked():
            await lock.acquire()
        else:
            lock.acquire_nowait()  # the usual case: no extra trips through the scheduler
        try:
            await websocket.send(text)
        finally:
            lock.release()

    async def serve(self) -> None:
        engine, state = self.engine, self.state
        # Subscribing and reading the sequence number in one step: every event after
        # ``hello`` has a larger seq, none before it is delivered.
        with engine.subscribe(kinds=self.filters.kinds, jobs=self.filters.jobs) as sub:
            leader = engine.leader()
            hello = {
                "type": "hello",
                "seq": self._seq(),
                "node": engine.node_name,
                "leader": leader.name if leader is not None else None,
                "version": __version__,
            }
            state.connections += 1
            try:
                await websocket.accept()
                await self._send(hello)
                going_away = state.going_away
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read, sub)
                    nursery.start_soon(self._close_when, going_away, nursery.cancel_scope)
                    await self._write(sub)  # returns when the engine stops
                    nursery.cancel_scope.cancel()
                await websocket.close(CLOSE_GOING_AWAY, CLOSE_REASON)
            finally:
                state.connections -= 1

    @staticmethod
    async def _close_when(event: trio.Event, scope: trio.CancelScope) -> None:
        await event.wait()
        scope.cancel()

    async def _read(self, sub: Subscription) -> None:
        while True:
            message = await websocket.receive()
            try:
                filters = parse_client_message(message)
            except FeedError as exc:
                await self._send({"type": "error", "seq": self._seq(), "message": str(exc)})
                continue
            self.filters = filters
            sub.kinds = (
                None if filters.kinds is None else frozenset(EventKind(k) for k in filters.kinds)
            )
            sub.jobs = filters.jobs
            await self._send({"type": "subscribed", "seq": self._seq(), **filters.to_json()})

    async def _write(self, sub: Subscription) -> None:
        async for event in sub:
            if event.kind is EventKind.LAGGED:
                await self._send(event_to_frame(event))
                continue
            if not sub.matches(event):  # queued before the client changed its filters
                continue
            self._learn_zone(event)
            text = self.state.cached(event.seq)
            if text is None:
                timezone = await self._zone(event)
                text = _dumps(event_to_frame(event, timezone=timezone))
                self.state.remember(event.seq, text)
            await self._send(text)

    def _learn_zone(self, event: Event) -> None:
        if event.kind in _JOB_KINDS:
            if event.kind is EventKind.JOB_DELETED:
                self.zones.pop(event.job_name, None)
            elif event.job is not None:
                self.zones[event.job_name] = event.job.timezone

    async def _zone(self, event: Event) -> str:
        """The job's timezone for an event that renders an execution ('' otherwise)."""
        if event.execution is None or event.kind is EventKind.EXECUTION_OUTPUT:
            return ""
        name = event.job_name
        zone = self.zones.get(name)
        if zone is None:
            zone = ""  # unknown job, or no answer: UTC (a server without quorum, whose
            # linearizable read would wait, must not stall the feed)
            with trio.move_on_after(ZONE_LOOKUP_TIMEOUT):
                try:
                    zone = (await self.engine.get_job(name)).timezone
                except TrickleError:
                    pass
            self.zones[name] = zone
        return zone
