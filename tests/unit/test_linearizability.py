"""The linearizability checker: textbook histories, pending operations, keys, generated histories."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Hashable, Sequence

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trickle.testing.linearizability import (
    History,
    KvInput,
    KvModel,
    KvOp,
    Operation,
    Outcome,
    check,
)

INF = math.inf


def op(client: Hashable, inp: KvInput, out: str | None, call: float, ret: float = INF) -> Operation:
    return Operation(client_id=client, input=inp, output=out, call_time=call, return_time=ret)


def put(k: str, v: str, call: float, ret: float = INF, client: Hashable = "w") -> Operation:
    return op(client, KvInput.put(k, v), None, call, ret)


def append(k: str, v: str, call: float, ret: float = INF, client: Hashable = "w") -> Operation:
    return op(client, KvInput.append(k, v), None, call, ret)


def delete(k: str, call: float, ret: float = INF, client: Hashable = "w") -> Operation:
    return op(client, KvInput.delete(k), None, call, ret)


def get(k: str, out: str | None, call: float, ret: float, client: Hashable = "r") -> Operation:
    return op(client, KvInput.get(k), out, call, ret)


def verdict(*ops: Operation) -> Outcome:
    return check(KvModel(), ops).outcome


# --- textbook histories ----------------------------------------------------------------


def test_empty_history_is_linearizable():
    result = check(KvModel(), [])
    assert result.ok and result.linearizable is True
    assert result.partitions == ()


def test_sequential_history_that_follows_the_model_is_linearizable():
    assert (
        verdict(
            get("x", None, 0, 1),
            put("x", "1", 2, 3),
            get("x", "1", 4, 5),
            append("x", "2", 6, 7),
            get("x", "12", 8, 9),
            delete("x", 10, 11),
            get("x", None, 12, 13),
        )
        is Outcome.OK
    )


def test_stale_read_after_a_newer_write_returned_is_not_linearizable():
    result = check(
        KvModel(),
        [put("x", "1", 0, 1), put("x", "2", 2, 3), get("x", "1", 4, 5)],
    )
    assert result.outcome is Outcome.ILLEGAL
    assert result.linearizable is False
    (part,) = result.failures
    assert part.label == "x"
    assert [o.input.value for o in part.linearization] == ["1", "2"]
    assert part.blocking is not None and part.blocking.output == "1"


def test_read_of_a_value_never_written_is_not_linearizable():
    assert verdict(put("x", "1", 0, 1), get("x", "7", 0.5, 2)) is Outcome.ILLEGAL


def test_lost_write_is_not_linearizable():
    assert verdict(put("x", "1", 0, 1), get("x", None, 2, 3)) is Outcome.ILLEGAL
    assert (
        verdict(append("x", "a", 0, 1), append("x", "b", 2, 3), get("x", "a", 4, 5))
        is Outcome.ILLEGAL
    )


def test_write_visible_then_not_is_not_linearizable():
    # A read concurrent with a write may see either value, but once one reader saw the new
    # value a later reader must not see the old one.
    assert (
        verdict(put("x", "1", 0, 10), get("x", "1", 1, 2), get("x", None, 3, 4)) is Outcome.ILLEGAL
    )
    assert verdict(put("x", "1", 0, 10), get("x", None, 1, 2), get("x", "1", 3, 4)) is Outcome.OK


def test_reads_concurrent_with_a_write_may_see_either_value():
    assert verdict(put("x", "1", 0, 10), get("x", None, 1, 2)) is Outcome.OK
    assert verdict(put("x", "1", 0, 10), get("x", "1", 1, 2)) is Outcome.OK


def test_concurrent_writes_may_take_effect_in_either_order():
    writes = (put("x", "1", 0, 5, client="a"), put("x", "2", 1, 6, client="b"))
    assert verdict(*writes, get("x", "1", 7, 8)) is Outcome.OK
    assert verdict(*writes, get("x", "2", 7, 8)) is Outcome.OK
    # ... but every later reader agrees on the order.
    assert verdict(*writes, get("x", "1", 7, 8), get("x", "2", 9, 10)) is Outcome.ILLEGAL


def test_concurrent_appends_must_agree_with_one_order():
    appends = (append("x", "a", 0, 5, client="a"), append("x", "b", 1, 6, client="b"))
    assert verdict(*appends, get("x", "ba", 7, 8)) is Outcome.OK
    assert verdict(*appends, get("x", "ab", 7, 8)) is Outcome.OK
    assert verdict(*appends, get("x", "a", 2, 3), get("x", "ba", 7, 8)) is Outcome.ILLEGAL


def test_operations_that_touch_in_time_count_as_concurrent():
    # The write returned at 1.0 and the read was called at 1.0: neither precedes the other.
    assert verdict(put("x", "1", 0, 1), get("x", None, 1, 2)) is Outcome.OK
    assert verdict(put("x", "1", 0, 1), get("x", None, 1.001, 2)) is Outcome.ILLEGAL


def test_order_touching_makes_a_return_precede_a_call_at_the_same_instant():
    # A discrete-event simulation: the read was started at the instant the write returned.
    touching = [put("x", "1", 0, 1), get("x", None, 1, 2)]
    assert check(KvModel(), touching, order_touching=True).outcome is Outcome.ILLEGAL
    # A pending write called at that instant cannot explain a read that returned then.
    ops = [get("x", "2", 0, 1), put("x", "2", 1)]
    assert check(KvModel(), ops).outcome is Outcome.OK
    result = check(KvModel(), ops, order_touching=True)
    assert result.outcome is Outcome.ILLEGAL
    assert "must be placed next" in result.describe()
    assert "put('x', '2')" not in result.describe()  # not a candidate: called too late


def test_order_touching_rejects_operations_that_take_no_time():
    with pytest.raises(ValueError, match="takes no time"):
        check(KvModel(), [get("x", None, 1, 1)], order_touching=True)


def test_classic_two_register_example_needs_the_right_interleaving():
    # Herlihy & Wing's queue-like example on a register: three writers and readers overlapping.
    assert (
        verdict(
            put("x", "a", 0, 10, client=1),
            put("x", "b", 1, 3, client=2),
            get("x", "b", 4, 5, client=3),
            get("x", "a", 6, 7, client=3),
        )
        is Outcome.OK
    )
    assert (
        verdict(
            put("x", "a", 0, 3, client=1),
            put("x", "b", 1, 3, client=2),
            get("x", "b", 4, 5, client=3),
            get("x", "a", 6, 7, client=3),
        )
        is Outcome.ILLEGAL
    )


# --- pending operations ----------------------------------------------------------------


def test_pending_write_may_have_taken_effect():
    assert verdict(put("x", "1", 0), get("x", "1", 5, 6)) is Outcome.OK


def test_pending_write_may_never_take_effect():
    assert verdict(put("x", "1", 0), get("x", None, 5, 6)) is Outcome.OK


def test_pending_write_takes_effect_at_most_once_and_not_before_its_call():
    assert verdict(get("x", "1", 0, 1), put("x", "1", 2)) is Outcome.ILLEGAL
    assert verdict(put("x", "1", 0), get("x", "1", 5, 6), get("x", None, 7, 8)) is Outcome.ILLEGAL


def test_pending_write_may_take_effect_long_after_its_client_gave_up():
    assert (
        verdict(
            put("x", "1", 0),
            put("x", "2", 1, 2),
            get("x", "2", 3, 4),
            get("x", "1", 100, 101),
        )
        is Outcome.OK
    )


def test_pending_appends_may_or_may_not_take_effect():
    base = (append("x", "a", 0, 1), append("x", "b", 2), append("x", "c", 3))
    assert verdict(*base, get("x", "a", 10, 11)) is Outcome.OK
    assert verdict(*base, get("x", "acb", 10, 11)) is Outcome.OK
    assert verdict(*base, get("x", "ab", 10, 11)) is Outcome.OK
    assert verdict(*base, get("x", "abb", 10, 11)) is Outcome.ILLEGAL
    assert verdict(*base, get("x", "ab", 10, 11), get("x", "ac", 12, 13)) is Outcome.ILLEGAL


def test_pending_delete_may_or_may_not_take_effect():
    base = (put("x", "1", 0, 1), delete("x", 2))
    assert verdict(*base, get("x", "1", 3, 4), get("x", None, 5, 6)) is Outcome.OK
    assert verdict(*base, get("x", None, 3, 4), get("x", "1", 5, 6)) is Outcome.ILLEGAL


def test_pending_read_is_ignored():
    result = check(KvModel(), [put("x", "1", 0, 1), op("r", KvInput.get("x"), None, 2)])
    assert result.ok
    assert len(result.partitions[0].operations) == 1
    assert result.describe() == "linearizable: 2 operations in 1 part(s)"


# --- partitions and reports ------------------------------------------------------------


def test_keys_are_checked_independently_and_only_the_bad_key_is_reported():
    result = check(
        KvModel(),
        [
            put("x", "1", 0, 1),
            put("y", "1", 0, 1),
            get("x", "1", 2, 3),
            put("y", "2", 2, 3),
            get("y", "1", 4, 5),  # stale
            get("x", "1", 4, 5),
        ],
    )
    assert result.outcome is Outcome.ILLEGAL
    assert [p.label for p in result.partitions] == ["x", "y"]
    assert [p.outcome for p in result.partitions] == [Outcome.OK, Outcome.ILLEGAL]
    assert [p.label for p in result.failures] == ["y"]


def test_describe_shows_the_prefix_the_state_and_the_operation_that_cannot_be_placed():
    text = check(
        KvModel(),
        [
            put("x", "1", 0, 1, client="c1"),
            put("x", "2", 2, 3, client="c2"),
            get("x", "1", 4, 5, client="c3"),
            get("x", "2", 4.5, 6, client="c4"),
        ],
    ).describe()
    assert text.splitlines()[0] == "not linearizable: 4 operations in 1 part(s), 1 failing"
    assert "part 'x': 4 operations; longest linearizable prefix has 3" in text
    assert "[c2] put('x', '2')  @2..3  => '2'" in text
    assert "state after the prefix: '2'" in text
    assert "must be placed next (it returned at 5) but no order works:" in text
    assert "* [c3] get('x') -> '1'  @4..5: the model gives '2'" in text


def test_describe_of_a_linearizable_history_is_one_line():
    result = check(KvModel(), [put("x", "1", 0, 1), get("x", "1", 2, 3)])
    assert result.describe() == "linearizable: 2 operations in 1 part(s)"


def test_linearization_of_a_good_history_respects_real_time_and_the_model():
    ops = [put("x", "1", 0, 10), get("x", None, 1, 2), get("x", "1", 3, 4), put("x", "2", 5, 6)]
    (part,) = check(KvModel(), ops).partitions
    assert [o.input.op for o in part.linearization] == [KvOp.GET, KvOp.PUT, KvOp.GET, KvOp.PUT]
    assert part.states == (None, "1", "1", "2")


def test_timeout_gives_unknown_for_a_search_too_large_to_finish():
    # 12 overlapping appends and a read no order explains: the search must try them all.
    ops = [append("x", chr(ord("a") + i), i * 0.01, 100) for i in range(12)]
    ops.append(get("x", "impossible", 200, 201))
    result = check(KvModel(), ops, timeout=0.0)
    assert result.outcome is Outcome.UNKNOWN
    assert result.linearizable is None
    assert result.describe().startswith("unknown (timed out): 13 operations in 1 part(s)")


def test_parts_after_a_timeout_are_unknown():
    hard = [append("x", chr(ord("a") + i), i * 0.01, 100) for i in range(12)]
    hard.append(get("x", "impossible", 200, 201))
    result = check(KvModel(), [*hard, put("y", "1", 0, 1)], timeout=0.0)
    assert [p.outcome for p in result.partitions] == [Outcome.UNKNOWN, Outcome.UNKNOWN]


# --- a model where an input can be illegal ----------------------------------------------


class LockModel:
    """A mutex: acquire is legal only when free, release only by the holder."""

    def init(self) -> Hashable | None:
        return None

    def step(self, state: Hashable | None, input: tuple[str, Hashable]):
        kind, who = input
        if kind == "acquire":
            return state is None, who, "ok"
        return state == who, None, "ok"

    def partition(self, history: Sequence[Operation]):
        return [("lock", list(history))]

    def describe_op(self, op: Operation) -> str:
        return f"{op.input[0]}({op.input[1]})"

    def describe_state(self, state: Hashable | None) -> str:
        return f"held by {state}" if state is not None else "free"


def test_model_may_declare_an_input_illegal_in_a_state():
    def lock(kind: str, who: str, call: float, ret: float) -> Operation:
        return Operation(
            client_id=who, input=(kind, who), output="ok", call_time=call, return_time=ret
        )

    ok = [lock("acquire", "a", 0, 1), lock("release", "a", 2, 3), lock("acquire", "b", 4, 5)]
    assert check(LockModel(), ok).ok
    overlapping = [lock("acquire", "a", 0, 1), lock("acquire", "b", 2, 3)]
    result = check(LockModel(), overlapping)
    assert result.outcome is Outcome.ILLEGAL
    assert "* [b] acquire(b)  @2..3: not legal in this state" in result.describe()


# --- values and recorder ----------------------------------------------------------------


def test_operation_rejects_a_return_before_its_call():
    with pytest.raises(ValueError, match="returns at 1 before its call at 2"):
        put("x", "1", 2, 1)
    with pytest.raises(ValueError, match="call_time"):
        put("x", "1", INF)


def test_kv_input_names_a_missing_or_unexpected_value():
    with pytest.raises(ValueError, match="put of key 'x' needs a value"):
        KvInput(KvOp.PUT, "x")
    with pytest.raises(ValueError, match="get of key 'x' takes no value"):
        KvInput(KvOp.GET, "x", "1")


def test_kv_model_rejects_foreign_inputs_with_a_clear_error():
    with pytest.raises(TypeError, match="KvModel expects KvInput"):
        check(KvModel(), [Operation(client_id=1, input=("put", "x"), output=None, call_time=0)])


def test_history_records_answers_and_leaves_unanswered_operations_pending():
    history = History()
    a = history.invoke("c1", KvInput.put("x", "1"), now=0.0)
    b = history.invoke("c2", KvInput.get("x"), now=0.5)
    c = history.invoke("c3", KvInput.put("x", "2"), now=0.6)
    history.complete(b, "1", now=2.0)
    history.discard(c)
    ops = history.operations()
    assert len(history) == 2
    assert [(o.client_id, o.call_time, o.return_time, o.pending) for o in ops] == [
        ("c1", 0.0, INF, True),
        ("c2", 0.5, 2.0, False),
    ]
    assert ops[1].output == "1"
    assert check(KvModel(), ops).ok
    history.complete(a, None, now=3.0)
    assert not history.operations()[0].pending


# --- generated histories ----------------------------------------------------------------

KEYS = ("a", "b", "c")


@attrs.frozen
class Generated:
    ops: list[Operation]
    written: set[str]  # every value a put or append that took effect wrote


@attrs.frozen
class Step:
    """One operation of a planned execution: who, when (relative), what, and its fate."""

    client: int
    wait: float  # after the client's previous answer
    lead: float  # from the call to the point of effect
    lag: float  # from the point of effect to the answer
    kind: KvOp
    key: str
    pending: bool  # never answered
    effect: bool  # took effect (always, unless pending)


def execute(steps: Sequence[Step]) -> Generated:
    """Run the steps against the model in order of their points of effect: each operation's
    window is stretched around its point; a client's operations are sequential."""
    model = KvModel()
    free: dict[int, float] = {}
    planned = []
    for i, step in enumerate(steps):
        call = free.get(step.client, 0.0) + 0.1 + step.wait  # a client waits between operations
        point = call + step.lead
        ret = point + step.lag
        free[step.client] = ret
        value = f"<{i}>" if step.kind in (KvOp.PUT, KvOp.APPEND) else None
        planned.append((point, i, step, KvInput(step.kind, step.key, value), call, ret))
    planned.sort(key=lambda p: (p[0], p[1]))
    states: dict[str, str | None] = {}
    ops = []
    written = set()
    for _point, _i, step, inp, call, ret in planned:
        out = None
        if step.effect or not step.pending:
            _, states[inp.key], out = model.step(states.get(inp.key), inp)
            if inp.value is not None:
                written.add(inp.value)
        ops.append(op(step.client, inp, out, call, INF if step.pending else ret))
    return Generated(ops=ops, written=written)


KINDS = (KvOp.PUT, KvOp.PUT, KvOp.GET, KvOp.GET, KvOp.APPEND, KvOp.DELETE)


def generate(
    rng: random.Random, n: int, clients: int, pending_rate: float, keys: Sequence[str] = KEYS
) -> Generated:
    steps = [
        Step(
            client=rng.randrange(clients),
            wait=rng.random(),
            lead=rng.random(),
            lag=rng.random() * 2,
            kind=rng.choice(KINDS),
            key=rng.choice(keys),
            pending=rng.random() < pending_rate,
            effect=rng.random() < 0.5,
        )
        for _ in range(n)
    ]
    return execute(steps)


unit = st.floats(0.0, 1.0)
histories = st.lists(
    st.builds(
        Step,
        client=st.integers(0, 5),
        wait=unit,
        lead=unit,
        lag=st.floats(0.0, 2.0),
        kind=st.sampled_from(KINDS),
        key=st.sampled_from(KEYS),
        pending=st.integers(0, 9).map(lambda x: x == 0),
        effect=st.booleans(),
    ),
    max_size=60,
).map(execute)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories)
def test_generated_histories_of_a_sequential_execution_are_linearizable(gen: Generated):
    result = check(KvModel(), gen.ops)
    assert result.ok, result.describe()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.data())
def test_planted_read_of_a_value_never_written_is_always_found(gen: Generated, data: st.DataObject):
    reads = [i for i, o in enumerate(gen.ops) if o.input.op is KvOp.GET and not o.pending]
    if not reads:
        gen.ops.append(get("a", None, 0, 0))
        reads = [len(gen.ops) - 1]
    i = data.draw(st.sampled_from(reads))
    ops = list(gen.ops)
    ops[i] = attrs.evolve(ops[i], output="never-written")
    result = check(KvModel(), ops)
    assert result.outcome is Outcome.ILLEGAL
    assert [p.label for p in result.failures] == [ops[i].input.key]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, st.sampled_from(KEYS), st.data())
def test_planted_stale_read_after_a_write_returned_is_always_found(
    gen: Generated, key: str, data: st.DataObject
):
    # After everything that returned, a write returns and then a read sees an older value.
    end = max((o.return_time for o in gen.ops if not o.pending), default=0.0)
    if any(o.pending and o.input.key == key and o.input.op is not KvOp.GET for o in gen.ops):
        # a pending write may land at any time; write a fresh key instead
        key = "fresh"
    old = data.draw(st.sampled_from(sorted(gen.written) + [None]) if gen.written else st.none())
    ops = [*gen.ops, put(key, "latest", end + 1, end + 2), get(key, old, end + 3, end + 4)]
    result = check(KvModel(), ops)
    assert result.outcome is Outcome.ILLEGAL, result.describe()
    assert [p.label for p in result.failures] == [key]
    (part,) = result.failures
    assert part.blocking is ops[-1]


def test_a_partition_of_thousands_of_operations_is_checked():
    gen = generate(random.Random(7), 5000, 5, 0.01, keys=("a",))
    result = check(KvModel(), gen.ops)
    assert result.ok, result.describe()
    (part,) = result.partitions
    assert len(part.operations) > 4900
    # One read in the middle of such a history (no pending operations) corrupted.
    gen = generate(random.Random(8), 5000, 5, 0.0, keys=("a",))
    middle = next(i for i in range(2500, 5000) if gen.ops[i].input.op is KvOp.GET)
    bad = list(gen.ops)
    bad[middle] = attrs.evolve(bad[middle], output="never-written")
    result = check(KvModel(), bad)
    assert result.outcome is Outcome.ILLEGAL
    assert result.failures[0].blocking is bad[middle]


# --- agreement with brute force ----------------------------------------------------------


def brute_force(ops: Sequence[Operation], order_touching: bool) -> bool:
    """Try every subset of the pending operations and every order: the definition itself,
    with its own copy of the key-value semantics."""

    def precedes(a: Operation, b: Operation) -> bool:
        return a.return_time <= b.call_time if order_touching else a.return_time < b.call_time

    done = [o for o in ops if not o.pending]
    pending = [o for o in ops if o.pending]
    for mask in range(1 << len(pending)):
        chosen = done + [p for i, p in enumerate(pending) if mask >> i & 1]
        for order in itertools.permutations(chosen):
            if any(precedes(b, a) for i, a in enumerate(order) for b in order[i + 1 :]):
                continue
            data: dict[str, str] = {}
            for o in order:
                inp = o.input
                if inp.op is KvOp.GET:
                    if not o.pending and data.get(inp.key) != o.output:
                        break
                elif inp.op is KvOp.PUT:
                    data[inp.key] = inp.value
                elif inp.op is KvOp.APPEND:
                    data[inp.key] = data.get(inp.key, "") + inp.value
                else:
                    data.pop(inp.key, None)
            else:
                return True
    return False


small_ops = st.lists(
    st.builds(
        lambda kind, key, value, out, call, length, pending: op(
            "c",
            KvInput(kind, key, value if kind in (KvOp.PUT, KvOp.APPEND) else None),
            out if kind is KvOp.GET else None,
            call,
            INF if pending else call + length,
        ),
        kind=st.sampled_from(list(KvOp)),
        key=st.sampled_from(("x", "y")),
        value=st.sampled_from(("1", "2")),
        out=st.sampled_from((None, "1", "2", "12", "21", "11")),
        call=st.integers(0, 6),  # small integer times: many ties
        length=st.integers(1, 4),
        pending=st.integers(0, 3).map(lambda x: x == 0),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(small_ops, st.booleans())
def test_verdict_agrees_with_trying_every_order(ops: list[Operation], order_touching: bool):
    result = check(KvModel(), ops, order_touching=order_touching)
    assert result.ok == brute_force(ops, order_touching), result.describe()
