"""Dispatch between nodes on trio's MockClock over the in-memory network, with fake runners:
runs once however often sent, fenced by term, output batched in order, results delivered to
whichever server leads until committed, and a slow or dead leader never holds a runner."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from trickle.engine.commands import RunFinished
from trickle.engine.dispatch import (
    DISPATCH_ATTEMPTS,
    DISPATCH_METHOD,
    MAX_BATCH_BYTES,
    OUTPUT_INTERVAL,
    OUTPUT_METHOD,
    OUTPUT_TIMEOUT,
    QUERY_METHOD,
    REPORT_METHOD,
    Ack,
    Dispatch,
    DispatchAnswer,
    Dispatcher,
    DispatchRefused,
    ReportAnswer,
    RunnerService,
    decode,
)
from trickle.engine.journal import ResultJournal
from trickle.engine.model import BusyExecution, Execution, ExecutionId, Job
from trickle.errors import NotLeader, ValidationError
from trickle.raft.messages import NodeId
from trickle.raft.transport import ConnectionLost, PeerUnreachable, RemoteError
from trickle.testing.raftnet import MemoryNetwork, MemoryTransport

T0 = datetime(2026, 1, 1, tzinfo=UTC)
JOB = Job(name="backup", schedule="@every 1m", executor="shell")


class FakeRunner:
    """Stands in for the Engine's Runner: records submissions; the test ends runs."""

    def __init__(self) -> None:
        self.submitted: list[ExecutionId] = []
        self.active: dict[str, Execution] = {}
        self.stopped = False

    def submit(self, job: Job, execution: Execution) -> None:
        if self.stopped:
            raise RuntimeError("the runner is not running")
        self.submitted.append(execution.id)
        self.active[execution.id] = execution

    def is_active(self, execution_id: str) -> bool:
        return execution_id in self.active

    def busy(self) -> list[BusyExecution]:
        return [BusyExecution(execution=ex, queued=False) for ex in self.active.values()]


@attrs.define(eq=False)
class Node:
    name: str
    transport: MemoryTransport
    scope: trio.CancelScope
    runner: FakeRunner
    service: RunnerService
    dispatcher: Dispatcher | None = None
    stopped: trio.Event = attrs.Factory(trio.Event)

    async def finish(self, execution_id: str, *, output: str = "done", success: bool = True):
        """End a run as an agent's Runner does: it leaves the runner, its result is reported."""
        ex = self.runner.active.pop(execution_id)
        finished = RunFinished(
            job_name=ex.job_name,
            execution_id=ex.id,
            finished_at=T0,
            success=success,
            output=output,
        )
        await self.service.report(finished)
        return finished


class Cluster:
    """Servers (a Dispatcher and a RunnerService each) and agents (a RunnerService) on one
    MemoryNetwork. ``leader`` names the server whose ``commit`` succeeds; the others raise
    NotLeader with it as the hint (as Raft followers that know the leader would)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.net = MemoryNetwork(rng=random.Random(1))
        self.nodes: dict[str, Node] = {}
        self.server_names: list[str] = []
        self.leader: str | None = None
        self.hint = True  # followers name the leader in NotLeader
        self.commit_hangs = False
        self.commit_error: Exception | None = None
        self.committed: list[tuple[str, RunFinished]] = []
        self.commit_calls = 0
        self.outputs: list[tuple[str, str, str, str, float]] = []  # server, job, id, chunk, t
        self.changed = trio.Event()
        self.sequence = 0

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()

    def servers(self) -> list[str]:
        return list(self.server_names)

    async def _start(self, name: str, *, server: bool, journal: Path | None = None) -> Node:
        transport = self.net.transport(NodeId(name))
        runner = FakeRunner()
        service = RunnerService(
            node_name=name,
            transport=transport,
            runner=runner,
            servers=self.servers,
            rng=random.Random(len(self.nodes)),
            journal=ResultJournal(journal),
        )
        dispatcher = None
        if server:
            dispatcher = Dispatcher(
                node_name=name,
                transport=transport,
                on_output=self._output_on(name),
                commit=self._commit_on(name),
                rng=random.Random(100 + len(self.nodes)),
                local=service,
            )
        scope = trio.CancelScope()
        node = Node(name, transport, scope, runner, service, dispatcher)

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                with scope:
                    async with trio.open_nursery() as inner:
                        await inner.start(transport.serve)
                        await inner.start(service.run)
                        if dispatcher is not None:
                            await inner.start(dispatcher.run)
                        task_status.started()
            finally:
                node.stopped.set()

        await self.nursery.start(run)
        self.nodes[name] = node
        if server and name not in self.server_names:
            self.server_names.append(name)
        return node

    async def server(self, name: str) -> Node:
        return await self._start(name, server=True)

    async def agent(self, name: str, *, journal: Path | None = None) -> Node:
        return await self._start(name, server=False, journal=journal)

    async def kill(self, name: str) -> None:
        self.nodes[name].scope.cancel()
        await self.nodes[name].stopped.wait()

    def _output_on(self, server: str) -> Callable[[str, ExecutionId, str], None]:
        def on_output(job_name: str, execution_id: ExecutionId, chunk: str) -> None:
            self.outputs.append((server, job_name, execution_id, chunk, trio.current_time()))
            self._changed()

        return on_output

    def _commit_on(self, server: str):
        async def commit(finished: RunFinished) -> None:
            self.commit_calls += 1
            if self.leader != server:
                raise NotLeader(self.leader if self.hint else None)
            if self.commit_hangs:
                await trio.sleep_forever()
            if self.commit_error is not None:
                raise self.commit_error
            self.committed.append((server, finished))
            self._changed()

        return commit

    def dispatch(self, node: str, *, leader: str, term: int) -> Dispatch:
        self.sequence += 1
        ex = Execution(
            id=ExecutionId(f"{self.sequence}-{node}"),
            job_name=JOB.name,
            node_name=node,
            group=1,
            started_at=T0,
            scheduled_at=T0,
        )
        return Dispatch(job=JOB, execution=ex, term=term, leader=leader)

    def ids(self, server: str | None = None) -> list[str]:
        return [f.execution_id for s, f in self.committed if server is None or s == server]


async def test_a_dispatch_sent_twice_runs_once(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        cluster.leader = "s1"
        dispatch = cluster.dispatch("a1", leader="s1", term=3)
        await s1.dispatcher.send("a1", dispatch)
        await s1.dispatcher.send("a1", dispatch)  # e.g. a leader unsure it went out
        assert a1.runner.submitted == [dispatch.execution.id]
        await a1.finish(dispatch.execution.id)
        await s1.dispatcher.send("a1", dispatch)  # while its result waits: not rerun
        await cluster.until(lambda: cluster.ids() == [dispatch.execution.id])
        await s1.dispatcher.send("a1", dispatch)  # after the result committed: not rerun
        assert a1.runner.submitted == [dispatch.execution.id]
        stats = a1.service.statistics()
        assert (stats.accepted, stats.duplicates) == (1, 3)
        assert s1.dispatcher.statistics().sent == 4
        nursery.cancel_scope.cancel()


async def test_a_dispatch_of_a_stale_term_is_refused(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        a1 = await cluster.agent("a1")
        await s2.dispatcher.send("a1", cluster.dispatch("a1", leader="s2", term=5))
        stale = cluster.dispatch("a1", leader="s1", term=4)  # s1 was deposed in term 5
        with pytest.raises(DispatchRefused) as info:
            await s1.dispatcher.send("a1", stale)
        assert info.value.node == "a1"
        assert info.value.reason == "stale term 4 from s1: this node has seen term 5 from s2"
        assert stale.execution.id not in a1.runner.submitted
        # the same term as the highest seen is accepted (the leader of that term)
        await s2.dispatcher.send("a1", cluster.dispatch("a1", leader="s2", term=5))
        assert len(a1.runner.submitted) == 2
        assert a1.service.statistics().refused == 1
        nursery.cancel_scope.cancel()


async def test_a_new_leaders_query_fences_the_old_leaders_late_dispatches(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        await cluster.agent("a1")
        await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=2))
        state = await s2.dispatcher.query("a1", term=3)  # s2 reconciles as the new leader
        assert (state.term, state.leader) == (3, "s2")
        with pytest.raises(DispatchRefused, match="stale term 2 from s1"):
            await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=2))
        # a plain query (no term) moves nothing
        assert (await s1.dispatcher.query("a1")).term == 3
        nursery.cancel_scope.cancel()


async def test_a_dispatch_for_another_node_or_from_an_impostor_is_refused(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        await cluster.agent("a2")
        with pytest.raises(DispatchRefused, match="is for node a2, not a1"):
            await s1.dispatcher.send("a1", cluster.dispatch("a2", leader="s1", term=1))
        with pytest.raises(DispatchRefused, match="sent by s1 but on behalf of s9"):
            await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s9", term=1))
        assert a1.runner.submitted == []
        assert a1.service.term == 0  # a refused dispatch teaches nothing
        nursery.cancel_scope.cancel()


async def test_a_stopped_runner_refuses_with_the_reason(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        a1.runner.stopped = True
        with pytest.raises(DispatchRefused, match="a1 is not running jobs: the runner is not"):
            await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=1))
        nursery.cancel_scope.cancel()


async def test_a_dispatch_without_a_term_is_refused_even_by_a_fresh_node(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")  # has seen no term yet
        with pytest.raises(DispatchRefused, match="without a leader's term"):
            await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=0))
        assert a1.runner.submitted == []
        nursery.cancel_scope.cancel()


async def test_output_chunks_arrive_batched_and_in_order(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        ex = dispatch.execution
        sent = [f"line {i}\n" for i in range(40)]
        for chunk in sent[:10]:  # a burst: one batch
            a1.service.on_output(ex, chunk)
        for chunk in sent[10:]:  # then a chunk every 10 ms
            await trio.sleep(0.01)
            a1.service.on_output(ex, chunk)
        await cluster.until(lambda: len(cluster.outputs) == len(sent))
        await trio.testing.wait_all_tasks_blocked()  # the last send is counted
        assert [o[3] for o in cluster.outputs] == sent
        assert {(o[0], o[1], o[2]) for o in cluster.outputs} == {("s1", "backup", ex.id)}
        arrivals = sorted({o[4] for o in cluster.outputs})
        assert all(b - a >= OUTPUT_INTERVAL - 1e-9 for a, b in itertools.pairwise(arrivals))
        stats = a1.service.statistics()
        assert stats.output_batches_sent == len(arrivals) <= 5  # not one call per chunk
        assert stats.output_chunks_sent == len(sent)
        assert s1.dispatcher.statistics().output_gaps == 0
        nursery.cancel_scope.cancel()


async def test_a_large_output_is_split_into_bounded_batches(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        big = "".join(chr(ord("a") + i % 26) for i in range(1_000_000))
        a1.service.on_output(dispatch.execution, big)
        await cluster.until(lambda: "".join(o[3] for o in cluster.outputs) == big)
        batches: dict[float, int] = {}
        for o in cluster.outputs:
            batches[o[4]] = batches.get(o[4], 0) + len(o[3].encode())
        assert max(batches.values()) <= MAX_BATCH_BYTES
        assert len(batches) >= 1_000_000 // MAX_BATCH_BYTES
        nursery.cancel_scope.cancel()


async def test_a_lone_servers_own_runs_stream_their_output_nowhere(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        dispatch = cluster.dispatch("s1", leader="s1", term=1)
        await s1.dispatcher.send("s1", dispatch)  # the leader's own run: no network
        assert s1.runner.submitted == [dispatch.execution.id]
        s1.service.on_output(dispatch.execution, "x")
        other = cluster.dispatch("s1", leader="s1", term=1).execution
        s1.service.on_output(other, "y")  # run here without a dispatch
        await trio.sleep(1)
        assert s1.transport.calls == 0
        assert cluster.outputs == []
        nursery.cancel_scope.cancel()


async def test_output_reaches_every_server_not_only_the_leader(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        s3 = await cluster.server("s3")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        sent = [f"line {i}\n" for i in range(20)]
        for chunk in sent:
            await trio.sleep(0.03)
            a1.service.on_output(dispatch.execution, chunk)
        await cluster.until(lambda: len(cluster.outputs) == 3 * len(sent))
        for server in ("s1", "s2", "s3"):
            assert [o[3] for o in cluster.outputs if o[0] == server] == sent
        for node in (s1, s2, s3):
            assert node.dispatcher.statistics().output_gaps == 0
        nursery.cancel_scope.cancel()


async def test_the_leaders_own_run_streams_its_output_to_the_other_servers(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        await cluster.server("s2")
        await cluster.server("s3")
        own = cluster.dispatch("s1", leader="s1", term=1).execution  # run without a dispatch
        s1.service.on_output(own, "1\n")
        await trio.sleep(0.5)
        s1.service.on_output(own, "2\n")
        await cluster.until(lambda: len(cluster.outputs) == 4)
        assert sorted((o[0], o[2], o[3]) for o in cluster.outputs) == [
            ("s2", own.id, "1\n"),
            ("s2", own.id, "2\n"),
            ("s3", own.id, "1\n"),
            ("s3", own.id, "2\n"),
        ]
        nursery.cancel_scope.cancel()


async def test_output_follows_a_newer_leader_gossip_does_not_list_yet(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        cluster.server_names.remove("s2")  # gossip has not told the agent about s2
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        a1.service.on_output(dispatch.execution, "before")
        await cluster.until(lambda: len(cluster.outputs) == 1)
        await s2.dispatcher.query("a1", term=2)
        a1.service.on_output(dispatch.execution, "after")
        await cluster.until(lambda: len(cluster.outputs) == 3)
        assert sorted((o[0], o[3]) for o in cluster.outputs) == [
            ("s1", "after"),
            ("s1", "before"),
            ("s2", "after"),
        ]
        nursery.cancel_scope.cancel()


async def test_a_result_not_yet_committed_survives_a_restart_of_the_agent(
    autojump_clock, tmp_path: Path
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1", journal=tmp_path / "results")
        cluster.leader = "s1"
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        cluster.net.cut(NodeId("a1"), NodeId("s1"))
        finished = await a1.finish(dispatch.execution.id, output="ran fine")
        await trio.sleep(1)  # the server is out of reach: nothing committed
        assert cluster.committed == []
        assert [p.name for p in (tmp_path / "results").iterdir()] == [
            f"{dispatch.execution.id}.result"
        ]
        await cluster.kill("a1")
        a1 = await cluster.agent("a1", journal=tmp_path / "results")  # restarted
        assert a1.service.knows(dispatch.execution.id)  # what the leader's question sees
        assert [r.execution_id for r in a1.service.state().pending] == [dispatch.execution.id]
        cluster.net.heal()
        await cluster.until(lambda: len(cluster.committed) == 1)
        assert cluster.committed == [("s1", finished)]
        await trio.testing.wait_all_tasks_blocked()
        assert list((tmp_path / "results").iterdir()) == []  # forgotten once committed
        nursery.cancel_scope.cancel()


async def test_a_result_reaches_the_leader(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        await cluster.server("s2")
        a1 = await cluster.agent("a1")
        cluster.leader = "s1"
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        a1.service.on_output(dispatch.execution, "last words")
        finished = await a1.finish(dispatch.execution.id, output="last words")
        await cluster.until(lambda: cluster.committed)
        await trio.testing.wait_all_tasks_blocked()  # the answer reached the runner
        assert cluster.committed == [("s1", finished)]
        assert cluster.outputs[0][3] == "last words"  # the live feed got it before the end
        assert a1.service.pending == []
        assert (await s1.dispatcher.query("a1")).pending == ()
        stats = a1.service.statistics()
        assert (stats.results_committed, stats.results_pending, stats.report_failures) == (1, 0, 0)
        nursery.cancel_scope.cancel()


async def test_a_follower_sends_the_result_on_to_the_leader_it_names(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        await cluster.server("s2")
        await cluster.server("s3")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        await cluster.kill("s1")
        cluster.server_names.remove("s3")  # gossip has not heard of s3 yet
        cluster.leader = "s3"  # s2 names it
        start = trio.current_time()
        await a1.finish(dispatch.execution.id)
        with trio.fail_after(60):
            await cluster.until(lambda: cluster.committed)
        assert cluster.ids("s3") == [dispatch.execution.id]
        assert trio.current_time() - start < 0.01  # no backoff round was needed
        nursery.cancel_scope.cancel()


async def test_when_the_leader_is_gone_the_result_is_retried_until_a_server_commits_it(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        await cluster.server("s2")
        await cluster.server("s3")
        a1 = await cluster.agent("a1")
        cluster.leader = "s1"
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        await cluster.kill("s1")
        cluster.leader = None  # an election is under way: nobody can commit
        finished = await a1.finish(dispatch.execution.id)
        await trio.sleep(20)
        assert cluster.committed == []
        assert a1.service.pending == [finished]
        assert a1.service.statistics().report_failures >= 10  # retried, with backoff...
        calls = cluster.commit_calls
        assert calls <= 2 * 20 / 2.5 + 10  # ...capped near REPORT_BACKOFF_MAX, not a busy loop
        state = await cluster.nodes["s2"].dispatcher.query("a1")
        assert [r.execution_id for r in state.pending] == [dispatch.execution.id]
        cluster.leader = "s2"
        await cluster.until(lambda: cluster.committed)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.committed == [("s2", finished)]
        assert a1.service.pending == []
        nursery.cancel_scope.cancel()


async def test_a_new_leader_heard_of_is_tried_at_once(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        await cluster.kill("s1")
        await a1.finish(dispatch.execution.id)
        await trio.sleep(60)  # the backoff has grown to its cap
        cluster.leader = "s2"
        asked = trio.current_time()
        await s2.dispatcher.query("a1", term=2)  # the new leader reconciles
        await cluster.until(lambda: cluster.committed)
        assert trio.current_time() - asked < 0.01
        nursery.cancel_scope.cancel()


async def test_a_result_that_can_never_commit_is_dropped(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        cluster.leader = "s1"
        cluster.commit_error = ValidationError("execution id is not valid")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        await a1.finish(dispatch.execution.id)
        await trio.testing.wait_all_tasks_blocked()
        assert a1.service.statistics().results_rejected == 1
        assert a1.service.pending == []
        assert cluster.commit_calls == 1
        nursery.cancel_scope.cancel()


async def test_the_query_lists_active_and_pending_runs(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        running = cluster.dispatch("a1", leader="s1", term=1)
        done = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", running)
        await s1.dispatcher.send("a1", done)
        await a1.finish(done.execution.id)  # s1 does not lead: the result waits
        state = await s1.dispatcher.query("a1")
        assert state.node == "a1"
        assert [r.execution_id for r in state.active] == [running.execution.id]
        assert [(r.job_name, r.execution_id) for r in state.pending] == [
            ("backup", done.execution.id)
        ]
        assert (state.term, state.leader) == (1, "s1")
        nursery.cancel_scope.cancel()


async def test_the_pending_results_are_bounded(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        transport = cluster.net.transport(NodeId("a1"))
        runner = FakeRunner()
        service = RunnerService(
            node_name="a1",
            transport=transport,
            runner=runner,
            servers=cluster.servers,
            rng=random.Random(0),
            max_pending_results=2,
        )
        await nursery.start(transport.serve)
        await nursery.start(service.run)
        ids = []
        for _ in range(3):
            dispatch = cluster.dispatch("a1", leader="s1", term=1)
            await s1.dispatcher.send("a1", dispatch)
            runner.active.pop(dispatch.execution.id)
            ids.append(dispatch.execution.id)
            await service.report(
                RunFinished(
                    job_name="backup",
                    execution_id=dispatch.execution.id,
                    finished_at=T0,
                    success=True,
                    output="",
                )
            )
        assert [f.execution_id for f in service.pending] == ids[1:]
        assert service.statistics().results_dropped == 1
        nursery.cancel_scope.cancel()


async def test_a_slow_leader_never_blocks_the_runner(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        s2 = await cluster.server("s2")
        a1 = await cluster.agent("a1")
        cluster.leader = "s1"
        cluster.commit_hangs = True
        hang = trio.Event()

        async def slow_output(src: NodeId, payload: bytes) -> bytes:
            await hang.wait()
            return b""

        s1.transport.unregister(OUTPUT_METHOD)
        s1.transport.register(OUTPUT_METHOD, slow_output)
        first = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", first)
        start = trio.current_time()
        for i in range(100):
            a1.service.on_output(first.execution, f"chunk {i}\n")
        await a1.finish(first.execution.id)
        assert trio.current_time() == start  # neither output nor the report waited
        await trio.sleep(OUTPUT_TIMEOUT + 1)
        assert a1.service.statistics().output_batches_dropped >= 1
        # meanwhile the runner goes on: another leader's dispatch is taken at once
        second = cluster.dispatch("a1", leader="s2", term=2)
        start = trio.current_time()
        await s2.dispatcher.send("a1", second)
        assert trio.current_time() == start
        assert a1.runner.submitted == [first.execution.id, second.execution.id]
        cluster.commit_hangs = False
        cluster.leader = "s2"
        await cluster.until(lambda: cluster.committed)
        assert cluster.ids() == [first.execution.id]
        hang.set()
        nursery.cancel_scope.cancel()


async def test_a_dead_leader_never_blocks_the_runner(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        cluster.net.isolate(NodeId("s1"))
        start = trio.current_time()
        for i in range(10):
            a1.service.on_output(dispatch.execution, f"{i}")
        await a1.finish(dispatch.execution.id)
        assert trio.current_time() == start
        await trio.sleep(1)
        stats = a1.service.statistics()
        assert stats.output_chunks_dropped == 10
        assert stats.output_chunks_sent == 0
        assert stats.results_pending == 1
        nursery.cancel_scope.cancel()


async def test_output_lost_on_the_way_shows_as_a_gap_and_later_chunks_still_arrive(
    autojump_clock,
):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        a1.service.on_output(dispatch.execution, "first")
        await cluster.until(lambda: len(cluster.outputs) == 1)
        await trio.testing.wait_all_tasks_blocked()  # its answer is back
        cluster.net.cut(NodeId("a1"), NodeId("s1"))
        a1.service.on_output(dispatch.execution, "lost")
        await trio.sleep(1)
        cluster.net.heal()
        a1.service.on_output(dispatch.execution, "after")
        await cluster.until(lambda: len(cluster.outputs) == 2)
        assert [o[3] for o in cluster.outputs] == ["first", "after"]
        assert s1.dispatcher.statistics().output_gaps == 1
        assert a1.service.statistics().output_batches_dropped == 1
        nursery.cancel_scope.cancel()


async def test_send_retries_while_the_node_is_unreachable(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        cluster.net.cut(NodeId("s1"), NodeId("a1"))

        async def heal_soon() -> None:
            await trio.sleep(0.3)
            cluster.net.heal()

        nursery.start_soon(heal_soon)
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        await s1.dispatcher.send("a1", dispatch)
        assert a1.runner.submitted == [dispatch.execution.id]
        assert s1.dispatcher.statistics().retries >= 1
        cluster.net.cut(NodeId("s1"), NodeId("a1"))
        retries = s1.dispatcher.statistics().retries
        with pytest.raises(PeerUnreachable):
            await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=1))
        stats = s1.dispatcher.statistics()
        assert (stats.failed, stats.retries) == (1, retries + DISPATCH_ATTEMPTS - 1)
        assert len(a1.runner.submitted) == 1
        nursery.cancel_scope.cancel()


class LossyTransport:
    """Wraps a transport: the next DISPATCH call raises ConnectionLost, after delivering
    the request (``deliver=True``: the reply was lost) or without (the request was)."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.node_id = inner.node_id
        self.lose: bool | None = None  # None: no loss; else deliver before losing?

    def register(self, method, handler) -> None:
        self.inner.register(method, handler)

    def unregister(self, method) -> None:
        self.inner.unregister(method)

    async def call(self, peer, method, payload, *, timeout=5.0):  # noqa: ASYNC109
        if method == DISPATCH_METHOD and self.lose is not None:
            deliver, self.lose = self.lose, None
            if deliver:
                await self.inner.call(peer, method, payload, timeout=timeout)
            raise ConnectionLost(f"{peer}: connection lost")
        return await self.inner.call(peer, method, payload, timeout=timeout)


@pytest.mark.parametrize("delivered", [True, False])
async def test_a_dispatch_of_unknown_outcome_is_confirmed_never_resent(autojump_clock, delivered):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        a1 = await cluster.agent("a1")
        transport = LossyTransport(cluster.net.transport(NodeId("s1")))
        dispatcher = Dispatcher(
            node_name="s1",
            transport=transport,
            on_output=lambda *_: None,
            commit=cluster._commit_on("s1"),
            rng=random.Random(0),
        )
        await nursery.start(transport.inner.serve)
        await nursery.start(dispatcher.run)
        transport.lose = delivered
        dispatch = cluster.dispatch("a1", leader="s1", term=1)
        if delivered:
            await dispatcher.send("a1", dispatch)  # the node has it: that is a success
            assert a1.runner.submitted == [dispatch.execution.id]
        else:
            with pytest.raises(ConnectionLost):
                await dispatcher.send("a1", dispatch)
            assert a1.runner.submitted == []  # not sent again: it may not run twice
        nursery.cancel_scope.cancel()


async def test_malformed_payloads_are_refused_and_counted_never_crash(autojump_clock):
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        for payload in (b"", b"\x93\x01\x07", b"\xff" * 10):
            answer = decode(await s1.transport.call(NodeId("a1"), DISPATCH_METHOD, payload))
            assert isinstance(answer, DispatchAnswer)
            assert not answer.accepted and answer.reason.startswith("malformed dispatch: ")
            ack = decode(await a1.transport.call(NodeId("s1"), OUTPUT_METHOD, payload))
            assert isinstance(ack, Ack) and not ack.ok
            assert ack.error.startswith("malformed output batch: ")
            report = decode(await a1.transport.call(NodeId("s1"), REPORT_METHOD, payload))
            assert isinstance(report, ReportAnswer) and report.committed == ()
            assert report.error.startswith("malformed report: ")
            with pytest.raises(RemoteError, match="DispatchWireError"):
                await s1.transport.call(NodeId("a1"), QUERY_METHOD, payload)
        assert a1.service.statistics().malformed == 6
        assert s1.dispatcher.statistics().malformed == 6
        # and both still work
        await s1.dispatcher.send("a1", cluster.dispatch("a1", leader="s1", term=1))
        assert len(a1.runner.submitted) == 1
        nursery.cancel_scope.cancel()


async def test_a_dispatch_arriving_after_its_expiry_is_refused_and_never_runs(autojump_clock):
    """A dispatch held up in the network (a partition's TCP buffers) arrives after the
    leader gave up on it and recorded the run failed: the runner must not start it."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        s1 = await cluster.server("s1")
        a1 = await cluster.agent("a1")
        now = datetime.now(UTC)  # the runner service reads the wall clock by default
        late = attrs.evolve(
            cluster.dispatch("a1", leader="s1", term=2), expires_at=now - timedelta(seconds=3)
        )
        with pytest.raises(DispatchRefused, match="the dispatch expired at .* before it arrived"):
            await s1.dispatcher.send("a1", late)
        assert a1.runner.submitted == []
        in_time = attrs.evolve(
            cluster.dispatch("a1", leader="s1", term=2), expires_at=now + timedelta(hours=1)
        )
        await s1.dispatcher.send("a1", in_time)
        assert a1.runner.submitted == [in_time.execution.id]
        stats = a1.service.statistics()
        assert (stats.refused, stats.accepted) == (1, 1)
        nursery.cancel_scope.cancel()
