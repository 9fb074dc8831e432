"""A linearizability checker for client histories (Wing & Gong search, Lowe's memo, per key).

Give it a sequential ``Model`` of the system and the ``Operation``s clients observed (what
they asked, what they got back, when they called and when the answer came), and it says
whether some order of those operations (a) respects real time: an operation that returned
before another was called comes first, and (b) replays through the model giving every
operation exactly the output its client saw. Operations that never returned (a timeout, a
crashed client) have ``return_time = inf``: they may have taken effect at any point after
their call, or never; the checker tries both. An operation known to have failed *without
effect* (a definite "not leader" reply) must be left out of the history.

The search is Wing & Gong's, with Lowe's memoization of (set of operations linearized,
model state) pairs already explored, the algorithm Porcupine (anishathalye/porcupine) uses.
It runs per partition (P-compositionality, Horn & Kroening): the model splits the history
into independent parts, for a key-value store one per key, and the history is linearizable
exactly when every part is. Pure code: no trio, no I/O; the only clock read is
``time.monotonic`` when a ``timeout`` is given.

    history = History()
    h = history.invoke("c1", KvInput.put("x", "1"), now=0.0)
    history.complete(h, None, now=2.0)
    result = check(KvModel(), history.operations())
    assert result.ok, result.describe()
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

import attrs

StateT = TypeVar("StateT")
InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")

_CLOCK_CHECK_EVERY = 1024  # search steps between two reads of the clock when a timeout is set


@attrs.frozen
class Operation(Generic[InputT, OutputT]):
    """One client operation as the client saw it.

    client_id: who issued it (only used in reports; a client's operations need not be
        sequential for the checker, though real clients' are).
    input: what was asked, in the model's terms.
    output: what came back; ignored when the operation is pending.
    call_time / return_time: when it was issued and when the answer arrived, on one clock
        shared by all clients. ``return_time = math.inf`` marks an operation that never
        returned: it may or may not have taken effect. Operation A precedes B in real time
        only when ``A.return_time < B.call_time``; equal times count as concurrent unless
        ``check(order_touching=True)``.
    """

    client_id: Hashable
    input: InputT
    output: OutputT | None
    call_time: float
    return_time: float = math.inf

    def __attrs_post_init__(self) -> None:
        if math.isnan(self.call_time) or math.isinf(self.call_time):
            raise ValueError(
                f"operation {self.input!r} has call_time {self.call_time}: must be finite"
            )
        if not self.return_time >= self.call_time:
            raise ValueError(
                f"operation {self.input!r} of client {self.client_id!r} returns at "
                f"{self.return_time} before its call at {self.call_time}"
            )

    @property
    def pending(self) -> bool:
        """True when the operation never returned (it may or may not have taken effect)."""
        return self.return_time == math.inf


class Model(Protocol[StateT, InputT, OutputT]):
    """A sequential specification of the system under test.

    States must be hashable and compare by value (the memo is a set of states). ``step`` must
    be a pure function of its arguments.
    """

    def init(self) -> StateT:
        """The state before any operation."""
        ...

    def step(self, state: StateT, input: InputT) -> tuple[bool, StateT, OutputT]:
        """Apply ``input`` to ``state``: (legal, new state, the output the system must give).

        ``legal`` False means the input can never succeed in this state; an operation whose
        observed output differs (``!=``) from the returned one cannot be placed here either.
        """
        ...

    def partition(
        self, history: Sequence[Operation[InputT, OutputT]]
    ) -> Iterable[tuple[Hashable, Sequence[Operation[InputT, OutputT]]]]:
        """Split the history into independent parts as (label, operations) pairs.

        The history is linearizable exactly when every part is. A model may also leave out
        operations that cannot matter (a pending read has no effect and no output to check).
        """
        ...

    def describe_op(self, op: Operation[InputT, OutputT]) -> str:
        """One line naming the operation and its output, e.g. ``get('x') -> '1'``."""
        ...

    def describe_state(self, state: StateT) -> str:
        """A short form of a state for failure reports."""
        ...


class Outcome(enum.Enum):
    OK = "linearizable"
    ILLEGAL = "not linearizable"
    UNKNOWN = "unknown (timed out)"


@attrs.frozen
class Candidate:
    """An operation that was not yet linearized at the end of the longest prefix found.

    expected: what the model would have returned for it at that point (None if the model
        says its input is not legal there, see ``legal``).
    fits: True when its observed output matches (or it is pending): placing it there works
        but every continuation from there fails later.
    """

    op: Operation[Any, Any]
    legal: bool
    expected: Any
    fits: bool


@attrs.frozen
class PartitionResult:
    """The verdict for one part of the history.

    linearization: for OK, a valid order of the operations that took effect (pending
        operations left out were judged to have had no effect); for ILLEGAL, the longest
        prefix the search could place; empty for UNKNOWN.
    states: the model state after each operation of ``linearization``.
    blocking: for ILLEGAL, the operation that had returned by then yet could not be placed
        (real time forces it into the prefix), else None.
    candidates: for ILLEGAL, every operation that could have come next, with why it did not.
    steps: search steps taken (a measure of how hard the part was).
    """

    label: Hashable
    outcome: Outcome
    operations: tuple[Operation[Any, Any], ...]
    linearization: tuple[Operation[Any, Any], ...] = ()
    states: tuple[Any, ...] = ()
    initial_state: Any = None
    blocking: Operation[Any, Any] | None = None
    candidates: tuple[Candidate, ...] = ()
    steps: int = 0


@attrs.frozen
class CheckResult:
    """The verdict for a whole history: ILLEGAL if any part is, else UNKNOWN if any part
    timed out, else OK. Parts left unchecked when the timeout struck are UNKNOWN."""

    outcome: Outcome
    partitions: tuple[PartitionResult, ...]
    model: Any = attrs.field(repr=False, eq=False)
    total: int = 0  # operations in the history (parts hold those the model kept)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def linearizable(self) -> bool | None:
        """True, False, or None when the search timed out before deciding."""
        return {Outcome.OK: True, Outcome.ILLEGAL: False, Outcome.UNKNOWN: None}[self.outcome]

    @property
    def failures(self) -> tuple[PartitionResult, ...]:
        return tuple(p for p in self.partitions if p.outcome is Outcome.ILLEGAL)

    def describe(self, *, max_prefix: int = 10) -> str:
        """A readable report: the verdict, and for each failing part the last ``max_prefix``
        operations of the longest linearizable prefix, the state reached, and the operations
        that could not be placed after it."""
        total = self.total or sum(len(p.operations) for p in self.partitions)
        lines = [
            f"{self.outcome.value}: {total} operations in {len(self.partitions)} part(s)"
            + (
                f", {len(self.failures)} failing"
                if self.failures
                else f", {sum(p.outcome is Outcome.UNKNOWN for p in self.partitions)} undecided"
                if self.outcome is Outcome.UNKNOWN
                else ""
            )
        ]
        for part in self.failures:
            lines.extend(_describe_failure(self.model, part, max_prefix))
        return "\n".join(lines)


def _fmt_time(t: float) -> str:
    return "inf" if t == math.inf else f"{t:.6g}"


def _fmt_op(model: Any, op: Operation[Any, Any]) -> str:
    window = f"{_fmt_time(op.call_time)}..{_fmt_time(op.return_time)}"
    pending = " (pending)" if op.pending else ""
    return f"[{op.client_id}] {model.describe_op(op)}{pending}  @{window}"


def _describe_failure(model: Any, part: PartitionResult, max_prefix: int) -> list[str]:
    n = len(part.linearization)
    lines = [
        f"part {part.label!r}: {len(part.operations)} operations; "
        f"longest linearizable prefix has {n}"
    ]
    if n > max_prefix:
        lines.append(f"  ... {n - max_prefix} earlier operations")
    start = max(0, n - max_prefix)
    for i in range(start, n):
        op, state = part.linearization[i], part.states[i]
        lines.append(f"  {i + 1:>5}. {_fmt_op(model, op)}  => {model.describe_state(state)}")
    state = part.states[-1] if part.states else part.initial_state
    lines.append(f"  state after the prefix: {model.describe_state(state)}")
    if part.blocking is not None:
        lines.append(
            f"  must be placed next (it returned at {_fmt_time(part.blocking.return_time)}) "
            "but no order works:"
        )
    for cand in part.candidates:
        if not cand.legal:
            why = "not legal in this state"
        elif cand.fits:
            why = "fits here, but every continuation fails later"
        else:
            why = f"the model gives {cand.expected!r}"
        marker = "*" if cand.op is part.blocking else "-"
        lines.append(f"    {marker} {_fmt_op(model, cand.op)}: {why}")
    return lines


class _Timeout(Exception):
    pass


def check(
    model: Model[Any, Any, Any],
    history: Iterable[Operation[Any, Any]],
    *,
    timeout: float | None = None,
    order_touching: bool = False,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    ``order_touching``: False (the default, Porcupine's rule) counts an operation that
    returned at time t and one called at t as concurrent, the safe reading of a clock too
    coarse to order them. True makes the return precede the call, as in a discrete-event
    simulation where an operation started at the instant another returned was caused after
    it; every operation must then take time (``return_time > call_time``, else ValueError).

    ``timeout`` (seconds, shared by all parts) bounds the search; when it strikes, parts not
    yet decided are UNKNOWN (the search is exponential in the worst case, though histories
    of a few concurrent clients check in time linear in their length). Never raises for a
    non-linearizable history: that is the ILLEGAL outcome, explained by ``describe()``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ops = list(history)
    if order_touching:
        for op in ops:
            if op.return_time == op.call_time:
                raise ValueError(
                    f"operation {op.input!r} of client {op.client_id!r} takes no time "
                    f"(called and returned at {op.call_time}): order_touching needs "
                    "return_time > call_time"
                )
    results: list[PartitionResult] = []
    timed_out = False
    for label, part in model.partition(ops):
        part = tuple(part)
        if timed_out:
            results.append(PartitionResult(label=label, outcome=Outcome.UNKNOWN, operations=part))
            continue
        try:
            results.append(_check_part(model, label, part, deadline, order_touching))
        except _Timeout:
            timed_out = True
            results.append(PartitionResult(label=label, outcome=Outcome.UNKNOWN, operations=part))
    outcomes = {r.outcome for r in results}
    outcome = (
        Outcome.ILLEGAL
        if Outcome.ILLEGAL in outcomes
        else Outcome.UNKNOWN
        if Outcome.UNKNOWN in outcomes
        else Outcome.OK
    )
    return CheckResult(outcome=outcome, partitions=tuple(results), model=model, total=len(ops))


def _check_part(
    model: Model[Any, Any, Any],
    label: Hashable,
    ops: tuple[Operation[Any, Any], ...],
    deadline: float | None,
    order_touching: bool,
) -> PartitionResult:
    """Wing & Gong's search with Lowe's memo, two refinements for pending operations.

    Completed operations live in a doubly linked list of call and return events sorted by
    time (at equal times calls first, or returns first with ``order_touching``); pending ones, having no return, in a second list by
    call time. At each point the candidates are the calls before the first return event
    (real time allows nothing else), completed ones first: pending ones are tried only
    after, so the search first looks for an order in which they had no effect. The memo
    keeps, per (completed operations linearized, state), the sets of pending operations
    linearized; a configuration is skipped when one with the same completed set and state
    and a subset of its pending operations was explored (it could do all this one can).
    """
    n = len(ops)
    # Main list: node 0 is the head; op i's call is node 2i+1 and its return node 2i+2.
    call_rank, return_rank = (1, 0) if order_touching else (0, 1)
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        if not op.pending:
            events.append((op.call_time, call_rank, 2 * i + 1))
            events.append((op.return_time, return_rank, 2 * i + 2))
    events.sort()
    nxt = [0] * (2 * n + 1)  # 0 doubles as "none": the head is never a successor
    prv = [0] * (2 * n + 1)
    chain = [0] + [node for _, _, node in events]
    for a, b in zip(chain, chain[1:], strict=False):
        nxt[a] = b
        prv[b] = a
    # Pending list: node n is the head; op i (pending) is node i.
    pnxt = [n] * (n + 1)
    pprv = [n] * (n + 1)
    pchain = [n] + sorted((i for i, op in enumerate(ops) if op.pending), key=_call_of(ops))
    for a, b in zip(pchain, pchain[1:], strict=False):
        pnxt[a] = b
        pprv[b] = a
    pnxt[pchain[-1]] = n
    pprv[n] = pchain[-1]

    def unlink(links_next: list[int], links_prev: list[int], x: int) -> None:
        links_next[links_prev[x]] = links_next[x]
        links_prev[links_next[x]] = links_prev[x]

    def relink(links_next: list[int], links_prev: list[int], x: int) -> None:
        links_next[links_prev[x]] = x
        links_prev[links_next[x]] = x

    state: Any = model.init()
    initial = state
    remaining = len(events) // 2  # completed operations not yet linearized
    done = 0  # bitset: completed operations linearized
    pend = 0  # bitset: pending operations linearized
    memo: dict[tuple[int, Any], list[int]] = {}
    # (op index, state before it, blocking return node when it was placed)
    stack: list[tuple[int, Any, int]] = []
    best: tuple[list[tuple[int, Any, int]], Any, int] | None = None
    steps = 0
    node = nxt[0]  # scanning the main list, or (node < 0) the pending list at -node - 1
    blocking = 0  # the first return node: pending candidates must be called before it
    while remaining:
        steps += 1
        if deadline is not None and steps % _CLOCK_CHECK_EVERY == 0 and time.monotonic() > deadline:
            raise _Timeout
        if node > 0 and node % 2 == 0:  # the first return: switch to pending candidates
            blocking = node
            node = -pnxt[n] - 1
            continue
        i = node // 2 if node > 0 else -node - 1
        if i == n or (
            node < 0 and not _called_before(ops[i], ops[(blocking - 1) // 2], order_touching)
        ):
            # No candidate left here: backtrack.
            if best is None or len(stack) > len(best[0]):
                best = (list(stack), state, blocking)
            if not stack:
                break
            i, state, blocking = stack.pop()
            if ops[i].pending:
                pend &= ~(1 << i)
                relink(pnxt, pprv, i)
                node = -pnxt[i] - 1
            else:
                done &= ~(1 << i)
                remaining += 1
                relink(nxt, prv, 2 * i + 2)
                relink(nxt, prv, 2 * i + 1)
                node = nxt[2 * i + 1]
            continue
        op = ops[i]
        legal, new_state, out = model.step(state, op.input)
        if legal and (op.pending or out == op.output):
            new_done = done if op.pending else done | (1 << i)
            new_pend = pend | (1 << i) if op.pending else pend
            seen = memo.setdefault((new_done, new_state), [])
            if not any(q & ~new_pend == 0 for q in seen):
                seen.append(new_pend)
                stack.append((i, state, blocking))
                state, done, pend = new_state, new_done, new_pend
                if op.pending:
                    unlink(pnxt, pprv, i)
                else:
                    remaining -= 1
                    unlink(nxt, prv, 2 * i + 1)
                    unlink(nxt, prv, 2 * i + 2)
                node = nxt[0]
                continue
        node = -pnxt[i] - 1 if op.pending else nxt[node]
    if not remaining:
        lin, states = _replay(ops, stack, state)
        return PartitionResult(
            label=label,
            outcome=Outcome.OK,
            operations=ops,
            linearization=tuple(lin),
            states=tuple(states),
            initial_state=initial,
            steps=steps,
        )
    assert best is not None
    return _failure(model, label, ops, best, initial, steps, order_touching)


def _called_before(
    op: Operation[Any, Any], returned: Operation[Any, Any], order_touching: bool
) -> bool:
    """Whether ``op`` may take effect before ``returned`` does (was called before it
    returned, in real time)."""
    if order_touching:
        return op.call_time < returned.return_time
    return op.call_time <= returned.return_time


def _call_of(ops: tuple[Operation[Any, Any], ...]) -> Any:
    return lambda i: (ops[i].call_time, i)


def _replay(
    ops: tuple[Operation[Any, Any], ...], stack: list[tuple[int, Any, int]], state: Any
) -> tuple[list[Operation[Any, Any]], list[Any]]:
    """The operations on the search stack in order, and the model state after each."""
    lin = [ops[i] for i, _, _ in stack]
    states = [before for _, before, _ in stack[1:]] + [state] if stack else []
    return lin, states


def _failure(
    model: Model[Any, Any, Any],
    label: Hashable,
    ops: tuple[Operation[Any, Any], ...],
    best: tuple[list[tuple[int, Any, int]], Any, int],
    initial: Any,
    steps: int,
    order_touching: bool,
) -> PartitionResult:
    stack, state, blocking_node = best
    placed = {i for i, _, _ in stack}
    lin, states = _replay(ops, stack, state)
    blocking = ops[(blocking_node - 1) // 2]
    # Candidates: unplaced operations called before the blocking one returned.
    candidates = []
    for i, op in enumerate(ops):
        if i in placed or not _called_before(op, blocking, order_touching):
            continue
        legal, _, out = model.step(state, op.input)
        candidates.append(
            Candidate(
                op=op,
                legal=legal,
                expected=out if legal else None,
                fits=legal and (op.pending or out == op.output),
            )
        )
    candidates.sort(key=lambda c: (c.op is not blocking, c.op.call_time))
    return PartitionResult(
        label=label,
        outcome=Outcome.ILLEGAL,
        operations=ops,
        linearization=tuple(lin),
        states=tuple(states),
        initial_state=initial,
        blocking=blocking,
        candidates=tuple(candidates),
        steps=steps,
    )


class History:
    """Records operations as clients issue them and answers arrive.

    ``invoke`` returns a handle; ``complete`` records the output of a handle. Handles never
    completed become pending operations (``return_time = inf``) in ``operations()``. Use
    ``discard`` for an operation known to have had no effect (a definite rejection).
    """

    def __init__(self) -> None:
        self._open: dict[int, tuple[Hashable, Any, float]] = {}
        self._done: dict[int, Operation[Any, Any]] = {}
        self._next = 0

    def invoke(self, client_id: Hashable, input: Any, *, now: float) -> int:
        handle = self._next
        self._next += 1
        self._open[handle] = (client_id, input, now)
        return handle

    def complete(self, handle: int, output: Any, *, now: float) -> None:
        client_id, input, call = self._open.pop(handle)
        self._done[handle] = Operation(
            client_id=client_id, input=input, output=output, call_time=call, return_time=now
        )

    def discard(self, handle: int) -> None:
        del self._open[handle]

    def operations(self) -> list[Operation[Any, Any]]:
        """Every operation so far, in invocation order; unanswered ones pending."""
        ops = dict(self._done)
        for handle, (client_id, input, call) in self._open.items():
            ops[handle] = Operation(client_id=client_id, input=input, output=None, call_time=call)
        return [ops[h] for h in sorted(ops)]

    def __len__(self) -> int:
        return len(self._open) + len(self._done)


# --- a key-value register model --------------------------------------------------------


class KvOp(enum.Enum):
    PUT = "put"
    APPEND = "append"
    GET = "get"
    DELETE = "delete"


@attrs.frozen
class KvInput:
    """A key-value operation. ``get`` outputs the value (None: absent); the others output
    None. ``append`` to an absent key creates it with ``value``."""

    op: KvOp
    key: str
    value: str | None = None

    def __attrs_post_init__(self) -> None:
        needs_value = self.op in (KvOp.PUT, KvOp.APPEND)
        if needs_value and self.value is None:
            raise ValueError(f"{self.op.value} of key {self.key!r} needs a value")
        if not needs_value and self.value is not None:
            raise ValueError(f"{self.op.value} of key {self.key!r} takes no value")

    @classmethod
    def put(cls, key: str, value: str) -> KvInput:
        return cls(KvOp.PUT, key, value)

    @classmethod
    def append(cls, key: str, value: str) -> KvInput:
        return cls(KvOp.APPEND, key, value)

    @classmethod
    def get(cls, key: str) -> KvInput:
        return cls(KvOp.GET, key)

    @classmethod
    def delete(cls, key: str) -> KvInput:
        return cls(KvOp.DELETE, key)


class KvModel:
    """A map of string keys to string values, checked one key at a time.

    The state of a part is the one key's value (None when absent). ``partition`` leaves out
    operations that cannot change the verdict, which keeps the search from trying every
    subset of unanswered writes: pending gets (no effect, no output to check), and pending
    writes no get observed. A pending put or append whose value appears in no get's output
    (in a key with no appends: is no get's output) may have taken effect only where
    something overwrote it unread, so a linearization with it is still one without it; a
    pending delete is left out when no get returned "absent" and the key has no appends.
    """

    def init(self) -> str | None:
        return None

    def step(self, state: str | None, input: KvInput) -> tuple[bool, str | None, str | None]:
        if input.op is KvOp.GET:
            return True, state, state
        if input.op is KvOp.PUT:
            return True, input.value, None
        if input.op is KvOp.APPEND:
            assert input.value is not None
            return True, (state or "") + input.value, None
        return True, None, None

    def partition(
        self, history: Sequence[Operation[KvInput, str | None]]
    ) -> list[tuple[Hashable, list[Operation[KvInput, str | None]]]]:
        parts: dict[str, list[Operation[KvInput, str | None]]] = {}
        for op in history:
            if not isinstance(op.input, KvInput):
                raise TypeError(f"KvModel expects KvInput operations, got {op.input!r}")
            if op.pending and op.input.op is KvOp.GET:
                continue
            parts.setdefault(op.input.key, []).append(op)
        return [(key, _drop_unobserved_pending_writes(ops)) for key, ops in sorted(parts.items())]

    def describe_op(self, op: Operation[KvInput, str | None]) -> str:
        inp = op.input
        if inp.op is KvOp.GET:
            return f"get({inp.key!r})" + ("" if op.pending else f" -> {op.output!r}")
        if inp.op is KvOp.DELETE:
            return f"delete({inp.key!r})"
        return f"{inp.op.value}({inp.key!r}, {inp.value!r})"

    def describe_state(self, state: str | None) -> str:
        return "absent" if state is None else repr(state)


def _drop_unobserved_pending_writes(
    ops: list[Operation[KvInput, str | None]],
) -> list[Operation[KvInput, str | None]]:
    """Leave out pending writes no get can have observed (see KvModel)."""
    outputs = {op.output for op in ops if op.input.op is KvOp.GET and not op.pending}
    if not any(op.input.op is KvOp.APPEND for op in ops):
        # With puts and deletes only, a write is observed only by a get returning its value.
        return [
            op
            for op in ops
            if not op.pending or (op.input.value if op.input.op is KvOp.PUT else None) in outputs
        ]
    # With appends, a put or append is observed only by a get whose value contains it; a
    # delete may be observed by any get (an append after it starts afresh): keep deletes.
    texts = [out for out in outputs if out is not None]
    return [
        op
        for op in ops
        if not op.pending
        or op.input.op is KvOp.DELETE
        or any(op.input.value in text for text in texts)  # type: ignore[operator]
    ]
