"""Binary encoding of commands, jobs and executions (msgpack), versioned and strict.

Used by the command log and the store. Every encoded value is a map with a type tag ``t``
and a format version ``v``; decoding rejects unknown tags and versions with ``WireError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter, is_
from typing import Any, TypeVar, cast

import attrs
import cattrs
import msgpack

from trickle.engine._replace import setter
from trickle.engine.commands import COMMAND_TYPES, Command, RunFinished, RunStarted
from trickle.engine.model import (
    Execution,
    ExecutionId,
    ExecutionStatus,
    Job,
    JobStatus,
    Trigger,
)

WIRE_VERSION = 1
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # a command larger than this is refused

T = TypeVar("T")


class WireError(ValueError):
    """A payload that cannot be decoded: malformed, unknown type or version."""


_converter = cattrs.Converter(forbid_extra_keys=True)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# datetimes travel as integer microseconds since the epoch: exact, unlike a float
_converter.register_unstructure_hook(datetime, lambda d: (d - _EPOCH) // _MICRO)
_converter.register_structure_hook(datetime, lambda v, _: _EPOCH + v * _MICRO)

_BY_NAME: dict[str, type] = {cls.__name__: cls for cls in (*COMMAND_TYPES, Job, Execution)}


def _pack(obj: Any) -> bytes:
    tag = type(obj).__name__
    if tag not in _BY_NAME:
        raise TypeError(f"cannot encode {type(obj)!r}")
    return msgpack.packb(
        {"t": tag, "v": WIRE_VERSION, "d": _converter.unstructure(obj)}, use_bin_type=True
    )


def _unpack(data: bytes) -> Any:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(data)} bytes is over the {MAX_PAYLOAD_BYTES} limit")
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise WireError(f"malformed payload: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("v") != WIRE_VERSION:
        raise WireError(
            f"unsupported payload version: {raw.get('v') if isinstance(raw, dict) else None!r}"
        )
    tag = raw.get("t", "")
    fast = _FAST_DECODERS.get(tag)
    if fast is not None:
        try:
            obj = fast(raw.get("d"))
        except (OverflowError, ValueError):  # a time out of range: cattrs says what is wrong
            obj = None
        if obj is not None:
            return obj
    cls = _BY_NAME.get(tag)
    if cls is None:
        raise WireError(f"unknown payload type: {raw.get('t')!r}")
    try:
        return _converter.structure(raw["d"], cls)
    except Exception as exc:
        raise WireError(f"invalid {cls.__name__}: {exc}") from exc


# -- the commands of every fire, decoded without cattrs ------------------------------------
# Every server decodes each run's RunStarted and RunFinished (the followers all of them):
# at 700 fires/s cattrs' structuring was a quarter of a follower's applying. These read
# exactly what _pack wrote (every field present, each of its exact type) and return None
# for anything else, which then goes through cattrs: its result or its error, as before.

_EXECUTION_FIELDS = frozenset(a.name for a in attrs.fields(Execution))
_RUN_STARTED_FIELDS = frozenset(a.name for a in attrs.fields(RunStarted))
_RUN_FINISHED_FIELDS = frozenset(a.name for a in attrs.fields(RunFinished))
_STATUSES = {s.value: s for s in ExecutionStatus}
_TRIGGERS = {t.value: t for t in Trigger}


def _opt_time(v: Any) -> tuple[bool, datetime | None]:
    if v is None:
        return True, None
    if type(v) is int:
        return True, _EPOCH + v * _MICRO
    return False, None


def _fast_execution(d: Any) -> Execution | None:
    if type(d) is not dict or d.keys() != _EXECUTION_FIELDS:
        return None
    ok_finished, finished_at = _opt_time(d["finished_at"])
    ok_scheduled, scheduled_at = _opt_time(d["scheduled_at"])
    exit_code = d["exit_code"]
    status = _STATUSES.get(d["status"]) if type(d["status"]) is str else None
    trigger = _TRIGGERS.get(d["trigger"]) if type(d["trigger"]) is str else None
    if not (
        type(d["id"]) is str
        and type(d["job_name"]) is str
        and type(d["node_name"]) is str
        and type(d["group"]) is int
        and type(d["started_at"]) is int
        and type(d["attempt"]) is int
        and type(d["success"]) is bool
        and type(d["output"]) is str
        and (exit_code is None or type(exit_code) is int)
        and ok_finished
        and ok_scheduled
        and status is not None
        and trigger is not None
    ):
        return None
    return Execution(
        id=ExecutionId(d["id"]),
        job_name=d["job_name"],
        node_name=d["node_name"],
        group=d["group"],
        started_at=_EPOCH + d["started_at"] * _MICRO,
        attempt=d["attempt"],
        finished_at=finished_at,
        success=d["success"],
        output=d["output"],
        exit_code=exit_code,
        status=status,
        trigger=trigger,
        scheduled_at=scheduled_at,
    )


def _fast_run_started(d: Any) -> RunStarted | None:
    if type(d) is not dict or d.keys() != _RUN_STARTED_FIELDS:
        return None
    execution = _fast_execution(d["execution"])
    ok_next, next_ = _opt_time(d["next"])
    if (
        execution is None
        or not ok_next
        or type(d["advance_next"]) is not bool
        or type(d["cap"]) is not int
    ):
        return None
    return RunStarted(execution=execution, next=next_, advance_next=d["advance_next"], cap=d["cap"])


def _fast_run_finished(d: Any) -> RunFinished | None:
    if type(d) is not dict or d.keys() != _RUN_FINISHED_FIELDS:
        return None
    exit_code = d["exit_code"]
    if not (
        type(d["job_name"]) is str
        and type(d["execution_id"]) is str
        and type(d["finished_at"]) is int
        and type(d["success"]) is bool
        and type(d["output"]) is str
        and (exit_code is None or type(exit_code) is int)
    ):
        return None
    return RunFinished(
        job_name=d["job_name"],
        execution_id=ExecutionId(d["execution_id"]),
        finished_at=_EPOCH + d["finished_at"] * _MICRO,
        success=d["success"],
        output=d["output"],
        exit_code=exit_code,
    )


def _check_fast_decoders_cover(cls: type, handled: Iterable[str]) -> None:
    """A field added to one of these classes must be handled by its fast decoder (else
    the decoder would drop it silently): until it is, trickle refuses to start."""
    mismatch = {a.name for a in attrs.fields(cls)} ^ set(handled)
    if mismatch:
        raise RuntimeError(f"wire: the fast decoder of {cls.__name__} misses {sorted(mismatch)}")


_check_fast_decoders_cover(
    Execution,
    (
        "id", "job_name", "node_name", "group", "started_at", "attempt", "finished_at",
        "success", "output", "exit_code", "status", "trigger", "scheduled_at",
    ),
)  # fmt: skip
_check_fast_decoders_cover(RunStarted, ("execution", "next", "advance_next", "cap"))
_check_fast_decoders_cover(
    RunFinished,
    ("job_name", "execution_id", "finished_at", "success", "output", "exit_code"),
)

_FAST_DECODERS: dict[str, Callable[[Any], Any]] = {
    "Execution": _fast_execution,  # a dispatch carries one
    "RunStarted": _fast_run_started,
    "RunFinished": _fast_run_finished,
}


def encode_command(command: Command) -> bytes:
    return _pack(command)


def decode_command(data: bytes) -> Command:
    obj = _unpack(data)
    if not isinstance(obj, COMMAND_TYPES):
        raise WireError(f"not a command: {type(obj).__name__}")
    return cast(Command, obj)


def is_canonical(command: Command) -> bool:
    """True when ``decode_command(encode_command(command)) == command`` holds exactly, down
    to the types (every ``str`` a ``str``, every time a UTC ``datetime``), so that the
    server that encoded the command may apply the object it holds in place of decoding
    its own bytes: every server then applies equal values.

    Checked for the commands of every fire (``RunStarted``, ``RunFinished``); False for
    the others, which are simply decoded."""
    if type(command) is RunStarted:
        return (
            _is_execution(command.execution)
            and _is_time(command.next)
            and type(command.advance_next) is bool
            and type(command.cap) is int
        )
    if type(command) is RunFinished:
        return (
            type(command.job_name) is str
            and type(command.execution_id) is str
            and _is_time(command.finished_at)
            and type(command.success) is bool
            and type(command.output) is str
            and (command.exit_code is None or type(command.exit_code) is int)
        )
    return False


def _is_time(value: datetime | None) -> bool:
    """None, or a datetime as decoding makes it (UTC, fold 0)."""
    return value is None or (type(value) is datetime and value.tzinfo is UTC and not value.fold)


def _is_execution(e: Execution) -> bool:
    return (
        type(e) is Execution
        and type(e.id) is str
        and type(e.job_name) is str
        and type(e.node_name) is str
        and type(e.group) is int
        and type(e.attempt) is int
        and type(e.success) is bool
        and type(e.output) is str
        and (e.exit_code is None or type(e.exit_code) is int)
        and type(e.status) is ExecutionStatus
        and type(e.trigger) is Trigger
        and e.started_at is not None
        and _is_time(e.started_at)
        and _is_time(e.finished_at)
        and _is_time(e.scheduled_at)
    )


# -- jobs: the definition packed once, the run-time fields every time ----------------------
# Every fire changes a job's counters, status and next fire, and nothing else: the store
# writes the job (twice a run) and the leader sends it with each dispatch, which the runner
# decodes. A job's definition fields are packed once (the fields come first in the map:
# their bytes are a cached prefix) and only the run-time ones each time; the runner reuses
# the Job it decoded last for the same definition bytes. The bytes decode, through cattrs
# or not, to what _pack's did.

_JOB_FIELDS = tuple(a.name for a in attrs.fields(Job))
_JOB_RUNTIME = (
    "success_count", "error_count", "last_success", "last_error", "status", "next",
    "missed_count", "skipped_count", "last_skipped", "last_skip_reason",
)  # fmt: skip
_JOB_DEFINITION = tuple(n for n in _JOB_FIELDS if n not in _JOB_RUNTIME)
if _JOB_DEFINITION[0] != "name":  # _fast_job finds the name first in the bytes
    raise RuntimeError(f"wire: a Job's first field must be its name, not {_JOB_DEFINITION[0]}")
_job_definition = attrgetter(*_JOB_DEFINITION)
_job_runtime = attrgetter(*_JOB_RUNTIME)
_JOB_STATUSES = {s.value: s for s in JobStatus}
_set_job_runtime = setter(Job, _JOB_RUNTIME)  # the values exact: checked by _fast_job
JOB_CACHE_SIZE = 65_536  # definitions kept per cache (jobs); the oldest goes first


def _map_header(n: int) -> bytes:
    header: bytes = msgpack.packb({i: None for i in range(n)})[: 1 if n < 16 else 3]
    return header


# {"t": "Job", "v": WIRE_VERSION, "d": <a map of every field>}, as _pack writes it
_JOB_HEAD = (
    _map_header(3)
    + b"".join(msgpack.packb(x) for x in ("t", "Job", "v", WIRE_VERSION, "d"))
    + _map_header(len(_JOB_FIELDS))
)
_DEFINITION_HEADER = len(_map_header(len(_JOB_DEFINITION)))
_RUNTIME_MAP = _map_header(len(_JOB_RUNTIME))  # the header of a map of the rest
# name -> (the definition's values, their packed bytes): hit when every value is the same
# object (the state machine's run-time updates share the definition's values)
_packed_definitions: dict[str, tuple[tuple[Any, ...], bytes]] = {}
# name (UTF-8) -> (packed definition bytes, the Job decoded from them)
_decoded_definitions: dict[bytes, tuple[bytes, Job]] = {}
_NAME_KEY = msgpack.packb("name")  # the definition's first key
_JOB_HEAD_NAME = _JOB_HEAD + _NAME_KEY
_JOB_RUNTIME_SET = frozenset(_JOB_RUNTIME)


def _remember(cache: dict[Any, Any], name: str | bytes, entry: Any) -> None:
    while len(cache) >= JOB_CACHE_SIZE and name not in cache:
        try:
            del cache[next(iter(cache))]
        except (StopIteration, KeyError, RuntimeError):  # another thread got there first
            break
    cache[name] = entry


def _time_us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICRO


def _packed_definition(job: Job) -> bytes:
    values = _job_definition(job)
    cached = _packed_definitions.get(job.name)
    if cached is not None and all(map(is_, cached[0], values)):
        return cached[1]
    plain = _converter.unstructure(job)
    body: bytes = msgpack.packb({n: plain[n] for n in _JOB_DEFINITION}, use_bin_type=True)
    body = body[_DEFINITION_HEADER:]
    _remember(_packed_definitions, job.name, (values, body))
    return body


def encode_job(job: Job) -> bytes:
    if type(job) is not Job:
        return _pack(job)
    definition = _packed_definition(job)
    (
        success,
        error,
        last_success,
        last_error,
        status,
        next_,
        missed,
        skipped,
        last_skipped,
        reason,
    ) = _job_runtime(job)
    runtime: bytes = msgpack.packb(
        {
            "success_count": success,
            "error_count": error,
            "last_success": _time_us(last_success),
            "last_error": _time_us(last_error),
            "status": status.value,
            "next": _time_us(next_),
            "missed_count": missed,
            "skipped_count": skipped,
            "last_skipped": _time_us(last_skipped),
            "last_skip_reason": reason,
        },
        use_bin_type=True,
    )
    return _JOB_HEAD + definition + runtime[len(_RUNTIME_MAP) :]


def _name_at(data: bytes, pos: int) -> bytes | None:
    """The UTF-8 bytes of the msgpack string at ``pos`` (a job name: fixstr, str8 or
    str16), or None."""
    if pos >= len(data):
        return None
    kind = data[pos]
    if 0xA0 <= kind <= 0xBF:
        size, pos = kind & 0x1F, pos + 1
    elif kind == 0xD9 and pos + 1 < len(data):
        size, pos = data[pos + 1], pos + 2
    elif kind == 0xDA and pos + 2 < len(data):
        size, pos = int.from_bytes(data[pos + 1 : pos + 3]), pos + 3
    else:
        return None
    return data[pos : pos + size]


def _fast_job(data: bytes) -> Job | None:
    """The Job of ``data`` from the one last decoded with the same definition bytes, its
    run-time fields read here (only they are unpacked); None when there is none or
    anything is unusual. What it returns, cattrs would: the map's 35 keys are the 25
    definition keys of the cached bytes and the 10 run-time keys of the rest, no more."""
    start = len(_JOB_HEAD)
    if len(data) > MAX_PAYLOAD_BYTES or not data.startswith(_JOB_HEAD_NAME):
        return None
    name = _name_at(data, start + len(_NAME_KEY))
    cached = None if name is None else _decoded_definitions.get(name)
    if cached is None:
        return None
    body, template = cached
    end = start + len(body)
    if data[start:end] != body:
        return None
    try:
        d = msgpack.unpackb(_RUNTIME_MAP + data[end:], raw=False)
    except Exception:  # malformed, or more than the run-time fields (ExtraData)
        return None
    if type(d) is not dict or d.keys() != _JOB_RUNTIME_SET:
        return None
    ok_success, last_success = _opt_time(d["last_success"])
    ok_error, last_error = _opt_time(d["last_error"])
    ok_next, next_ = _opt_time(d["next"])
    ok_skipped, last_skipped = _opt_time(d["last_skipped"])
    status = _JOB_STATUSES.get(d["status"]) if type(d["status"]) is str else None
    if not (
        ok_success
        and ok_error
        and ok_next
        and ok_skipped
        and status is not None
        and type(d["success_count"]) is int
        and type(d["error_count"]) is int
        and type(d["missed_count"]) is int
        and type(d["skipped_count"]) is int
        and type(d["last_skip_reason"]) is str
    ):
        return None
    return _set_job_runtime(  # type: ignore[no-any-return]
        template,
        d["success_count"],
        d["error_count"],
        last_success,
        last_error,
        status,
        next_,
        d["missed_count"],
        d["skipped_count"],
        last_skipped,
        d["last_skip_reason"],
    )


def decode_job(data: bytes) -> Job:
    try:
        fast = _fast_job(data)
    except (OverflowError, ValueError):  # a time out of range: cattrs says what is wrong
        fast = None
    if fast is not None:
        return fast
    obj = _unpack(data)
    if not isinstance(obj, Job):
        raise WireError(f"not a job: {type(obj).__name__}")
    if data.startswith(_JOB_HEAD):  # written by encode_job: remember its definition
        body = _packed_definition(obj)
        start = len(_JOB_HEAD)
        if data[start : start + len(body)] == body:
            _remember(_decoded_definitions, obj.name.encode(), (body, obj))
    return obj


def encode_execution(execution: Execution) -> bytes:
    return _pack(execution)


def decode_execution(data: bytes) -> Execution:
    obj = _unpack(data)
    if not isinstance(obj, Execution):
        raise WireError(f"not an execution: {type(obj).__name__}")
    return obj


def to_plain(obj: Any) -> Any:
    """attrs value -> plain dicts/lists (for snapshots of state machine metadata)."""
    return _converter.unstructure(obj)


def from_plain(data: Any, cls: type[T]) -> T:
    return _converter.structure(data, cls)
