"""Binary encoding of commands, jobs and executions (msgpack), versioned and strict.

Used by the command log and the store. Every encoded value is a map with a type tag ``t``
and a format version ``v``; decoding rejects unknown tags and versions with ``WireError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import attrs
import cattrs
import msgpack

from trickle.engine.commands import COMMAND_TYPES, Command, RunFinished, RunStarted
from trickle.engine.model import Execution, ExecutionId, ExecutionStatus, Job, Trigger

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


def encode_job(job: Job) -> bytes:
    return _pack(job)


def decode_job(data: bytes) -> Job:
    obj = _unpack(data)
    if not isinstance(obj, Job):
        raise WireError(f"not a job: {type(obj).__name__}")
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
