"""The whole-cluster simulation's ledger: the committed log replayed once more, for the checks.

``Ledger`` applies the entries the Raft oracle knows committed, in index order, to its own
``StateMachine`` (replog's fence rule included), and keeps what the invariants need: every
accepted run intent (execution id -> job, scheduled time, node, group, trigger), every
fire recorded skipped or missed (with reason), every execution recorded finished and how.
Because the state machine is deterministic, its state is what every server holds at the
same index; the checks compare the servers against it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

import attrs

from trickle.engine import commands as c
from trickle.engine.events import EventKind
from trickle.engine.fsm import StateMachine
from trickle.engine.model import ExecutionId, Trigger
from trickle.engine.replog import decode_entry
from trickle.errors import ClusterAtCapacity, ConcurrencyForbidden, ConcurrencyLimitReached
from trickle.raft.messages import Entry, EntryKind

Fire = tuple[str, datetime]  # (job name, scheduled time)


@attrs.frozen
class RunRecord:
    job_name: str
    scheduled_at: datetime | None
    node: str
    group: int
    trigger: Trigger
    index: int  # the log index of its intent


@attrs.frozen
class MissedRecord:
    record: c.FiresMissed
    index: int


class Ledger:
    """The committed history, replayed (see the module docstring)."""

    def __init__(self, decode: Callable[[bytes], tuple[int, list[c.Command]]] = decode_entry):
        self._decode = decode
        self.fsm = StateMachine()
        self.index = 0
        self.runs: dict[ExecutionId, RunRecord] = {}
        self.groups: dict[Fire, set[int]] = {}
        self.skipped: dict[Fire, list[str]] = {}
        self.missed: list[MissedRecord] = []
        self.finished: dict[ExecutionId, tuple[bool, str]] = {}
        self.first_fire: dict[str, datetime | None] = {}
        self.refused_entries = 0

    def advance(self, committed: Mapping[int, tuple[Entry, bytes, int]]) -> None:
        """Apply every newly committed entry (the oracle's map: index -> (entry, ...))."""
        while self.index + 1 in committed:
            self._apply(committed[self.index + 1][0])

    def _apply(self, entry: Entry) -> None:
        self.index = entry.index
        commands: list[c.Command] = []
        fence = 0
        if entry.kind is EntryKind.NORMAL and entry.data:
            fence, commands = self._decode(entry.data)
        if fence and fence != entry.term:
            self.fsm.apply_entry(entry.index, [])
            self.refused_entries += 1
            return
        results = self.fsm.apply_entry(entry.index, commands)
        for command, applied in zip(commands, results, strict=True):
            if isinstance(command, c.PutJob) and applied.error is None:
                job, created = applied.result
                if created:
                    self.first_fire[job.name] = job.next
            elif isinstance(command, c.RunStarted):
                ex = command.execution
                if applied.error is None:
                    if ex.id not in self.runs:
                        self.runs[ex.id] = RunRecord(
                            job_name=ex.job_name,
                            scheduled_at=ex.scheduled_at,
                            node=ex.node_name,
                            group=ex.group,
                            trigger=ex.trigger,
                            index=entry.index,
                        )
                        if ex.scheduled_at is not None:
                            key = (ex.job_name, ex.scheduled_at)
                            self.groups.setdefault(key, set()).add(ex.group)
                elif (
                    isinstance(
                        applied.error,
                        ConcurrencyForbidden | ConcurrencyLimitReached | ClusterAtCapacity,
                    )
                    and command.advance_next
                    and ex.scheduled_at is not None
                ):
                    # the state machine refused an intent that raced a limit: the fire
                    # is not run, for that reason (the leader would have skipped it)
                    key = (ex.job_name, ex.scheduled_at)
                    self.skipped.setdefault(key, []).append(f"refused: {applied.error.message}")
            elif isinstance(command, c.FiresSkipped) and applied.error is None:
                key = (command.job_name, command.scheduled_at)
                self.skipped.setdefault(key, []).append(command.reason)
            elif isinstance(command, c.FiresMissed) and applied.error is None:
                self.missed.append(MissedRecord(command, entry.index))
            for event in applied.events:
                if event.kind == EventKind.EXECUTION_FINISHED and event.execution is not None:
                    ex = event.execution
                    self.finished[ex.id] = (ex.success, ex.output)

    def fires_of(self, name: str, until: datetime) -> list[datetime]:
        """Every scheduled instant of job ``name`` from its first up to ``until``."""
        job = self.fsm.jobs.get(name)
        at = self.first_fire.get(name)
        out: list[datetime] = []
        while job is not None and at is not None and at <= until:
            out.append(at)
            at = self.fsm.next_fire(job, at)
        return out

    def missed_fires(self, record: c.FiresMissed) -> list[datetime]:
        """The instants a missed record covers (``first`` to ``last``)."""
        job = self.fsm.jobs.get(record.job_name)
        out: list[datetime] = []
        at: datetime | None = record.first
        while job is not None and at is not None and at <= record.last:
            out.append(at)
            at = self.fsm.next_fire(job, at)
        return out
