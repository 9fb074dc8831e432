"""Runs dispatched to other nodes by tags, on trio's MockClock: three servers and an agent
over the in-memory Raft and gossip networks."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import trio
import trio.testing

from trickle import Engine, EngineConfig, ExecutionContext, Job
from trickle.engine.clock import TrioClock
from trickle.engine.model import Execution
from trickle.gossip.config import local
from trickle.raft.messages import NodeId
from trickle.testing.engines import EngineGroup, wait_alive
from trickle.testing.gossipnet import MemoryNetwork as GossipNetwork
from trickle.testing.raftnet import MemoryNetwork as RaftNetwork

START = datetime(2026, 1, 1, tzinfo=UTC)
SERVERS = ("a", "b", "c")
PEERS = {name: f"{name}.invalid:6868" for name in SERVERS}
ADDRESSES = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "x": "10.0.0.9"}


class Cluster(EngineGroup):
    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery)
        self.raft = RaftNetwork()
        self.gossip = GossipNetwork(rng=random.Random(3))
        self.clock = TrioClock(START)
        self.ran: list[tuple[str, str]] = []  # (node, job)
        self.release = trio.Event()  # lets "block" runs finish
        self.blocking = trio.Event()  # set when a "block" run started

    async def start(self, name: str, *, tags: dict[str, str] | None = None) -> Engine:
        server = name in SERVERS
        engine = Engine(
            EngineConfig(
                data_dir=None,
                node_name=name,
                server=server,
                peers=PEERS if server else {},
                join=() if name == "a" else (f"{ADDRESSES['a']}:8946",),
                tags=tags or {},
            ),
            clock=self.clock,
            rng=random.Random(sorted(ADDRESSES).index(name)),
            raft_transport=self.raft.transport(NodeId(name)),
            gossip_transport=self.gossip.transport((ADDRESSES[name], 8946)),
            gossip_config=local(),
        )

        async def record(ctx: ExecutionContext) -> None:
            self.ran.append((name, ctx.execution.job_name))
            ctx.output.write(f"hello from {name}\n")

        async def block(ctx: ExecutionContext) -> None:
            self.ran.append((name, ctx.execution.job_name))
            ctx.output.write("started\n")
            self.blocking.set()
            await self.release.wait()

        engine.register_executor("record", record)
        engine.register_executor("block", block)
        return await self.run(name, engine)


async def finished(engine: Engine, job: str, count: int = 1) -> list[Execution]:
    """The job's first ``count`` finished executions, waiting on execution events."""
    with trio.fail_after(60), engine.subscribe(kinds=["execution_finished"], jobs=[job]) as ev:
        while True:
            executions, _ = await engine.list_executions(job)
            done = [e for e in executions if e.finished_at is not None]
            if len(done) >= count:
                return done
            await ev.receive()


async def start_cluster(nursery: trio.Nursery) -> tuple[Cluster, Engine]:
    cluster = Cluster(nursery)
    for name in SERVERS:
        await cluster.start(name)
    await cluster.start("x", tags={"gpu": "1"})
    leader = await cluster.leader()
    await wait_alive(leader, {*SERVERS, "x"})
    return cluster, leader


async def test_a_job_runs_on_the_node_its_tags_choose(autojump_clock: trio.testing.MockClock):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        output: list[str] = []

        async def watch(task_status: trio.TaskStatus[None]) -> None:
            with leader.subscribe(kinds=["execution_output"]) as events:
                task_status.started()
                async for event in events:
                    output.append(event.chunk)

        await nursery.start(watch)
        await leader.put_job(
            Job(name="gpu", schedule="@manually", executor="record", tags={"gpu": "1"})
        )
        await leader.run_job("gpu")
        [execution] = await finished(leader, "gpu")
        assert execution.node_name == "x" and execution.success
        assert "hello from x" in execution.output
        assert cluster.ran == [("x", "gpu")]
        assert "hello from x\n" in output  # streamed to the leader as printed
        nursery.cancel_scope.cancel()


async def test_every_server_shows_the_output_of_every_run_live_in_order(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        seen: dict[str, list[tuple[str, str, str]]] = {n: [] for n in SERVERS}
        outputs_seen = trio.Event()

        async def watch(name: str, task_status: trio.TaskStatus[None]) -> None:
            kinds = ["execution_started", "execution_output"]
            with cluster.engines[name].subscribe(kinds=kinds, jobs=["all"]) as events:
                task_status.started()
                async for event in events:
                    assert event.execution is not None
                    seen[name].append((event.kind, event.execution.node_name, event.chunk))
                    if all(
                        sum(k == "execution_output" for k, _, _ in s) == 4 for s in seen.values()
                    ):
                        outputs_seen.set()

        for name in SERVERS:
            await nursery.start(watch, name)
        await leader.put_job(Job(name="all", schedule="@manually", executor="block"))
        await leader.run_job("all")
        with trio.fail_after(30):
            await outputs_seen.wait()  # while every run still blocks: live, not at the end
        for name in SERVERS:
            for node in ("a", "b", "c", "x"):  # the leader's own run, the others', the agent's
                assert [(k, c) for k, n, c in seen[name] if n == node] == [
                    ("execution_started", ""),
                    ("execution_output", "started\n"),
                ], (name, node)
        for name in SERVERS:  # /v1/busy: every run in the cluster, with its output so far
            engine = cluster.engines[name]
            everywhere = engine.busy(cluster=True)
            assert sorted(b.execution.node_name for b in everywhere) == ["a", "b", "c", "x"]
            assert {b.output_tail for b in everywhere} == {"started\n"}
            assert [b.execution.node_name for b in engine.busy()] == [name]  # its own
        cluster.release.set()
        await finished(leader, "all", count=4)
        for name in SERVERS:
            await cluster.engines[name].list_jobs()  # caught up
            assert cluster.engines[name].busy(cluster=True) == []
        nursery.cancel_scope.cancel()


async def test_a_run_the_node_refuses_is_recorded_failed_with_its_reason_once(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        service = cluster.engines["x"]._runner_service
        assert service is not None
        service.note_leader(10_000, "elsewhere")  # x has heard of a newer leader
        await leader.put_job(
            Job(name="gpu", schedule="@manually", executor="record", tags={"gpu": "1"})
        )
        await leader.run_job("gpu")
        [execution] = await finished(leader, "gpu")
        assert not execution.success and cluster.ran == []
        assert execution.output.count("refused the run") == 1, execution.output
        assert execution.output.startswith("node x refused the run: stale term")
        nursery.cancel_scope.cancel()


async def test_a_server_that_no_longer_leads_dispatches_nothing(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        follower = next(e for n, e in cluster.engines.items() if n in SERVERS and e is not leader)
        assert follower._dispatcher is not None
        job = Job(name="gpu", schedule="@manually", executor="record", tags={"gpu": "1"})
        execution = Execution(
            id="20260101000000000000-x",
            job_name="gpu",
            node_name="x",
            group=1,
            started_at=START,
        )
        follower._dispatch(job, execution)  # as a leader deposed since the intent committed
        await trio.testing.wait_all_tasks_blocked()
        stats = follower._dispatcher.statistics()
        assert stats.sent == stats.refused == stats.failed == 0  # nothing sent at all
        assert cluster.ran == []
        nursery.cancel_scope.cancel()


async def test_a_job_without_tags_runs_on_every_node(autojump_clock: trio.testing.MockClock):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        await leader.put_job(Job(name="all", schedule="@manually", executor="record"))
        await leader.run_job("all")
        executions = await finished(leader, "all", count=4)
        assert sorted(e.node_name for e in executions) == ["a", "b", "c", "x"]
        assert all(e.success for e in executions)
        nursery.cancel_scope.cancel()


async def test_a_run_on_a_node_that_dies_is_recorded_failed(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        await leader.put_job(
            Job(name="long", schedule="@manually", executor="block", tags={"gpu": "1"})
        )
        await leader.run_job("long")
        with trio.fail_after(30):
            await cluster.blocking.wait()
        assert ("x", "long") in cluster.ran
        cluster.gossip.kill((ADDRESSES["x"], 8946))
        await cluster.stop("x")
        [execution] = await finished(leader, "long")
        assert not execution.success
        assert "node x failed during execution" in execution.output
        nursery.cancel_scope.cancel()


async def test_a_fire_no_node_matches_is_recorded_as_skipped_with_the_reason(
    autojump_clock: trio.testing.MockClock,
):
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        with leader.subscribe(kinds=["fire_skipped"], jobs=["nowhere"]) as skips:
            await leader.put_job(
                Job(name="nowhere", schedule="@every 10s", executor="record", tags={"gpu": "2"})
            )
            with trio.fail_after(60):
                await skips.receive()
        job = await leader.get_job("nowhere")
        assert job.skipped_count >= 1 and job.last_skipped is not None
        assert "no alive member matches tags gpu=2" in job.last_skip_reason
        follower = next(e for n, e in cluster.engines.items() if n in SERVERS and e is not leader)
        assert (await follower.get_job("nowhere")).skipped_count >= job.skipped_count
        executions, _ = await leader.list_executions("nowhere")
        assert executions == [] and cluster.ran == []
        nursery.cancel_scope.cancel()


async def test_a_node_that_restarts_before_it_is_declared_failed_has_its_lost_runs_failed(
    autojump_clock: trio.testing.MockClock,
):
    """An agent killed and restarted at once is never declared failed: the leader sees
    its new boot tag, asks it what it runs, and fails the run it lost, rather than
    leaving it running for good."""
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        await leader.put_job(
            Job(name="long", schedule="@manually", executor="block", tags={"gpu": "1"})
        )
        await leader.run_job("long")
        with trio.fail_after(30):
            await cluster.blocking.wait()
        await cluster.stop("x")  # gone without a word
        await cluster.start("x", tags={"gpu": "1"})  # and back, empty, at once
        [execution] = await finished(leader, "long")
        assert not execution.success
        assert "node x no longer knows the run" in execution.output
        assert [m.status for m in leader.members() if m.name == "x"] == ["alive"]
        nursery.cancel_scope.cancel()


async def test_a_fire_committed_ahead_by_a_leader_gone_before_its_instant_runs_once(
    autojump_clock: trio.testing.MockClock,
):
    """The leader commits a fire's intent ahead of its instant and stops before the
    instant: the next leader asks the node, which never got it, and launches it, as the
    same execution, once (it used to be recorded failed: a run lost to a failover)."""
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        follower = next(e for n, e in cluster.engines.items() if n in SERVERS and e is not leader)
        held: list[Execution] = []
        any_held = trio.Event()
        hold = leader._hold

        def note_hold(ex: Execution, term: int) -> None:
            hold(ex, term)
            held.append(ex)
            any_held.set()

        leader._hold = note_hold  # type: ignore[method-assign]
        await leader.put_job(
            Job(name="gpu", schedule="@every 10s", executor="record", tags={"gpu": "1"})
        )
        with trio.fail_after(60):
            await any_held.wait()
        [committed] = held
        assert committed.scheduled_at is not None
        assert leader.clock.now() < committed.scheduled_at  # committed, not yet launched
        await cluster.stop(leader.node_name)
        await follower.toggle_job("gpu")  # disabled: one fire is enough
        [execution] = await finished(follower, "gpu")
        assert execution.id == committed.id and execution.success, execution.output
        assert cluster.ran == [("x", "gpu")]
        assert (await cluster.leader()).statistics().runs_relaunched == 1
        nursery.cancel_scope.cancel()


async def test_a_leader_a_newer_leader_asked_does_not_start_its_own_runs(
    autojump_clock: trio.testing.MockClock,
):
    """Once a newer leader has asked this node what it runs, a run this (deposed, not yet
    aware) leader committed for itself is that leader's to settle: not started here."""
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        service = leader._runner_service
        assert service is not None
        await leader.put_job(Job(name="own", schedule="@manually", executor="record"))
        service.note_leader(leader._lead_term + 1, "elsewhere")  # as a newer leader's query
        execution = Execution(
            id="20260101000000000000-" + leader.node_name,
            job_name="own",
            node_name=leader.node_name,
            group=1,
            started_at=START,
        )
        leader._dispatch(leader._fsm.jobs["own"], execution)
        await trio.testing.wait_all_tasks_blocked()
        assert cluster.ran == [] and not service.knows(execution.id)
        nursery.cancel_scope.cancel()


async def test_any_one_server_is_a_server_the_leader_can_reach(
    autojump_clock: trio.testing.MockClock,
):
    """A server the leader cannot connect to, while gossip still calls it alive (a server
    killed a moment ago, before its failure is detected): a fire for "any one server" goes
    to another one, where Dkron would pick it and record the run failed."""
    async with trio.open_nursery() as nursery:
        cluster, leader = await start_cluster(nursery)
        lost = next(n for n in SERVERS if n != leader.node_name)
        cluster.raft.cut(NodeId(leader.node_name), NodeId(lost))
        assert lost in {m.name for m in leader.members() if m.status == "alive"}
        one_server = {"server": "true:1"}
        await leader.put_job(
            Job(name="manual", schedule="@manually", executor="record", tags=one_server)
        )
        for _ in range(12):
            await leader.run_job("manual")
        await leader.put_job(
            Job(name="every", schedule="@every 1s", executor="record", tags=one_server)
        )
        for name in ("manual", "every"):
            executions = await finished(leader, name, count=12)
            assert [(e.node_name, e.output) for e in executions if not e.success] == []
            assert lost not in {e.node_name for e in executions}
        assert lost in {m.name for m in leader.members() if m.status == "alive"}
        nursery.cancel_scope.cancel()


async def test_with_launch_spin_a_run_of_another_node_is_sent_at_its_instant_not_early(
    autojump_clock: trio.testing.MockClock,
):
    class SpinningClock(TrioClock):
        def spin_until(self, when: datetime) -> None:
            pass  # the engine launches its own runs early; another node's are not

    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        cluster.clock = SpinningClock(START)
        for name in SERVERS:
            await cluster.start(name)
        x = await cluster.start("x", tags={"gpu": "1"})
        leader = await cluster.leader()
        await wait_alive(leader, {*SERVERS, "x"})
        called: list[datetime] = []

        async def when(ctx: ExecutionContext) -> None:
            called.append(cluster.clock.now())

        x.register_executor("when", when)
        for engine in cluster.engines.values():
            if engine is not x:
                engine.register_executor("when", when)
        await leader.put_job(
            Job(name="gpu", schedule="@every 10s", executor="when", tags={"gpu": "1"})
        )
        [execution] = await finished(leader, "gpu")
        assert execution.node_name == "x"
        assert called == [execution.scheduled_at]  # not launch_spin before it
        nursery.cancel_scope.cancel()
