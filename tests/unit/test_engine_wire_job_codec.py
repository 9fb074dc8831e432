"""``encode_job`` packs a job's definition once and its run-time fields each time, and
``decode_job`` reuses the Job it last decoded for the same definition bytes: what they give
is exactly what the plain cattrs codec gives, for what ``encode_job`` writes and for any
other payload (the same job, or the same error)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trickle.engine import wire
from trickle.engine.model import Concurrency, Job, JobStatus

times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
texts = st.text(max_size=8)
maps = st.dictionaries(texts, texts, max_size=3)
opt_times = st.none() | times
counts = st.integers(0, 2**40)

jobs = st.builds(
    Job,
    name=st.sampled_from(["a", "b", "c"]),  # few names: definitions replace each other
    displayname=texts,
    schedule=st.sampled_from(["@every 1s", "0 * * * * *", ""]),
    timezone=st.sampled_from(["", "Europe/Paris"]),
    owner=texts,
    disabled=st.booleans(),
    tags=maps,
    metadata=maps,
    concurrency=st.sampled_from(Concurrency),
    executor=st.sampled_from(["shell", "noop"]),
    executor_config=maps,
    processors=st.dictionaries(texts, maps, max_size=2),
    retries=st.integers(0, 5),
    parent_job=texts,
    dependent_jobs=st.lists(texts, max_size=3).map(tuple),
    ephemeral=st.booleans(),
    starts_at=opt_times,
    expires_at=opt_times,
    success_count=counts,
    error_count=counts,
    last_success=opt_times,
    last_error=opt_times,
    status=st.sampled_from(JobStatus),
    next=opt_times,
    retry_interval=st.floats(0, 1e6),
    catchup_window=st.floats(0, 1e6),
    concurrency_limit=st.integers(0, 10),
    schedule_anchor=opt_times,
    missed_count=counts,
    skipped_count=counts,
    last_skipped=opt_times,
    last_skip_reason=texts,
    created_at=opt_times,
    updated_at=opt_times,
)


def plain_decode(data: bytes) -> Job:
    """decode_job before the cached definitions: cattrs, through _unpack."""
    obj = wire._unpack(data)
    if not isinstance(obj, Job):
        raise wire.WireError(f"not a job: {type(obj).__name__}")
    return obj


def outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        job = decode(data)
    except wire.WireError as exc:
        return "error", type(exc)
    # repr: True and 1 are equal, but not alike; the types of the enums and times too
    return "ok", (repr(job), type(job.status), type(job.concurrency))


def runtime_of(job: Job) -> dict[str, Any]:
    return {name: getattr(job, name) for name in wire._JOB_RUNTIME}


@settings(max_examples=300)
@given(first=jobs, later=jobs)
def test_a_job_decodes_to_itself_whether_its_definition_was_cached_or_not(
    first: Job, later: Job
) -> None:
    # `later`'s run-time fields on `first`'s definition: a run of the same job
    runs = [first, attrs.evolve(first, **runtime_of(later)), later]
    for job in runs:
        data = wire.encode_job(job)
        assert wire.decode_job(data) == job == plain_decode(data)
        assert wire.decode_job(data) == job  # again: the definition now cached
        assert plain_decode(wire._pack(job)) == job  # the format before: the same map


def test_a_run_of_a_cached_definition_is_decoded_without_cattrs() -> None:
    job = Job(name="fast", schedule="@every 1s", executor="noop", tags={"k": "v"})
    wire.decode_job(wire.encode_job(job))  # caches the definition
    ran = attrs.evolve(job, success_count=3, status=JobStatus.SUCCESS, next=NOW)
    fast = wire._fast_job(wire.encode_job(ran))
    assert fast == ran
    assert fast is not None and fast.tags is wire._decoded_definitions[b"fast"][1].tags


def test_the_same_definition_is_packed_once() -> None:
    job = Job(name="packed", schedule="@every 1s", executor="noop")
    wire.encode_job(job)
    body = wire._packed_definitions["packed"][1]
    ran = attrs.evolve(job, success_count=1)  # attrs.evolve copies the dicts: a new pack
    from trickle.engine._replace import replace

    shared = replace(job, success_count=2)  # the state machine's way: values shared
    wire.encode_job(shared)
    assert wire._packed_definitions["packed"][1] is body
    assert wire.decode_job(wire.encode_job(ran)) == ran


def test_a_changed_definition_under_the_same_name_is_not_mistaken_for_the_cached_one() -> None:
    job = Job(name="same", schedule="@every 1s", executor="noop", tags={"a": "1"})
    wire.decode_job(wire.encode_job(job))
    for changed in (
        attrs.evolve(job, tags={"a": "2"}),
        attrs.evolve(job, retries=1),
        attrs.evolve(job, disabled=True),
        attrs.evolve(job, schedule_anchor=NOW),
        attrs.evolve(job, updated_at=NOW),
    ):
        assert wire.decode_job(wire.encode_job(changed)) == changed


def test_the_caches_stay_within_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "JOB_CACHE_SIZE", 4)
    for i in range(10):
        job = Job(name=f"bound-{i}", executor="noop")
        assert wire.decode_job(wire.encode_job(job)) == job
    assert len(wire._packed_definitions) <= 4 and len(wire._decoded_definitions) <= 4


ODD_VALUES = [None, True, False, 0, 1, -1, 2**63, 2**64 - 1, 1.5, "", "x", "success", [1], {}]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASE = Job(
    name="mutated",
    schedule="@every 1s",
    executor="noop",
    tags={"bench": "node:1"},
    success_count=2,
    last_success=NOW,
    status=JobStatus.SUCCESS,
    next=NOW + timedelta(seconds=1),
    schedule_anchor=NOW,
    last_skip_reason="r",
)


def mutations() -> list[tuple[str, Any]]:
    """Every field dropped, set to each odd value, and a key added."""
    out: list[tuple[str, Any]] = [("add", "extra")]
    for key in attrs.fields_dict(Job):
        out.append(("drop", key))
        out.extend((f"set {key}", value) for value in ODD_VALUES)
    out.append(("set next", 2**62))  # a time out of range
    return out


@pytest.mark.parametrize(("how", "value"), mutations())
def test_any_other_payload_decodes_or_fails_as_with_cattrs(how: str, value: Any) -> None:
    data = wire.encode_job(BASE)
    assert wire.decode_job(data) == BASE  # the definition cached: the fast path is live
    raw = msgpack.unpackb(data, raw=False)
    if how == "add":
        raw["d"][value] = 1
    elif how == "drop":
        del raw["d"][value]
    else:
        raw["d"][how.removeprefix("set ")] = value
    payload = msgpack.packb(raw, use_bin_type=True)  # keys in the same order
    assert outcome(wire.decode_job, payload) == outcome(plain_decode, payload)


def test_not_a_job_is_refused_by_both_paths() -> None:
    other = msgpack.packb({"t": "Job", "v": 2, "d": {}})
    assert (
        outcome(wire.decode_job, other) == outcome(plain_decode, other) == ("error", wire.WireError)
    )
    with pytest.raises(wire.WireError, match="not a job"):
        wire.decode_job(wire.encode_execution(wire.decode_execution(_an_execution())))


def _an_execution() -> bytes:
    from trickle.engine.model import Execution, ExecutionId

    return wire.encode_execution(
        Execution(id=ExecutionId("1-a"), job_name="j", node_name="a", group=1, started_at=NOW)
    )


def byte_mutations() -> list[tuple[str, bytes]]:
    data = wire.encode_job(BASE)
    head, body = len(wire._JOB_HEAD), wire._packed_definitions["mutated"][1]
    tail = data[head + len(body) :]
    status = msgpack.packb("status") + msgpack.packb("success")
    name = msgpack.packb("name") + msgpack.packb("other")
    return [
        ("trailing bytes", data + b"\xc0"),
        ("truncated", data[:-1]),
        ("tail cut at the first field", data[: head + len(body) + 3]),
        ("a run-time key twice", data.replace(b"\xa6status", b"\xa4next", 1)),
        ("a definition key in the tail", data[: head + len(body)] + tail.replace(status, name)),
        ("head only", wire._JOB_HEAD),
        ("the name's string cut", wire._JOB_HEAD + msgpack.packb("name") + b"\xd9"),
    ]


@pytest.mark.parametrize(("what", "payload"), byte_mutations())
def test_a_payload_cut_or_spliced_decodes_or_fails_as_with_cattrs(
    what: str, payload: bytes
) -> None:
    assert wire.decode_job(wire.encode_job(BASE)) == BASE  # the definition cached
    assert outcome(wire.decode_job, payload) == outcome(plain_decode, payload), what


@pytest.mark.parametrize("length", [1, 31, 32, 255, 256, 300])
def test_names_of_every_string_size_take_the_fast_path(length: int) -> None:
    job = Job(name="n" * length, executor="noop", tags={"a": "b"})
    assert wire.decode_job(wire.encode_job(job)) == job
    ran = attrs.evolve(job, success_count=1, last_success=NOW)
    assert wire._fast_job(wire.encode_job(ran)) == ran
