"""The proposer applies the commands it holds instead of decoding its own entry, and still
ends in exactly the state of a server that decoded the entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import trio

from trickle.engine import commands as c
from trickle.engine import replog as replog_module
from trickle.engine.fsm import StateMachine, decode_meta
from trickle.engine.model import Execution, ExecutionId, Job
from trickle.engine.replog import ReplicatedLog
from trickle.engine.store import Store
from trickle.errors import NotLeader
from trickle.raft.messages import Entry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_log() -> ReplicatedLog:
    async def restored() -> None:
        pass

    return ReplicatedLog(
        Store(None),
        StateMachine(),
        on_applied=lambda pairs, replay: None,
        on_restored=restored,
        inline=True,
    )


class TwoServers:
    """A driver that commits at once: the leader's log applies the proposed bytes object
    itself, the follower's log a copy of them (as received from the network)."""

    def __init__(self) -> None:
        self.leader = make_log()
        self.follower = make_log()
        self.leader.attach(self)
        self.index = 0
        self.refuse = False

    async def propose(self, data: bytes) -> object:
        if self.refuse:
            raise NotLeader(None)
        self.index += 1
        results = await self.leader.apply([Entry(term=1, index=self.index, data=data)])
        copy = bytes(bytearray(data))
        assert copy is not data
        await self.follower.apply([Entry(term=1, index=self.index, data=copy)])
        return results[0]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    real = replog_module.decode_entry

    def counting(data: bytes) -> tuple[int, list[c.Command]]:
        seen.append(data)
        return real(data)

    monkeypatch.setattr(replog_module, "decode_entry", counting)
    return seen


def run(name: str, at: datetime, scheduled_at: datetime) -> c.RunStarted:
    ex = Execution(
        id=ExecutionId(f"{int(at.timestamp() * 1e9)}-n1"),
        job_name=name,
        node_name="n1",
        group=int(at.timestamp() * 1e9),
        started_at=at,
        scheduled_at=scheduled_at,
    )
    return c.RunStarted(execution=ex, next=scheduled_at + timedelta(seconds=10), advance_next=True)


def assert_same_state(a: ReplicatedLog, b: ReplicatedLog) -> None:
    fa, fb = a._fsm, b._fsm
    assert fa.jobs == fb.jobs
    assert fa.running == fb.running
    assert decode_meta(fa.export_meta()) == decode_meta(fb.export_meta())
    for ex_a in fa.running.values():  # equal, and alike down to the time zones
        ex_b = fb.running[ex_a.id]
        assert ex_a.scheduled_at is None or ex_a.scheduled_at.isoformat() == (
            ex_b.scheduled_at.isoformat() if ex_b.scheduled_at else None
        )
    assert a._store.load() == b._store.load()


async def test_the_leader_applies_its_own_fires_without_decoding_them(decodes):
    servers = TwoServers()
    leader = servers.leader
    async with trio.open_nursery() as nursery:
        await nursery.start(leader.run)
        await leader.propose([c.PutJob(job=Job(name="j", schedule="@every 10s"), now=NOW)])
        decodes.clear()
        first = NOW + timedelta(seconds=10)
        [started] = await leader.propose([run("j", first, first)], urgent=False)
        assert started.error is None
        [finished] = await leader.propose(
            [
                c.RunFinished(
                    job_name="j",
                    execution_id=started.result.id,
                    finished_at=first + timedelta(milliseconds=3),
                    success=True,
                    output="ok",
                    exit_code=0,
                )
            ]
        )
        assert finished.error is None
        nursery.cancel_scope.cancel()
    # two entries: each decoded by the follower only
    assert len(decodes) == 2
    assert all(data is not None for data in decodes)
    assert leader._own == {}
    assert_same_state(leader, servers.follower)
    assert leader._fsm.jobs["j"].success_count == 1


async def test_commands_that_would_not_decode_alike_are_decoded_by_the_leader_too(decodes):
    servers = TwoServers()
    leader = servers.leader
    berlin = datetime(2026, 1, 1, 1, 0, 10, tzinfo=ZoneInfo("Europe/Berlin"))  # 00:00:10 UTC
    async with trio.open_nursery() as nursery:
        await nursery.start(leader.run)
        await leader.propose([c.PutJob(job=Job(name="j", schedule="@every 10s"), now=NOW)])
        decodes.clear()
        [started] = await leader.propose([run("j", berlin.astimezone(UTC), berlin)])
        nursery.cancel_scope.cancel()
    assert started.error is None
    assert len(decodes) == 2  # the leader's and the follower's
    [ex] = leader._fsm.running.values()
    assert ex.scheduled_at is not None and ex.scheduled_at.tzinfo is UTC
    assert_same_state(leader, servers.follower)


async def test_a_refused_proposal_leaves_nothing_held():
    servers = TwoServers()
    servers.refuse = True
    leader = servers.leader
    async with trio.open_nursery() as nursery:
        await nursery.start(leader.run)
        first = NOW + timedelta(seconds=10)
        with pytest.raises(NotLeader):
            await leader.propose([run("j", first, first)])
        nursery.cancel_scope.cancel()
    assert leader._own == {}
