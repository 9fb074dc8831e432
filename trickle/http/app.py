"""The REST API: Dkron's ``/v1`` routes, ``/health`` and ``/metrics`` on Quart-Trio.

``create_app(engine)`` builds a server's ASGI app; ``create_agent_app(engine)`` an agent's,
which serves only ``/health`` and ``/metrics``; ``serve_http(engine, ...)`` serves the one
that fits the engine with hypercorn inside the caller's nursery. The apps use only the
Engine's public API.

Errors: every ``trickle.errors.TrickleError`` answers its ``http_status``. The body is plain
text as Dkron writes it (``Job validation failed: <message>.``); the header
``X-Trickle-Error-Field`` names the offending field or parameter when there is one. A client
that asks for JSON (``Accept: application/json``) gets ``{"error", "message", "field"}``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from quart_trio.wrappers.request import TrioRequest
from werkzeug.exceptions import HTTPException

from trickle._version import __version__
from trickle.engine import _engine as engine_module
from trickle.engine._engine import Engine, JobQuery
from trickle.errors import (
    EngineClosed,
    JobNotFound,
    ScheduleError,
    SubmissionsPaused,
    TrickleError,
    ValidationError,
)
from trickle.http import schemas
from trickle.http.feed import close_feeds, register_feed
from trickle.http.openapi import openapi_document
from trickle.http.ui import register_ui

logger = logging.getLogger(__name__)

MAX_JOB_BODY = 1 << 20  # bytes: the largest request body of any route but restore (1 MiB)
MAX_RESTORE_BODY = 64 << 20  # bytes: the largest restore upload (64 MiB)
GRACEFUL_TIMEOUT = 1.0  # seconds open requests get to finish when the server stops
DEFAULT_STATS_DAYS = 30  # /v1/stats without a usable ?days (Dkron)
MAX_STATS_DAYS = 365  # /v1/stats cap (Dkron)
DEFAULT_PREVIEW_COUNT = 5  # /v1/schedule/next without ?count
MAX_PREVIEW_COUNT = 100  # /v1/schedule/next ?count cap
CORS_MAX_AGE = 43_200  # seconds a browser may cache a preflight answer (12 h, as gin-cors)
LEAVE_TIMEOUT = 5.0  # seconds the default POST /v1/leave action waits for the leave to spread

StopCallback = Callable[[], Awaitable[object]]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
ERROR_FIELD_HEADER = "X-Trickle-Error-Field"
CREATED_HEADER = "X-Trickle-Created"  # "true" on create, "false" on update (both 201)
EXPOSED_HEADERS = (
    "*, X-Total-Count, X-Whom, Location, " + ERROR_FIELD_HEADER + ", " + CREATED_HEADER
)
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"

# ?_sort values of GET /v1/jobs and of a job's executions: the Engine's own tables
# ('id' is react-admin's name for the key).
JOB_SORTS = engine_module.JOB_SORTS
EXECUTION_SORTS = engine_module.EXECUTION_SORTS
JOB_STATUS_FILTERS = ("success", "failed", "partially_failed", "untriggered")
_METADATA_PARAM = re.compile(r"metadata\[(.*)\]")


class ApiProblem(Exception):
    """A request the API refuses, with the exact text it answers."""

    def __init__(self, status: int, text: str, *, field: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.field = field


class _Request(TrioRequest):
    """Quart-Trio's request with a body limit per route: restore takes large uploads,
    every other route at most ``MAX_JOB_BODY`` bytes (a larger body answers 413)."""

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        limit = MAX_RESTORE_BODY if path.rstrip("/") == "/v1/restore" else MAX_JOB_BODY
        kwargs["max_content_length"] = limit
        super().__init__(method, scheme, path, *args, **kwargs)
        self.max_content_length = limit


def _sentence(text: str) -> str:
    """Dkron ends its error texts with a full stop."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; ``?pretty`` (any value) indents it."""
    indent = 4 if "pretty" in request.args else None
    body = json.dumps(data, indent=indent, ensure_ascii=False)
    response = Response(body, status=status, content_type=JSON_CONTENT_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _wants_json() -> bool:
    if not has_request_context():  # a WebSocket upgrade refused: plain text
        return False
    best = request.accept_mimetypes.best_match(["text/plain", "application/json"])
    return best == "application/json"


def _problem_response(status: int, text: str, field: str = "") -> Response:
    if _wants_json():
        response = _json({"error": text, "message": text, "field": field}, status)
    else:
        response = Response(text, status=status, content_type=TEXT_CONTENT_TYPE)
    if field:
        response.headers[ERROR_FIELD_HEADER] = field
    if status == 413:
        # The rest of the body is never read: close the connection rather than leave the
        # client writing into a stalled one (the next request on it would hang).
        response.headers["Connection"] = "close"
    return response


def _non_negative_int(name: str, default: int | None) -> int | None:
    """A query parameter that must be a non-negative integer when given."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiProblem(400, f"{name}: expected a non-negative integer, got {raw!r}", field=name)
    return value


def _order(default: str) -> str:
    raw = request.args.get("_order", "")
    if raw == "":
        return default
    order = raw.lower()
    if order not in ("asc", "desc"):
        raise ApiProblem(400, f'_order: expected "ASC" or "DESC", got {raw!r}', field="_order")
    return order


def _sort(allowed: dict[str, str], default: str) -> str:
    raw = request.args.get("_sort", "")
    if raw == "":
        return default
    try:
        return allowed[raw]
    except KeyError:
        names = ", ".join(allowed)
        raise ApiProblem(
            400, f"_sort: unknown sort field {raw!r}; use one of {names}", field="_sort"
        ) from None


async def _read_body() -> bytes:
    """The whole request body; 413 past the route's limit."""
    length = request.content_length
    limit = request.max_content_length
    if length is not None and limit is not None and length > limit:
        raise _too_large(limit)
    data = await request.get_data()
    return data if isinstance(data, bytes) else data.encode("utf-8")


def _too_large(limit: int | None) -> ApiProblem:
    return ApiProblem(413, f"request body too large: the limit is {limit} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiProblem(400, "Unable to parse payload: the request body is empty.")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ApiProblem(400, f"Unable to parse payload: not UTF-8 ({exc.reason}).") from None
    except ValueError as exc:
        raise ApiProblem(400, _sentence(f"Unable to parse payload: {exc}")) from None


def _job_problem(exc: ValidationError) -> ApiProblem:
    """An engine validation error in Dkron's words."""
    message = exc.message
    if isinstance(exc, ScheduleError) and not message.startswith("can't parse job schedule"):
        message = f"can't parse job schedule: {message}"
    return ApiProblem(400, _sentence(f"Job validation failed: {message}"), field=exc.field)


class _Api:
    """The route handlers, bound to one engine."""

    def __init__(self, app: QuartTrio, engine: Engine, stop: StopCallback | None = None) -> None:
        self.app = app
        self.engine = engine
        self.stop = stop or partial(_leave_only, engine)
        self.leaving = False  # POST /v1/leave was answered: the stop is under way

    # -- node ---------------------------------------------------------------------------

    async def health(self) -> Response:
        if not self.engine.running:
            return _json(
                {"status": "unhealthy", "leader": False, "issues": ["the engine is not running"]},
                status=503,
            )
        return _json({"status": "healthy", "leader": self.engine.is_leader()})

    async def metrics(self) -> Response:
        body = generate_latest(self.engine.metrics_registry)
        return Response(body, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def root(self) -> Response:
        if "text/html" in request.headers.get("Accept", ""):
            return Response("", status=303, headers={"Location": "/ui/"})
        return _problem_response(404, "404 page not found")

    async def index(self) -> Response:
        members = self.engine.members()
        me = next((m for m in members if m.name == self.engine.node_name), None)
        tags = dict(me.tags) if me is not None else self.engine.config.node_tags
        count = {s: sum(1 for m in members if m.status == s) for s in ("failed", "left")}
        gossip = self.engine.gossip
        stats = gossip.statistics().membership if gossip is not None else None
        serf = {
            "encrypted": "true" if gossip is not None and gossip.keyring.enabled else "false",
            "event_queue": "0",
            "event_time": str(stats.event_ltime if stats is not None else 1),
            "failed": str(count["failed"]),
            "health_score": str(stats.health_score if stats is not None else 0),
            "intent_queue": "0",
            "left": str(count["left"]),
            "member_time": "1",
            "members": str(len(members)),
            "query_queue": "0",
            "query_time": "1",
        }
        return _json(
            {
                "agent": {"name": self.engine.node_name, "version": __version__},
                "serf": serf,
                "tags": tags,
            }
        )

    async def members(self) -> Response:
        members = self.engine.members()
        return _json(
            [schemas.member_to_json(m) for m in members],
            headers={"X-Total-Count": str(len(members))},
        )

    async def leader(self) -> Response:
        leader = self.engine.leader()
        if leader is None:
            return _json(None, 500)
        return _json(schemas.member_to_json(leader))

    async def is_leader(self) -> Response:
        if self.engine.is_leader():
            return _json("I am a leader")
        return _json("I am a follower", 404)

    async def openapi(self) -> Response:
        return _json(openapi_document())

    # -- cluster ------------------------------------------------------------------------

    async def leave(self) -> Response:
        """Answer the members as this node sees them (itself "leaving"), then leave the
        cluster and stop through the stop callback, started once in the background: the
        answer does not wait for the leave, which the node's stop makes."""
        if not self.engine.running:
            raise EngineClosed()
        me = self.engine.node_name
        members = [
            attrs.evolve(m, status="leaving") if m.name == me else m for m in self.engine.members()
        ]
        if not self.leaving:
            self.leaving = True
            logger.info("asked to leave the cluster and stop (POST /v1/leave)")
            self.app.add_background_task(self._stop)
        return _json(
            [schemas.member_to_json(m) for m in members],
            headers={"X-Total-Count": str(len(members))},
        )

    async def _stop(self) -> None:
        try:
            await self.stop()
        except Exception:  # the answer is gone: the log is the only place left to tell
            logger.exception("POST /v1/leave: the stop failed")

    async def raft_peers(self) -> Response:
        peers = self.engine.raft_peers()
        return _json(
            [schemas.raft_peer_to_json(p) for p in peers],
            headers={"X-Total-Count": str(len(peers))},
        )

    async def remove_raft_peer(self, name: str) -> Response:
        """Remove server ``name`` from the Raft configuration; answer the servers left."""
        await self.engine.remove_raft_peer(name)
        logger.info("removed %s from the Raft configuration (DELETE /v1/raft/peers)", name)
        return await self.raft_peers()

    # -- jobs ---------------------------------------------------------------------------

    async def list_jobs(self) -> Response:
        args = request.args
        metadata: dict[str, str] = {}
        for key, value in args.items(multi=True):
            m = _METADATA_PARAM.fullmatch(key)
            if m:
                metadata[m.group(1)] = value
        status = args.get("status", "")
        if status and status not in JOB_STATUS_FILTERS:
            raise ApiProblem(
                400,
                f"status: expected one of {', '.join(JOB_STATUS_FILTERS)}, got {status!r}",
                field="status",
            )
        disabled_raw = args.get("disabled", "")
        disabled: bool | None = None
        if disabled_raw:
            if disabled_raw.lower() not in ("true", "false"):
                raise ApiProblem(
                    400,
                    f"disabled: expected true or false, got {disabled_raw!r}",
                    field="disabled",
                )
            disabled = disabled_raw.lower() == "true"
        query = JobQuery(
            q=args.get("q") or None,
            status=status or None,
            disabled=disabled,
            metadata=metadata or None,
            sort=_sort(JOB_SORTS, "name"),
            order=_order("asc"),
            start=_non_negative_int("_start", 0) or 0,
            end=_non_negative_int("_end", None),
        )
        jobs, total = await self.engine.list_jobs(query)
        return _json([schemas.job_to_json(j) for j in jobs], headers={"X-Total-Count": str(total)})

    async def put_job(self, job: str | None = None) -> Response:
        """POST/PATCH /v1/jobs and PUT /v1/jobs/<job>: create or fully replace (201)."""
        if self.engine.paused:
            raise SubmissionsPaused()
        payload = _parse_json(await _read_body())
        if job and isinstance(payload, dict) and not payload.get("name"):
            payload = {**payload, "name": job}  # PUT with the name only in the path
        try:
            parsed = schemas.job_from_json(payload)
        except ValidationError as exc:
            raise ApiProblem(
                400, _sentence(f"Unable to parse payload: {exc.message}"), field=exc.field
            ) from None
        try:
            stored, created = await self.engine.put_job(parsed)
        except ValidationError as exc:
            raise _job_problem(exc) from None
        if "runoncreate" in request.args:
            self.app.add_background_task(self._run_after_put, stored.name)
        return _json(
            schemas.job_to_json(stored),
            201,
            headers={
                "Location": f"/v1/jobs/{quote(stored.name, safe='')}",
                CREATED_HEADER: "true" if created else "false",
            },
        )

    async def _run_after_put(self, name: str) -> None:
        try:
            await self.engine.run_job(name)
        except TrickleError as exc:
            logger.warning("runoncreate: job %s did not run: %s", name, exc.message)

    async def get_job(self, job: str) -> Response:
        return _json(schemas.job_to_json(await self.engine.get_job(job)))

    async def delete_job(self, job: str) -> Response:
        return _json(schemas.job_to_json(await self.engine.delete_job(job)))

    async def run_job(self, job: str) -> Response:
        ran = await self.engine.run_job(job)
        return _json(schemas.job_to_json(ran), headers={"Location": request.path})

    async def toggle_job(self, job: str) -> Response:
        return _json(schemas.job_to_json(await self.engine.toggle_job(job)))

    # -- executions ---------------------------------------------------------------------

    async def list_executions(self, job: str) -> Response:
        timezone = (await self.engine.get_job(job)).timezone
        sort = _sort(EXECUTION_SORTS, "started_at")
        order = _order("desc")
        start = _non_negative_int("_start", 0) or 0
        end = _non_negative_int("_end", None)
        limit = _non_negative_int("output_size_limit", None)
        executions, total = await self.engine.list_executions(
            job, sort=sort, order=order, start=start, end=end
        )
        return _json(
            [
                schemas.execution_to_json(
                    e, timezone=timezone, output_size_limit=limit, listing=True
                )
                for e in executions
            ],
            headers={"X-Total-Count": str(total)},
        )

    async def delete_executions(self, job: str) -> Response:
        return _json(schemas.job_to_json(await self.engine.delete_executions(job)))

    async def get_execution(self, job: str, execution: str) -> Response:
        timezone = (await self.engine.get_job(job)).timezone
        found = await self.engine.get_execution(job, execution)
        return _json(schemas.execution_to_json(found, timezone=timezone))

    async def busy(self) -> Response:
        items = self.engine.busy(cluster=True)  # oldest first
        zones: dict[str, str] = {}
        out = []
        for item in items:
            name = item.execution.job_name
            if name not in zones:
                try:
                    zones[name] = (await self.engine.get_job(name)).timezone
                except JobNotFound:
                    zones[name] = ""
            out.append(schemas.busy_to_json(item, timezone=zones[name]))
        return _json(out, headers={"X-Total-Count": str(len(out))})

    # -- control ------------------------------------------------------------------------

    async def pause_status(self) -> Response:
        return _json({"paused": self.engine.paused})

    async def pause(self) -> Response:
        self.engine.pause()
        return _json({"paused": self.engine.paused})

    async def unpause(self) -> Response:
        self.engine.unpause()
        return _json({"paused": self.engine.paused})

    async def stats(self) -> Response:
        raw = request.args.get("days", "")
        try:
            days = int(raw.strip(), 10)
        except ValueError:
            days = DEFAULT_STATS_DAYS
        if days <= 0:
            days = DEFAULT_STATS_DAYS
        days = min(days, MAX_STATS_DAYS)
        return _json(schemas.stats_to_json(await self.engine.stats(days)))

    async def restore(self) -> Response:
        """A multipart upload (field ``file``) or a raw JSON body: the array
        ``GET /v1/jobs`` returns. Answers a JSON string encoding the messages (Dkron)."""
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            length = request.content_length
            limit = request.max_content_length
            if length is not None and limit is not None and length > limit:
                raise _too_large(limit)
            files = await request.files
            upload = files.get("file")
            if upload is None:
                raise ApiProblem(
                    400,
                    'restore: missing the multipart field "file" (a JSON array of jobs, '
                    "as GET /v1/jobs returns it)",
                    field="file",
                )
            raw = upload.read()
        else:
            raw = await _read_body()
        payload = _parse_json(raw)
        try:
            jobs = schemas.jobs_from_json_array(payload)
        except ValidationError as exc:
            raise ApiProblem(
                400, _sentence(f"Unable to parse payload: {exc.message}"), field=exc.field
            ) from None
        try:
            messages = await self.engine.restore(jobs)
        except ValidationError as exc:
            raise _job_problem(exc) from None
        return _json(json.dumps(messages))

    async def schedule_next(self) -> Response:
        args = request.args
        spec = args.get("schedule", "")
        if not spec.strip():
            raise ApiProblem(400, "schedule: a schedule is required", field="schedule")
        timezone = args.get("timezone", "")
        count = _non_negative_int("count", DEFAULT_PREVIEW_COUNT)
        if not count or count > MAX_PREVIEW_COUNT:
            raise ApiProblem(
                400,
                f"count: expected 1 to {MAX_PREVIEW_COUNT}, got {args.get('count')!r}",
                field="count",
            )
        fires = self.engine.next_fires(
            spec, timezone=timezone, job_name=args.get("job", ""), count=count
        )
        return _json(
            {
                "schedule": spec,
                "timezone": timezone,
                "next": [schemas.format_time(t, timezone=timezone) for t in fires],
            }
        )


# (path, methods, handler name). The OpenAPI document describes exactly these.
ROUTES: list[tuple[str, tuple[str, ...], str]] = [
    ("/health", ("GET",), "health"),
    ("/metrics", ("GET",), "metrics"),
    ("/", ("GET",), "root"),
    ("/v1", ("GET",), "index"),
    ("/v1/openapi.json", ("GET",), "openapi"),
    ("/v1/members", ("GET",), "members"),
    ("/v1/leader", ("GET",), "leader"),
    ("/v1/isleader", ("GET",), "is_leader"),
    ("/v1/leave", ("POST",), "leave"),
    ("/v1/raft/peers", ("GET",), "raft_peers"),
    ("/v1/raft/peers/<name>", ("DELETE",), "remove_raft_peer"),
    ("/v1/jobs", ("GET",), "list_jobs"),
    ("/v1/jobs", ("POST", "PATCH"), "put_job"),
    ("/v1/jobs/<job>", ("PUT",), "put_job"),
    ("/v1/jobs/<job>", ("GET",), "get_job"),
    ("/v1/jobs/<job>", ("DELETE",), "delete_job"),
    ("/v1/jobs/<job>", ("POST",), "run_job"),
    ("/v1/jobs/<job>/run", ("POST",), "run_job"),
    ("/v1/jobs/<job>/toggle", ("POST",), "toggle_job"),
    ("/v1/jobs/<job>/executions", ("GET",), "list_executions"),
    ("/v1/jobs/<job>/executions", ("DELETE",), "delete_executions"),
    ("/v1/jobs/<job>/executions/<execution>", ("GET",), "get_execution"),
    ("/v1/busy", ("GET",), "busy"),
    ("/v1/pause", ("GET",), "pause_status"),
    ("/v1/pause", ("POST",), "pause"),
    ("/v1/unpause", ("POST",), "unpause"),
    ("/v1/stats", ("GET",), "stats"),
    ("/v1/restore", ("POST",), "restore"),
    ("/v1/schedule/next", ("GET",), "schedule_next"),
]


# An agent's routes: it keeps no jobs and takes part in no Raft, so it serves what liveness
# probes and monitoring need, nothing else.
AGENT_ROUTES: list[tuple[str, tuple[str, ...], str]] = [
    ("/health", ("GET",), "health"),
    ("/metrics", ("GET",), "metrics"),
]


async def _leave_only(engine: Engine) -> None:
    """The default action of ``POST /v1/leave`` for an embedding program: leave the gossip
    cluster; the engine keeps running (stopping it is the embedding program's call)."""
    if not engine.running:
        return
    if await engine.leave(LEAVE_TIMEOUT):
        logger.info("left the cluster")
    else:
        logger.warning("the leave was not spread within %.0fs", LEAVE_TIMEOUT)


def create_app(engine: Engine, *, stop: StopCallback | None = None) -> QuartTrio:
    """The API app of a server ``engine``. Serve it with ``serve_http`` (or any ASGI server
    running on Trio); test it in-process with ``app.test_app()``.

    ``stop`` is what ``POST /v1/leave`` does after its answer: an async callable, called
    once (a second request answers without calling it again), in a background task of the
    app, which is cancelled when the app shuts down; so a callback that stops the server
    serving the app should hand the stop to a task of its own and return (``trickle
    serve`` starts its graceful stop, which leaves the cluster first). Default: leave the
    gossip cluster and keep running.
    """
    app = _base_app(engine)
    app.config["MAX_CONTENT_LENGTH"] = MAX_RESTORE_BODY
    app.request_class = _Request
    api = _Api(app, engine, stop)
    _add_routes(app, api, ROUTES)
    register_feed(app, engine)  # GET /v1/events, the live feed (WebSocket)
    register_ui(app)  # the web UI at /ui/ (not in ROUTES: no API route)

    @app.before_request
    async def _preflight() -> Response | None:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = Response("", status=204)
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = (
                request.headers.get("Access-Control-Request-Headers", "*") or "*"
            )
            response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE)
            return response
        return None

    return app


def create_agent_app(engine: Engine) -> QuartTrio:
    """The HTTP app of an agent ``engine``: ``GET /health`` and ``GET /metrics`` only, for
    liveness probes and monitoring. Any other path answers 404 saying that this node is an
    agent and the API is on the servers."""
    app = _base_app(engine)
    app.config["MAX_CONTENT_LENGTH"] = MAX_JOB_BODY
    _add_routes(app, _Api(app, engine), AGENT_ROUTES)
    app.extensions["trickle.not_found"] = (
        f"404 page not found: {engine.node_name} is an agent, which serves only /health and "
        "/metrics; the REST API is on the servers"
    )
    return app


def _add_routes(app: QuartTrio, api: _Api, routes: list[tuple[str, tuple[str, ...], str]]) -> None:
    for path, methods, handler in routes:
        view = getattr(api, handler)
        app.add_url_rule(
            path, endpoint=f"{handler}:{'/'.join(methods)}", view_func=view, methods=methods
        )


def _base_app(engine: Engine) -> QuartTrio:
    """A Quart-Trio app with the common headers and the error handlers; no routes."""
    app = QuartTrio(__name__, static_folder=None)
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = GRACEFUL_TIMEOUT
    app.url_map.strict_slashes = False  # /v1/ and /v1/jobs/ answer like /v1 and /v1/jobs
    app.extensions["trickle.engine"] = engine

    @app.after_request
    async def _common_headers(response: Response) -> Response:
        response.headers["X-Whom"] = engine.node_name
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    @app.errorhandler(ApiProblem)
    async def _problem(exc: ApiProblem) -> Response:
        return _problem_response(exc.status, exc.text, exc.field)

    @app.errorhandler(TrickleError)
    async def _trickle_error(exc: TrickleError) -> Response:
        field = exc.field if isinstance(exc, ValidationError) else ""
        return _problem_response(exc.http_status, exc.message, field)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            text = app.extensions.get("trickle.not_found", "404 page not found")
        elif status == 413:
            text = _too_large(request.max_content_length).text
        else:
            text = f"{status} {exc.name}"
        response = _problem_response(status, text)
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        where = request if has_request_context() else websocket
        logger.error("%s %s failed", where.method, where.path, exc_info=exc)
        return _problem_response(500, f"internal error: {type(exc).__name__}")

    return app


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve_http(
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    stop: StopCallback | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``engine``'s HTTP app on ``host:port`` (port 0: any free port): the REST API
    (``create_app``, with ``stop`` as ``POST /v1/leave``'s action) for a server, ``/health``
    and ``/metrics`` only (``create_agent_app``) for an agent (``config.server`` False).

    ``task_status.started(urls)`` once listening, with the bound URLs
    (``["http://127.0.0.1:8080"]``). Runs until cancelled (connections are closed at once)
    or until ``shutdown_trigger`` returns (requests in flight get ``GRACEFUL_TIMEOUT``).
    """
    config = HypercornConfig()
    config.bind = [_bind(host, port)]
    config.accesslog = None
    config.errorlog = logging.getLogger("trickle.http.server")
    config.graceful_timeout = GRACEFUL_TIMEOUT
    if getattr(engine.config, "server", True):
        app = create_app(engine, stop=stop)
        what = "HTTP API"
    else:
        app = create_agent_app(engine)
        what = "agent's /health and /metrics"
    trigger = shutdown_trigger or trio.sleep_forever

    async def stopping() -> None:
        await trigger()
        close_feeds(app)  # WebSockets close now, not after the graceful timeout

    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(_serve, app, config, stopping)
        logger.info("%s listening on %s", what, ", ".join(urls))
        task_status.started(urls)


async def _serve(
    app: QuartTrio,
    config: HypercornConfig,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
