"""Dispatch messages: every kind round-trips; garbage only ever raises DispatchWireError."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle.engine.commands import RunFinished, ToggleJob
from trickle.engine.dispatch import (
    MAX_CHUNKS_PER_BATCH,
    MAX_MESSAGE_BYTES,
    WIRE_VERSION,
    Ack,
    Dispatch,
    DispatchAnswer,
    DispatchWireError,
    Kind,
    OutputBatch,
    OutputChunk,
    Query,
    Report,
    ReportAnswer,
    RunnerState,
    RunRef,
    decode,
    encode,
)
from trickle.engine.model import Execution, ExecutionId, Job, Trigger
from trickle.engine.wire import WireError, encode_command, encode_execution, encode_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=16
)  # surrogates cannot be UTF-8
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
terms = st.integers(min_value=0, max_value=2**63 - 1)
instants = st.integers(min_value=0, max_value=10**12).map(
    lambda us: T0 + timedelta(microseconds=us)
)
ids = names.map(ExecutionId)


@st.composite
def jobs_and_executions(draw: st.DrawFn) -> tuple[Job, Execution]:
    job = Job(
        name=draw(names),
        schedule=draw(st.sampled_from(["@every 1s", "*/5 * * * * *", ""])),
        tags=draw(st.dictionaries(names, texts, max_size=3)),
        executor=draw(st.sampled_from(["shell", "http", "python"])),
        executor_config=draw(st.dictionaries(names, texts, max_size=3)),
        retries=draw(st.integers(min_value=0, max_value=5)),
        next=draw(st.none() | instants),
    )
    execution = Execution(
        id=draw(ids),
        job_name=job.name,
        node_name=draw(names),
        group=draw(st.integers(min_value=0, max_value=2**62)),
        started_at=draw(instants),
        attempt=draw(st.integers(min_value=1, max_value=6)),
        trigger=draw(st.sampled_from(Trigger)),
        scheduled_at=draw(st.none() | instants),
    )
    return job, execution


results = st.builds(
    RunFinished,
    job_name=names,
    execution_id=ids,
    finished_at=instants,
    success=st.booleans(),
    output=texts,
    exit_code=st.none() | st.integers(min_value=-255, max_value=255),
)
refs = st.builds(RunRef, job_name=names, execution_id=ids)

messages = st.one_of(
    st.builds(
        lambda je, term, leader, expires: Dispatch(
            job=je[0], execution=je[1], term=term, leader=leader, expires_at=expires
        ),
        jobs_and_executions(),
        terms,
        names,
        st.none() | instants,
    ),
    st.builds(
        DispatchAnswer, accepted=st.booleans(), duplicate=st.booleans(), reason=texts, term=terms
    ),
    st.builds(
        OutputBatch,
        chunks=st.lists(
            st.builds(OutputChunk, execution_id=ids, job_name=names, seq=terms, chunk=texts),
            max_size=5,
        ).map(tuple),
    ),
    st.builds(Ack, ok=st.booleans(), error=texts),
    st.builds(Report, results=st.lists(results, max_size=4).map(tuple)),
    st.builds(
        ReportAnswer,
        committed=st.lists(ids, max_size=4).map(tuple),
        rejected=st.lists(st.tuples(ids, texts.filter(bool)), max_size=3).map(tuple),
        leader=st.none() | names,
        error=texts,
    ),
    st.builds(
        Query, term=terms, leader=st.just("") | names, ids=st.lists(ids, max_size=4).map(tuple)
    ),
    st.builds(
        RunnerState,
        node=names,
        term=terms,
        leader=st.just("") | names,
        active=st.lists(refs, max_size=4).map(tuple),
        pending=st.lists(refs, max_size=4).map(tuple),
        since=st.none() | instants,
        known=st.lists(ids, max_size=4).map(tuple),
    ),
)


def _job_and_run() -> tuple[Job, Execution]:
    job = Job(name="backup", schedule="@every 1s", executor="shell")
    ex = Execution(
        id=ExecutionId("1-agent1"), job_name="backup", node_name="agent1", group=1, started_at=T0
    )
    return job, ex


KINDS = {
    Dispatch: Kind.DISPATCH,
    DispatchAnswer: Kind.DISPATCH_ANSWER,
    OutputBatch: Kind.OUTPUT,
    Ack: Kind.ACK,
    Report: Kind.REPORT,
    ReportAnswer: Kind.REPORT_ANSWER,
    Query: Kind.QUERY,
    RunnerState: Kind.RUNNER_STATE,
}


@given(messages)
def test_every_message_round_trips_tagged_with_version_and_kind(message):
    data = encode(message)
    assert decode(data) == message
    version, kind, *_ = msgpack.unpackb(data)
    assert (version, kind) == (WIRE_VERSION, KINDS[type(message)])


def test_decode_error_is_a_wire_error():
    assert issubclass(DispatchWireError, WireError)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"", "malformed payload"),
        (b"\xc1", "malformed payload"),
        (msgpack.packb({"t": "Dispatch"}), "not a [version, kind"),
        (msgpack.packb([2, 1]), "unsupported dispatch protocol version 2"),
        (msgpack.packb([True, 7, 0, ""]), "unsupported dispatch protocol version"),
        (msgpack.packb([1, 99]), "unknown dispatch message kind 99"),
        (msgpack.packb([1, "7", 0, ""]), "unknown dispatch message kind"),
        (msgpack.packb([1, 7, -1, "a"]), "term must be a non-negative integer"),
        (msgpack.packb([1, 7, True, "a"]), "term must be a non-negative integer"),
        (msgpack.packb([1, 7, 0]), "a query must be a list of 2 or 3 fields"),
        (msgpack.packb([1, 7, 0, "a", [], "extra"]), "a query must be a list of 2 or 3 fields"),
        (msgpack.packb([1, 7, 0, "a", "x"]), "ids must be a list"),
        (
            msgpack.packb([1, 8, "n", 1, "", [], [], None]),
            "a runner state must be a list of 5 or 7",
        ),
        (msgpack.packb([1, 4, "yes", ""]), "ok must be a boolean"),
        (msgpack.packb([1, 4, True, "x" * 5000]), "error is longer than 4096 characters"),
        (msgpack.packb([1, 3, [["", "job", 0, "x"]]]), "execution id is empty"),
        (msgpack.packb([1, 3, [["id", "job", 0, b"bytes"]]]), "chunk must be a string"),
        (msgpack.packb([1, 3, {"a": 1}]), "chunks must be a list"),
        (msgpack.packb([1, 8, "n", 1, "", [["j"]], []]), "an entry of active must be a list"),
    ],
)
def test_malformed_payload_is_refused_with_the_reason(payload, says):
    with pytest.raises(DispatchWireError) as info:
        decode(payload)
    assert says in str(info.value)


def test_a_query_and_an_answer_from_a_node_before_ids_and_known_still_decode():
    # a node of the previous version asks without ids and answers without since/known:
    # it knows nothing it is asked about, and its start is unknown (no run is relaunched)
    assert decode(msgpack.packb([1, int(Kind.QUERY), 3, "s1"])) == Query(term=3, leader="s1")
    old = decode(msgpack.packb([1, int(Kind.RUNNER_STATE), "a1", 3, "s1", [], []]))
    assert old == RunnerState(node="a1", term=3, leader="s1")
    assert old.since is None and old.known == ()


def test_a_payload_over_the_limit_is_refused_before_parsing():
    with pytest.raises(DispatchWireError, match="over the"):
        decode(b"\x00" * (MAX_MESSAGE_BYTES + 1))


def test_a_message_over_the_limit_cannot_be_encoded():
    huge = RunFinished(
        job_name="j",
        execution_id=ExecutionId("1-a"),
        finished_at=T0,
        success=True,
        output="x" * MAX_MESSAGE_BYTES,
    )
    with pytest.raises(DispatchWireError, match="report message of .* bytes is over"):
        encode(Report(results=(huge,)))


def test_too_many_chunks_in_one_batch_are_refused():
    item = ["1-a", "job", 0, "x"]
    payload = msgpack.packb([1, 3, [item] * (MAX_CHUNKS_PER_BATCH + 1)])
    with pytest.raises(DispatchWireError, match="over the 4096 limit"):
        decode(payload)


def test_a_dispatch_whose_execution_belongs_to_another_job_is_refused():
    job, ex = _job_and_run()
    payload = msgpack.packb(
        [1, 1, encode_job(job), encode_execution(attrs.evolve(ex, job_name="x")), 3, "s1"]
    )
    with pytest.raises(DispatchWireError, match="is of job 'x', not 'backup'"):
        decode(payload)


def test_a_dispatch_of_a_finished_execution_is_refused():
    job, ex = _job_and_run()
    done = attrs.evolve(ex, finished_at=T0)
    payload = msgpack.packb([1, 1, encode_job(job), encode_execution(done), 3, "s1"])
    with pytest.raises(DispatchWireError, match="already finished"):
        decode(payload)


def test_a_dispatch_with_a_corrupt_job_is_refused_naming_it():
    _job, ex = _job_and_run()
    payload = msgpack.packb([1, 1, b"\x93junk", encode_execution(ex), 3, "s1"])
    with pytest.raises(DispatchWireError, match="^dispatch: "):
        decode(payload)
    payload = msgpack.packb([1, 1, encode_execution(ex), encode_execution(ex), 3, "s1"])
    with pytest.raises(DispatchWireError, match="not a job"):
        decode(payload)


def test_a_report_carrying_another_command_is_refused():
    other = encode_command(ToggleJob(name="j", now=T0))
    with pytest.raises(DispatchWireError, match="not a RunFinished but a ToggleJob"):
        decode(msgpack.packb([1, 5, [other]]))


def test_encoding_something_else_is_a_type_error():
    with pytest.raises(TypeError, match="not a dispatch message"):
        encode(ToggleJob(name="j", now=T0))  # type: ignore[arg-type]


# fuzzing ----------------------------------------------------------------------------------
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_dispatch_wire_error(data):
    try:
        decode(data)
    except DispatchWireError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(Kind), st.lists(msgpack_values, max_size=6))
def test_structured_garbage_of_every_kind_raises_only_dispatch_wire_error(kind, fields):
    try:
        message = decode(msgpack.packb([WIRE_VERSION, int(kind), *fields]))
    except DispatchWireError:
        return
    assert decode(encode(message)) == message  # whatever decodes is a valid message


@given(messages, st.data())
def test_a_mutated_message_decodes_or_raises_dispatch_wire_error(message, data):
    encoded = bytearray(encode(message))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        pos = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decode(bytes(encoded))
    except DispatchWireError:
        pass


@given(messages, st.data())
def test_a_truncated_message_raises_dispatch_wire_error(message, data):
    encoded = encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(DispatchWireError):
        decode(encoded[:cut])


def test_a_dispatch_from_a_node_that_sets_no_expiry_is_read_as_never_expiring():
    job, ex = _job_and_run()
    old = msgpack.packb(
        [WIRE_VERSION, int(Kind.DISPATCH), encode_job(job), encode_execution(ex), 3, "s1"],
        use_bin_type=True,
    )
    dispatch = decode(old)
    assert isinstance(dispatch, Dispatch)
    assert (dispatch.term, dispatch.leader, dispatch.expires_at) == (3, "s1", None)
