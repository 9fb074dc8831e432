"""The hand-written decoders of RunStarted and RunFinished give exactly what cattrs gives:
the same object for what ``encode_command`` writes, and for any other payload (a field
missing or extra, a value of another type, a time out of range) the same object or the
same error, since they hand anything unusual to cattrs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.engine import commands as c
from trickle.engine import wire
from trickle.engine.model import Execution, ExecutionId, ExecutionStatus, Trigger

times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
texts = st.text(max_size=12)
exit_codes = st.none() | st.integers(-(2**31), 2**31)

executions = st.builds(
    Execution,
    id=texts.map(ExecutionId),
    job_name=texts,
    node_name=texts,
    group=st.integers(0, 2**63 - 1),
    started_at=times,
    attempt=st.integers(0, 100),
    finished_at=st.none() | times,
    success=st.booleans(),
    output=texts,
    exit_code=exit_codes,
    status=st.sampled_from(ExecutionStatus),
    trigger=st.sampled_from(Trigger),
    scheduled_at=st.none() | times,
)
run_started = st.builds(
    c.RunStarted,
    execution=executions,
    next=st.none() | times,
    advance_next=st.booleans(),
    cap=st.integers(0, 1000),
)
run_finished = st.builds(
    c.RunFinished,
    job_name=texts,
    execution_id=texts.map(ExecutionId),
    finished_at=times,
    success=st.booleans(),
    output=texts,
    exit_code=exit_codes,
)
commands = run_started | run_finished


def decode_with_cattrs(data: bytes, decode: Any = wire.decode_command) -> Any:
    saved = dict(wire._FAST_DECODERS)
    wire._FAST_DECODERS.clear()
    try:
        return decode(data)
    finally:
        wire._FAST_DECODERS.update(saved)


def outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", repr(decode(data))  # repr: True and 1 are equal, but not alike
    except wire.WireError as exc:
        return "error", type(exc)


@settings(max_examples=300)
@given(command=commands)
def test_what_encode_writes_decodes_by_the_fast_path_to_the_same_command(
    command: c.Command,
) -> None:
    data = wire.encode_command(command)
    raw = msgpack.unpackb(data, raw=False)
    assert wire._FAST_DECODERS[raw["t"]](raw["d"]) is not None  # not handed to cattrs
    decoded = wire.decode_command(data)
    assert decoded == command == decode_with_cattrs(data)
    if isinstance(decoded, c.RunStarted):
        assert type(decoded.execution.status) is ExecutionStatus
        assert decoded.execution.started_at.tzinfo is UTC


ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63,
    2**64 - 1,
    1.5,
    "",
    "x",
    "running",
    "manual",
    [1],
    {"a": 1},
]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASE_EXECUTION = Execution(
    id=ExecutionId("1-a"),
    job_name="j",
    node_name="a",
    group=7,
    started_at=NOW,
    scheduled_at=NOW,
    finished_at=NOW,
    exit_code=0,
)
BASES: list[c.Command] = [
    c.RunStarted(execution=BASE_EXECUTION, next=NOW, advance_next=True, cap=2),
    c.RunFinished(
        job_name="j",
        execution_id=ExecutionId("1-a"),
        finished_at=NOW,
        success=True,
        output="o",
        exit_code=0,
    ),
]


def mutations() -> list[tuple[str, tuple[str, ...], str, Any]]:
    """(command, path to the map mutated, what, value) for every field of both
    commands (and of RunStarted's execution): dropped, each odd value, and a key added."""
    out: list[tuple[str, tuple[str, ...], str, Any]] = []
    for base in BASES:
        raw = msgpack.unpackb(wire.encode_command(base), raw=False)
        name = type(base).__name__
        maps = [((), raw["d"])]
        if "execution" in raw["d"]:
            maps.append((("execution",), raw["d"]["execution"]))
        for path, target in maps:
            out.append((name, path, "add", "extra"))
            for key in target:
                if path == () and key == "execution":
                    continue
                out.append((name, path, "drop", key))
                out.extend((name, path, f"set {key}", value) for value in ODD_VALUES)
    return out


@pytest.mark.parametrize(("name", "path", "how", "value"), mutations())
def test_any_other_payload_decodes_or_fails_as_with_cattrs(
    name: str, path: tuple[str, ...], how: str, value: Any
) -> None:
    base = next(b for b in BASES if type(b).__name__ == name)
    raw = msgpack.unpackb(wire.encode_command(base), raw=False)
    target = raw["d"]
    for key in path:
        target = target[key]
    if how == "add":
        target[value] = 1
    elif how == "drop":
        del target[value]
    else:
        target[how.removeprefix("set ")] = value
    payload = msgpack.packb(raw, use_bin_type=True)
    assert outcome(wire.decode_command, payload) == outcome(decode_with_cattrs, payload)
    if path == ("execution",):  # the execution alone, as a dispatch carries it
        alone = msgpack.packb({"t": "Execution", "v": raw["v"], "d": target})
        assert outcome(wire.decode_execution, alone) == outcome(
            lambda data: decode_with_cattrs(data, wire.decode_execution), alone
        )


def test_a_time_out_of_range_is_a_wire_error_naming_the_command() -> None:
    finished = c.RunFinished(
        job_name="j",
        execution_id=ExecutionId("1-a"),
        finished_at=datetime(2026, 1, 1, tzinfo=UTC),
        success=True,
        output="",
    )
    raw = msgpack.unpackb(wire.encode_command(finished), raw=False)
    raw["d"]["finished_at"] = 2**62
    with pytest.raises(wire.WireError, match="RunFinished"):
        wire.decode_command(msgpack.packb(raw))


def test_a_field_the_fast_decoder_does_not_handle_stops_trickle_at_import() -> None:
    # wire.py checks its three fast decoders against attrs.fields when it is imported:
    # a field added to Execution (say) and not to _fast_execution is refused loudly
    fields = [a.name for a in attrs.fields(Execution)]
    wire._check_fast_decoders_cover(Execution, fields)
    with pytest.raises(RuntimeError, match=r"Execution misses \['trigger'\]"):
        wire._check_fast_decoders_cover(Execution, [f for f in fields if f != "trigger"])
