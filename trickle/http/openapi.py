"""The OpenAPI 3.1 description of trickle's REST API, as this server actually behaves.

``openapi_document()`` returns it as a dict (served at ``GET /v1/openapi.json``). A test
checks that every route of the app is described here and nothing else is.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from trickle._version import __version__

_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {
    "oneOf": [
        {"type": "string", "description": 'Go duration, e.g. "30s", "1h30m"'},
        {"type": "number", "minimum": 0, "description": "seconds"},
    ]
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(
    description: str, schema: dict[str, Any], *, total: bool = False, location: bool = False
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json_content(schema)}
    headers: dict[str, Any] = {}
    if total:
        headers["X-Total-Count"] = {"$ref": "#/components/headers/X-Total-Count"}
    if location:
        headers["Location"] = {"description": "URL of the job", "schema": {"type": "string"}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{description}"}


_JOB_PATH = {"$ref": "#/components/parameters/job"}
_PRETTY = {"$ref": "#/components/parameters/pretty"}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _op(
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    request_body: dict[str, Any] | None = None,
    operation_id: str,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": operation_id,
        "parameters": [*(parameters or []), _PRETTY],
        "responses": responses,
    }
    if request_body is not None:
        op["requestBody"] = request_body
    return op


_JOB_BODY = {
    "required": True,
    "description": "The whole job (a full replace: omitted fields return to their defaults; "
    "counters, status, dependent_jobs and next are kept by the server). Unknown fields are "
    "ignored.",
    "content": _json_content(_ref("job")),
}

_JOB_WRITE_RESPONSES = {
    "201": _ok("The job as stored (also for an update, as Dkron)", _ref("job"), location=True),
    "400": _error("BadRequest"),
    "404": _error("NotFound"),
    "409": _error("Conflict"),
    "413": _error("TooLarge"),
    "503": _error("Unavailable"),
}

_RUNONCREATE = {
    "name": "runoncreate",
    "in": "query",
    "required": False,
    "allowEmptyValue": True,
    "schema": {"type": "string"},
    "description": "Present (any value): run the job right after storing it, in the background.",
}

_JOB_LIST_PARAMS = [
    _query("q", {"type": "string"}, "Substring of name or displayname (case-sensitive)."),
    _query(
        "status",
        {"type": "string", "enum": ["success", "failed", "partially_failed", "untriggered"]},
        "Jobs whose latest execution group had this outcome.",
    ),
    _query("disabled", {"type": "string", "enum": ["true", "false"]}, "Disabled or not."),
    {
        "name": "metadata",
        "in": "query",
        "required": False,
        "style": "deepObject",
        "explode": True,
        "schema": _STRING_MAP,
        "description": "metadata[key]=value, repeatable; every pair must match.",
    },
    _query(
        "_sort",
        {
            "type": "string",
            "default": "id",
            "enum": [
                "id",
                "name",
                "displayname",
                "schedule",
                "success_count",
                "error_count",
                "last_success",
                "last_error",
                "next",
            ],
        },
        "Sort field ('id' is the name). Unknown: 400.",
    ),
    _query(
        "_order",
        {"type": "string", "enum": ["ASC", "DESC", "asc", "desc"], "default": "ASC"},
        "Sort order.",
    ),
    _query(
        "_start",
        {"type": "integer", "minimum": 0, "default": 0},
        "0-based index of the first job returned, after filtering.",
    ),
    _query(
        "_end",
        {"type": "integer", "minimum": 0},
        "0-based index after the last job returned (exclusive).",
    ),
]

_EXECUTION_LIST_PARAMS = [
    _JOB_PATH,
    _query(
        "_sort",
        {
            "type": "string",
            "default": "started_at",
            "enum": ["id", "started_at", "finished_at", "attempt"],
        },
        "Sort field ('id' is started_at). Unknown: 400.",
    ),
    _query(
        "_order",
        {"type": "string", "enum": ["ASC", "DESC", "asc", "desc"], "default": "DESC"},
        "Sort order; newest first by default.",
    ),
    _query(
        "_start",
        {"type": "integer", "minimum": 0, "default": 0},
        "0-based index of the first execution returned.",
    ),
    _query(
        "_end",
        {"type": "integer", "minimum": 0},
        "0-based index after the last execution returned (exclusive).",
    ),
    _query(
        "output_size_limit",
        {"type": "integer", "minimum": 0},
        "Keep only the last N bytes of each output; output_truncated says if cut.",
    ),
]


def _paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": _op(
                "Health of this node",
                "node",
                operation_id="health",
                responses={"200": _ok("Healthy", _ref("health"))},
            )
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this node",
                "tags": ["node"],
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "summary": "Redirect a browser to the web UI",
                "tags": ["node"],
                "operationId": "root",
                "responses": {
                    "303": {
                        "description": "Accept names text/html: see /ui/",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    "404": _error("NotFound"),
                },
            }
        },
        "/v1": {
            "get": _op(
                "This node: agent name and version, membership figures, tags",
                "node",
                operation_id="status",
                responses={"200": _ok("Node status", _ref("status"))},
            )
        },
        "/v1/openapi.json": {
            "get": _extension(
                _op(
                    "This document (trickle's own)",
                    "node",
                    operation_id="openapi",
                    responses={"200": _ok("OpenAPI 3.1 document", {"type": "object"})},
                )
            )
        },
        "/v1/members": {
            "get": _op(
                "Members of the cluster",
                "members",
                operation_id="getMembers",
                responses={
                    "200": _ok("Members", {"type": "array", "items": _ref("member")}, total=True)
                },
            )
        },
        "/v1/leader": {
            "get": _op(
                "The leader",
                "members",
                operation_id="getLeader",
                responses={
                    "200": _ok("The leader", _ref("member")),
                    "500": _ok("No leader: the body is null", {"type": "null"}),
                },
            )
        },
        "/v1/isleader": {
            "get": _op(
                "Is this node the leader?",
                "members",
                operation_id="getIsLeader",
                responses={
                    "200": _ok("Leader", {"type": "string", "const": "I am a leader"}),
                    "404": _ok("Follower", {"type": "string", "const": "I am a follower"}),
                },
            )
        },
        "/v1/leave": {
            "post": _op(
                "Leave the cluster and stop this node",
                "members",
                operation_id="leave",
                responses={
                    "200": _ok(
                        "The members as this node saw them, itself 'leaving'; the leave and "
                        "the stop follow the answer (Dkron answers its peers map)",
                        {"type": "array", "items": _ref("member")},
                        total=True,
                    ),
                    "503": _error("Unavailable"),
                },
            )
        },
        "/v1/raft/peers": {
            "get": _extension(
                _op(
                    "The servers of the Raft configuration (trickle's own; Dkron's is gRPC)",
                    "raft",
                    operation_id="listRaftPeers",
                    responses={
                        "200": _ok(
                            "Voters and learners, by name",
                            {"type": "array", "items": _ref("raft_peer")},
                            total=True,
                        ),
                        "503": _error("Unavailable"),
                    },
                )
            )
        },
        "/v1/raft/peers/{name}": {
            "delete": _extension(
                _op(
                    "Remove a server from the Raft configuration (trickle's own; any server "
                    "may be asked, the leader makes the change)",
                    "raft",
                    operation_id="removeRaftPeer",
                    parameters=[{"$ref": "#/components/parameters/peer"}],
                    responses={
                        "200": _ok(
                            "The servers left in the configuration",
                            {"type": "array", "items": _ref("raft_peer")},
                            total=True,
                        ),
                        "404": _error("NotFound"),
                        "409": _error("Conflict"),
                        "503": _error("Unavailable"),
                    },
                )
            )
        },
        "/v1/jobs": {
            "get": _op(
                "List jobs",
                "jobs",
                operation_id="getJobs",
                parameters=_JOB_LIST_PARAMS,
                responses={
                    "200": _ok(
                        "One page of jobs; X-Total-Count counts all that match",
                        {"type": "array", "items": _ref("job")},
                        total=True,
                    ),
                    "400": _error("BadRequest"),
                },
            ),
            "post": _op(
                "Create or replace a job",
                "jobs",
                operation_id="createOrUpdateJob",
                parameters=[_RUNONCREATE],
                request_body=_JOB_BODY,
                responses=_JOB_WRITE_RESPONSES,
            ),
            "patch": _op(
                "Create or replace a job (same as POST: a full replace, not a merge)",
                "jobs",
                operation_id="createOrUpdateJobPatch",
                parameters=[_RUNONCREATE],
                request_body=_JOB_BODY,
                responses=_JOB_WRITE_RESPONSES,
            ),
        },
        "/v1/jobs/{job}": {
            "get": _op(
                "Show a job",
                "jobs",
                operation_id="showJobByName",
                parameters=[_JOB_PATH],
                responses={"200": _ok("The job", _ref("job")), "404": _error("NotFound")},
            ),
            "put": _op(
                "Create or replace a job (the body's name wins; the path's name fills a "
                "missing one)",
                "jobs",
                operation_id="putJob",
                parameters=[_JOB_PATH, _RUNONCREATE],
                request_body=_JOB_BODY,
                responses=_JOB_WRITE_RESPONSES,
            ),
            "post": _op(
                "Run a job now",
                "jobs",
                operation_id="runJob",
                parameters=[_JOB_PATH],
                responses={
                    "200": _ok("The job; the run has been started", _ref("job"), location=True),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                },
            ),
            "delete": _op(
                "Delete a job and its executions",
                "jobs",
                operation_id="deleteJob",
                parameters=[_JOB_PATH],
                responses={
                    "200": _ok("The deleted job", _ref("job")),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                },
            ),
        },
        "/v1/jobs/{job}/run": {
            "post": _op(
                "Run a job now (same as POST /v1/jobs/{job})",
                "jobs",
                operation_id="runJobRun",
                parameters=[_JOB_PATH],
                responses={
                    "200": _ok("The job; the run has been started", _ref("job"), location=True),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                },
            )
        },
        "/v1/jobs/{job}/toggle": {
            "post": _op(
                "Enable or disable a job",
                "jobs",
                operation_id="toggleJob",
                parameters=[_JOB_PATH],
                responses={"200": _ok("The updated job", _ref("job")), "404": _error("NotFound")},
            )
        },
        "/v1/jobs/{job}/executions": {
            "get": _op(
                "List a job's executions",
                "executions",
                operation_id="listExecutionsByJob",
                parameters=_EXECUTION_LIST_PARAMS,
                responses={
                    "200": _ok(
                        "One page of executions; X-Total-Count counts all",
                        {"type": "array", "items": _ref("execution_list_item")},
                        total=True,
                    ),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                },
            ),
            "delete": _op(
                "Delete a job's executions and reset its counters",
                "executions",
                operation_id="deleteExecutionsByJob",
                parameters=[_JOB_PATH],
                responses={"200": _ok("The updated job", _ref("job")), "404": _error("NotFound")},
            ),
        },
        "/v1/jobs/{job}/executions/{execution}": {
            "get": _op(
                "Show one execution with its full output",
                "executions",
                operation_id="showExecutionByID",
                parameters=[_JOB_PATH, {"$ref": "#/components/parameters/execution"}],
                responses={
                    "200": _ok("The execution", _ref("execution")),
                    "404": _error("NotFound"),
                },
            )
        },
        "/v1/busy": {
            "get": _op(
                "Executions running or queued on this node, oldest first",
                "executions",
                operation_id="busy",
                responses={
                    "200": _ok(
                        "Busy executions",
                        {"type": "array", "items": _ref("busy_execution")},
                        total=True,
                    )
                },
            )
        },
        "/v1/pause": {
            "get": _op(
                "Are new job submissions paused?",
                "control",
                operation_id="pauseStatus",
                responses={"200": _ok("Pause state", _ref("pause"))},
            ),
            "post": _op(
                "Pause new job submissions (create and update answer 503)",
                "control",
                operation_id="pause",
                responses={"200": _ok("Pause state", _ref("pause"))},
            ),
        },
        "/v1/unpause": {
            "post": _op(
                "Accept job submissions again",
                "control",
                operation_id="unpause",
                responses={"200": _ok("Pause state", _ref("pause"))},
            )
        },
        "/v1/stats": {
            "get": _op(
                "Executions per UTC day",
                "executions",
                operation_id="getExecutionStats",
                parameters=[
                    _query(
                        "days",
                        {"type": "integer", "default": 30, "maximum": 365},
                        "Days to return (default 30; <= 0 or not an integer: 30; at most 365).",
                    )
                ],
                responses={"200": _ok("Daily counts, oldest first", _ref("execution_stats"))},
            )
        },
        "/v1/restore": {
            "post": _op(
                "Create or replace many jobs (parents first) from an export",
                "jobs",
                operation_id="restore",
                request_body={
                    "required": True,
                    "description": "The array GET /v1/jobs returns, as the multipart field "
                    "'file' or as a JSON body.",
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                    }
                                },
                            }
                        },
                        "application/json": {"schema": {"type": "array", "items": _ref("job")}},
                    },
                },
                responses={
                    "200": _ok(
                        "A JSON string that encodes an array of one message per job (as Dkron)",
                        {"type": "string"},
                    ),
                    "400": _error("BadRequest"),
                    "404": _error("NotFound"),
                    "409": _error("Conflict"),
                    "413": _error("TooLarge"),
                },
            )
        },
        "/v1/events": {"get": _feed_operation()},
        "/v1/schedule/next": {
            "get": _extension(
                _op(
                    "Preview the next fire times of a schedule (trickle's own)",
                    "jobs",
                    operation_id="scheduleNext",
                    parameters=[
                        {
                            **_query("schedule", {"type": "string"}, "The schedule expression."),
                            "required": True,
                        },
                        _query("timezone", {"type": "string"}, "IANA zone; '' = UTC."),
                        _query("job", {"type": "string"}, "Job name, for the '~' hash spread."),
                        _query(
                            "count",
                            {"type": "integer", "minimum": 1, "maximum": 100, "default": 5},
                            "How many fire times.",
                        ),
                    ],
                    responses={
                        "200": _ok("Next fire times", _ref("schedule_preview")),
                        "400": _error("BadRequest"),
                    },
                )
            )
        },
    }


_FEED_KINDS = [
    "job_created",
    "job_updated",
    "job_deleted",
    "job_toggled",
    "execution_started",
    "execution_output",
    "execution_finished",
    "fire_skipped",
    "fire_missed",
    "member_joined",
    "member_updated",
    "member_failed",
    "member_left",
    "member_reaped",
    "leader_changed",
    "paused",
    "unpaused",
]


def _feed_operation() -> dict[str, Any]:
    """``GET /v1/events``: the live feed, a WebSocket (docs/feed.md)."""
    names = {"type": "string", "description": "Comma-separated; absent or empty: all."}
    return _extension(
        {
            "summary": "The live feed: engine events as JSON frames over a WebSocket",
            "description": "Upgrade to a WebSocket (RFC 6455). The server sends one JSON "
            "text frame per event (schema feed_frame), the first being 'hello'. A client "
            'may send {"type": "subscribe", "jobs": [...] | null, "kinds": [...] | null} '
            "at any time to replace its filters (answered 'subscribed', or 'error' with "
            "the connection kept open). A client that reads too slowly gets a 'lagged' "
            "frame with the number of events it missed. The server closes every "
            "connection with 1001 (going away) when it stops. See docs/feed.md.",
            "tags": ["events"],
            "operationId": "events",
            "parameters": [
                _query("jobs", names, "Only events of these jobs (names)."),
                _query(
                    "kinds",
                    {**names, "items": {"enum": _FEED_KINDS}},
                    "Only these event kinds: " + ", ".join(_FEED_KINDS) + ".",
                ),
            ],
            "responses": {
                "101": {
                    "description": "Switching protocols: the feed's frames follow",
                    "content": {"application/json": {"schema": _ref("feed_frame")}},
                },
                "400": {
                    "description": "A malformed filter (unknown kind, repeated parameter)",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "503": {
                    "description": "The server is stopping or its engine is not running",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            },
        }
    )


def _feed_frame_schema() -> dict[str, Any]:
    frame_types = ["hello", "subscribed", "error", "lagged", *_FEED_KINDS]
    names = {"type": ["array", "null"], "items": {"type": "string"}}
    return {
        "type": "object",
        "description": "One server-to-client frame of GET /v1/events. Which fields are "
        "present depends on type (docs/feed.md); clients must ignore types they do not know.",
        "required": ["type", "seq"],
        "properties": {
            "type": {"type": "string", "enum": frame_types},
            "seq": {
                "type": "integer",
                "description": "The engine's event sequence number on this server (hello, "
                "subscribed, error: the last one so far). Gaps: filtered or dropped events.",
            },
            "at": {**_TIME, "description": "When the event happened (UTC)."},
            "node": {"type": "string", "description": "hello: this server's name."},
            "leader": {
                "type": ["string", "null"],
                "description": "hello, leader_changed: the leader's name.",
            },
            "version": {"type": "string", "description": "hello: trickle's version."},
            "job_name": {"type": "string"},
            "job": {**_ref("job"), "description": "job_*: the job as GET /v1/jobs/{job}."},
            "execution": {
                **_ref("execution_list_item"),
                "description": "execution_started, execution_finished, fire_missed.",
            },
            "execution_id": {"type": "string", "description": "execution_output."},
            "node_name": {"type": "string", "description": "execution_output."},
            "chunk": {
                "type": "string",
                "description": "execution_output: text as printed; the chunks of one "
                "execution concatenate to its output.",
            },
            "member": {**_ref("member"), "description": "member_*: as GET /v1/members."},
            "dropped": {"type": "integer", "description": "lagged: events missed."},
            "jobs": {**names, "description": "subscribed: the job filter (null: all)."},
            "kinds": {**names, "description": "subscribed: the kind filter (null: all)."},
            "message": {"type": "string", "description": "error: what is wrong."},
            "reason": {"type": "string"},
            "scheduled_at": {"type": "string"},
            "count": {"type": "integer"},
        },
    }


def _extension(op: dict[str, Any]) -> dict[str, Any]:
    """Mark an operation Dkron does not have (``x-trickle-extension: true``)."""
    return {**op, "x-trickle-extension": True}


def _job_schema() -> dict[str, Any]:
    ro = {"readOnly": True}
    return {
        "type": "object",
        "description": "A job, in Dkron's JSON plus trickle's own fields.",
        "required": ["name"],
        "properties": {
            "id": {"type": "string", "readOnly": True, "description": "Always the name."},
            "name": {
                "type": "string",
                "description": "Lower-case letters (any script), digits, '_' and '-'.",
            },
            "displayname": {"type": "string"},
            "schedule": {
                "type": "string",
                "description": "Cron (6 fields with seconds, or "
                "5), @descriptor, @every, @at, @after, @manually; '' for a child.",
            },
            "timezone": {"type": "string", "description": "IANA zone; '' = UTC."},
            "owner": {"type": "string"},
            "owner_email": {"type": "string"},
            "disabled": {"type": "boolean", "default": False},
            "tags": {**_STRING_MAP, "description": "Target node selector: value[:count]."},
            "metadata": _STRING_MAP,
            "concurrency": {"type": "string", "enum": ["allow", "forbid", ""], "default": "allow"},
            "executor": {
                "type": "string",
                "description": "shell, http, or a registered Python executor.",
            },
            "executor_config": {**_STRING_MAP, "description": "Values must be strings."},
            "processors": {"type": "object", "additionalProperties": _STRING_MAP},
            "retries": {"type": "integer", "minimum": 0, "default": 0},
            "parent_job": {"type": "string"},
            "dependent_jobs": {"type": "array", "items": {"type": "string"}, **ro},
            "ephemeral": {"type": "boolean", "default": False},
            "starts_at": {
                **_NULLABLE_TIME,
                "description": "RFC3339, or 2006-01-02T15:04 read as UTC.",
            },
            "expires_at": _NULLABLE_TIME,
            "success_count": {"type": "integer", **ro},
            "error_count": {"type": "integer", **ro},
            "last_success": {**_NULLABLE_TIME, **ro},
            "last_error": {**_NULLABLE_TIME, **ro},
            "status": {
                "type": "string",
                "enum": ["", "success", "failed", "partially_failed"],
                **ro,
            },
            "next": {**_TIME, **ro, "description": "0001-01-01T00:00:00Z when none."},
            "retry_interval": {
                **_DURATION,
                "description": "Wait between a failed attempt "
                "and its retry (rendered as a Go duration).",
            },
            "concurrency_limit": {
                "type": "integer",
                "minimum": 0,
                "description": "Runs of this job at once across the cluster; 0: no limit. "
                "A fire beyond it is recorded skipped with the reason.",
            },
            "catchup_window": {
                **_DURATION,
                "description": "How late a missed fire may "
                "still run (rendered as a Go duration); 0 disables.",
            },
            "missed_count": {"type": "integer", **ro},
            "skipped_count": {"type": "integer", **ro},
            "last_skipped": {**_NULLABLE_TIME, **ro},
            "last_skip_reason": {"type": "string", **ro},
            "created_at": {**_NULLABLE_TIME, **ro},
            "updated_at": {**_NULLABLE_TIME, **ro},
        },
    }


def _execution_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One attempt of a job on one node. Times are in the job's timezone.",
        "properties": {
            "id": {"type": "string", "description": "<started_at Unix nanos>-<node>"},
            "job_name": {"type": "string"},
            "started_at": _TIME,
            "finished_at": {**_TIME, "description": "0001-01-01T00:00:00Z while running."},
            "success": {"type": "boolean"},
            "output": {"type": "string", "description": "Absent when empty."},
            "node_name": {"type": "string"},
            "group": {
                "type": "integer",
                "description": "Dispatch time in Unix nanos; "
                "shared by the nodes and retries of one run.",
            },
            "attempt": {"type": "integer", "minimum": 1},
            "exit_code": {"type": ["integer", "null"]},
            "status": {"type": "string", "enum": ["running", "success", "failed", "missed"]},
            "trigger": {
                "type": "string",
                "enum": ["schedule", "catchup", "manual", "retry", "dependent"],
            },
            "scheduled_at": _NULLABLE_TIME,
        },
    }


def _components() -> dict[str, Any]:
    execution = _execution_schema()
    listed = copy.deepcopy(execution)
    listed["properties"]["output_truncated"] = {"type": "boolean"}
    busy = copy.deepcopy(execution)
    busy["properties"]["queued"] = {
        "type": "boolean",
        "description": "Waiting for a free executor slot.",
    }
    text_error = {
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": _ref("error")},
    }
    field_header = {
        "X-Trickle-Error-Field": {
            "description": "The field or parameter at fault, when there is one.",
            "schema": {"type": "string"},
        }
    }
    return {
        "schemas": {
            "job": _job_schema(),
            "execution": execution,
            "execution_list_item": listed,
            "busy_execution": busy,
            "member": {
                "type": "object",
                "properties": {
                    "Name": {"type": "string"},
                    "Addr": {"type": "string"},
                    "Port": {"type": "integer"},
                    "Tags": _STRING_MAP,
                    "Status": {
                        "type": "integer",
                        "description": "0 none, 1 alive, 2 leaving, 3 left, 4 failed",
                    },
                    "statusText": {"type": "string"},
                    "ProtocolMin": {"type": "integer"},
                    "ProtocolMax": {"type": "integer"},
                    "ProtocolCur": {"type": "integer"},
                    "DelegateMin": {"type": "integer"},
                    "DelegateMax": {"type": "integer"},
                    "DelegateCur": {"type": "integer"},
                    "id": {"type": "string", "description": "The member name."},
                },
            },
            "raft_peer": {
                "type": "object",
                "description": "A server of the Raft configuration (Dkron's RaftServer).",
                "properties": {
                    "id": {"type": "string", "description": "The node name."},
                    "node": {"type": "string", "description": "The node name."},
                    "address": {
                        "type": "string",
                        "description": "Its Raft/RPC listener, host:port; '' if not known "
                        "to the server answering.",
                    },
                    "leader": {"type": "boolean"},
                    "voter": {"type": "boolean", "description": "false: a learner catching up."},
                    "match_index": {
                        "type": ["integer", "null"],
                        "description": "The last log index known replicated on it (the "
                        "leader's view; null when a follower answers).",
                    },
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "agent": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                    },
                    "serf": _STRING_MAP,
                    "tags": _STRING_MAP,
                },
            },
            "health": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "const": "healthy"},
                    "leader": {"type": "boolean"},
                },
            },
            "pause": {"type": "object", "properties": {"paused": {"type": "boolean"}}},
            "execution_stats": {
                "type": "object",
                "properties": {
                    "stats": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "date": _TIME,
                                "success_count": {"type": "integer"},
                                "failed_count": {"type": "integer"},
                            },
                        },
                    }
                },
            },
            "feed_frame": _feed_frame_schema(),
            "schedule_preview": {
                "type": "object",
                "properties": {
                    "schedule": {"type": "string"},
                    "timezone": {"type": "string"},
                    "next": {"type": "array", "items": _TIME},
                },
            },
            "error": {
                "type": "object",
                "description": "Sent instead of plain text when Accept asks for JSON.",
                "properties": {
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                },
            },
        },
        "parameters": {
            "job": {
                "name": "job",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "Job name.",
            },
            "execution": {
                "name": "execution",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "Execution id.",
            },
            "peer": {
                "name": "name",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "The server's node name (Dkron's --peer-id).",
            },
            "pretty": {
                "name": "pretty",
                "in": "query",
                "required": False,
                "allowEmptyValue": True,
                "schema": {"type": "string"},
                "description": "Present: indent the JSON.",
            },
        },
        "headers": {
            "X-Total-Count": {
                "description": "Items matching, before _start/_end.",
                "schema": {"type": "integer"},
            },
        },
        "responses": {
            "BadRequest": {
                "description": "Bad input; the text names the field",
                "headers": field_header,
                "content": text_error,
            },
            "NotFound": {
                "description": "No such job, execution, Raft peer or route",
                "content": text_error,
            },
            "Conflict": {
                "description": "Refused by the job's state (dependents, disabled, "
                "concurrency forbid running), or a Raft membership change that cannot be "
                "made now",
                "content": text_error,
            },
            "TooLarge": {
                "description": "The request body exceeds the limit",
                "content": text_error,
            },
            "Unavailable": {
                "description": "Submissions paused, the engine is not running, or no "
                "leader could take the change (retry)",
                "content": text_error,
            },
        },
    }


@cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trickle REST API",
            "version": __version__,
            "description": "Dkron-compatible REST API of a trickle node. Every response "
            "carries X-Whom (the node name); CORS is open; ?pretty indents JSON. Errors are "
            "plain text, or JSON with Accept: application/json.",
        },
        "servers": [{"url": "/"}],
        "paths": _paths(),
        "components": _components(),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy the caller may change)."""
    return copy.deepcopy(_document())
