"""The membership reconciler and the bootstrap waiter on MockClock: against a scripted fake
Raft (what is proposed, when, and how failures are retried), then against real Raft
drivers over the in-memory network (servers joining, leaving, failing; a cluster that
lost its quorum recovered down to one server that others join again)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import msgpack
import pytest
import trio
import trio.testing

from trickle.engine.membership import (
    ALIVE,
    FAILED,
    LEFT,
    BootstrapWaiter,
    MembershipReconciler,
    ServerView,
    recover_storage,
)
from trickle.errors import (
    ConfChangeRejected,
    EngineClosed,
    NotLeader,
    ProposalDropped,
    ValidationError,
)
from trickle.raft._conf import apply_change
from trickle.raft._progress import ProgressState
from trickle.raft.core import Progress, Role, Status
from trickle.raft.driver import DEFAULT_CONFIG, ProposalUnknown, RaftDriver
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    NodeId,
    Snapshot,
)
from trickle.raft.storage import MemoryStorage
from trickle.testing.raftnet import MemoryNetwork

ADD, PROMOTE, REMOVE = ConfChangeOp.ADD_LEARNER, ConfChangeOp.PROMOTE, ConfChangeOp.REMOVE
INTERVAL = 10.0
HANG = "hang"


def conf(voters: str, learners: str = "") -> ConfState:
    return ConfState(
        voters=frozenset(NodeId(n) for n in voters.split(",") if n),
        learners=frozenset(NodeId(n) for n in learners.split(",") if n),
    )


def view(name: str, status: str = ALIVE, **kwargs: object) -> ServerView:
    kwargs.setdefault("rpc_addr", f"{name}.example:6868")
    return ServerView(name=name, status=status, **kwargs)  # type: ignore[arg-type]


class Gossip:
    """The servers gossip shows, changed by the test."""

    def __init__(self, *views: ServerView) -> None:
        self.views = {v.name: v for v in views}

    def set(self, *views: ServerView) -> None:
        for v in views:
            self.views[v.name] = v

    def __call__(self) -> list[ServerView]:
        return list(self.views.values())


class FakeRaft:
    """A leader whose changes take ``commit_delay`` to apply; ``script`` scripts the
    outcome of the next proposals (an exception to raise, HANG, or None: apply it).
    Members it adds hold every entry at once (caught up)."""

    def __init__(
        self,
        start: ConfState,
        *,
        me: str = "a",
        role: Role = Role.LEADER,
        commit: int = 100,
        apply: bool = True,
    ) -> None:
        self.conf = start
        self.me = NodeId(me)
        self.role = role
        self.commit = commit
        self.apply = apply
        self.match = {n: commit for n in start.voters | start.learners}
        self.script: list[BaseException | str | None] = []
        self.proposed: list[tuple[float, ConfChange]] = []
        self.transferee: NodeId | None = None
        self.closed = False
        self.commit_delay = 0.01
        self._changed = trio.Event()

    async def until(self, check: Callable[[], bool]) -> None:
        """Return once ``check()`` holds (looked at after every proposal's outcome)."""
        while not check():
            await self._changed.wait()

    def _settled(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def status(self) -> Status:
        if self.closed:
            raise EngineClosed()
        progress = {
            NodeId(n): Progress(
                match=self.match.get(n, 0),
                next=self.match.get(n, 0) + 1,
                state=ProgressState.REPLICATE,
                learner=n in self.conf.learners,
                recent_active=True,
            )
            for n in self.conf.voters | self.conf.learners
        }
        return Status(
            id=self.me,
            role=self.role,
            term=2,
            vote=self.me,
            leader=self.me if self.role is Role.LEADER else None,
            commit=self.commit,
            applied=self.commit,
            first_index=1,
            last_index=self.commit,
            conf=self.conf,
            progress=progress if self.role is Role.LEADER else {},
            transferee=self.transferee,
            dropped_messages=0,
        )

    async def propose_conf_change(self, change: ConfChange) -> object:
        self.proposed.append((trio.current_time(), change))
        outcome = self.script.pop(0) if self.script else None
        try:
            if outcome == HANG:
                await trio.sleep_forever()
            if isinstance(outcome, BaseException):
                raise outcome
            await trio.sleep(self.commit_delay)
            if self.apply:
                self.conf = apply_change(self.conf, change)
                self.match.setdefault(change.node, self.commit)
            return None
        finally:
            self._settled()

    def changes(self) -> list[tuple[str, str]]:
        return [(c.op.name, c.node) for _, c in self.proposed]

    def times(self) -> list[float]:
        return [t for t, _ in self.proposed]


async def started(nursery: trio.Nursery, reconciler: MembershipReconciler) -> None:
    await nursery.start(reconciler.run)
    await trio.testing.wait_all_tasks_blocked()


# -- against a fake Raft ---------------------------------------------------------------------


async def test_new_servers_are_added_and_promoted_one_change_at_a_time(autojump_clock):
    raft = FakeRaft(conf("a"))
    gossip = Gossip(view("a"), view("c"), view("b"))
    reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await raft.until(lambda: raft.conf == conf("a,b,c"))
        assert raft.changes() == [
            ("ADD_LEARNER", "b"),
            ("PROMOTE", "b"),
            ("ADD_LEARNER", "c"),
            ("PROMOTE", "c"),
        ]
        assert raft.conf == conf("a,b,c")
        assert trio.current_time() < 1  # each change follows the last without waiting
        assert raft.proposed[0][1].context == b"b.example:6868"
        stats = reconciler.statistics()
        assert stats.applied == 4 and stats.failed == 0
        assert stats.last_change == "promote c"
        nursery.cancel_scope.cancel()


async def test_a_membership_event_is_acted_on_at_once_after_wake(autojump_clock):
    raft = FakeRaft(conf("a,b,c"))
    gossip = Gossip(view("a"), view("b"), view("c"))
    reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        assert raft.proposed == []
        await trio.sleep(3)
        gossip.set(view("c", LEFT))
        reconciler.wake()
        await raft.until(lambda: raft.conf == conf("a,b"))
        assert raft.changes() == [("REMOVE", "c")]
        assert raft.times() == [3]
        nursery.cancel_scope.cancel()


async def test_without_wake_a_change_waits_for_the_interval(autojump_clock):
    raft = FakeRaft(conf("a,b"))
    gossip = Gossip(view("a"), view("b"))
    reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await trio.sleep(1)
        gossip.set(view("d"))  # no wake: e.g. an event lost
        await trio.sleep(INTERVAL + 1)
        assert raft.changes() == [("ADD_LEARNER", "d"), ("PROMOTE", "d")]
        assert raft.times()[0] == INTERVAL
        nursery.cancel_scope.cancel()


async def test_a_rejected_change_is_retried_after_the_retry_delay(autojump_clock):
    raft = FakeRaft(conf("a"))
    raft.script = [ConfChangeRejected("the membership change at index 7 is not committed yet")]
    reconciler = MembershipReconciler(raft, Gossip(view("a"), view("b")), retry_delay=1.0)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await raft.until(lambda: raft.conf == conf("a,b"))
        assert raft.changes() == [("ADD_LEARNER", "b"), ("ADD_LEARNER", "b"), ("PROMOTE", "b")]
        assert raft.times()[:2] == [0, 1.0]
        stats = reconciler.statistics()
        assert stats.failed == 1 and stats.applied == 2
        assert "not committed yet" in stats.last_error
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "error",
    [
        NotLeader("b"),
        ProposalDropped("transfer in progress"),
        ProposalUnknown("forwarded to b, no answer"),
        ConfChangeRejected("cannot add_learner b: b is already a learner"),
        ValidationError("something unexpected"),
    ],
    ids=type,
)
async def test_failures_back_off_exponentially_up_to_the_interval(autojump_clock, error):
    raft = FakeRaft(conf("a"))
    raft.script = [error] * 6
    reconciler = MembershipReconciler(
        raft, Gossip(view("a"), view("b")), interval=INTERVAL, retry_delay=1.0
    )
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await raft.until(lambda: raft.conf == conf("a,b"))
        times = raft.times()
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert gaps[:6] == pytest.approx([1, 2, 4, 8, 10, 10])
        assert raft.conf == conf("a,b")  # the seventh attempt went through
        assert reconciler.statistics().failed == 6
        nursery.cancel_scope.cancel()


async def test_wakes_do_not_shorten_the_wait_after_a_failure(autojump_clock):
    raft = FakeRaft(conf("a"))
    raft.script = [NotLeader(None)]
    reconciler = MembershipReconciler(raft, Gossip(view("a"), view("b")), retry_delay=2.0)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        for _ in range(20):  # a storm of membership events
            reconciler.wake()
            await trio.sleep(0.05)
        await raft.until(lambda: len(raft.proposed) >= 2)
        assert raft.times()[:2] == [0, 2.0]
        nursery.cancel_scope.cancel()


async def test_a_change_that_is_not_applied_in_time_is_retried(autojump_clock):
    raft = FakeRaft(conf("a"))
    raft.script = [HANG]
    reconciler = MembershipReconciler(
        raft, Gossip(view("a"), view("b")), propose_timeout=5.0, retry_delay=1.0
    )
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await raft.until(lambda: raft.conf == conf("a,b"))
        assert raft.times()[:2] == [0, 6.0]
        assert "not applied within 5 s" in reconciler.statistics().last_error
        assert raft.conf == conf("a,b")
        nursery.cancel_scope.cancel()


async def test_a_change_that_changes_nothing_is_not_proposed_in_a_hot_loop(autojump_clock):
    raft = FakeRaft(conf("a"), apply=False)  # "applied", yet the configuration stays
    gossip = Gossip(view("a"), view("b"))
    reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        await trio.sleep(120)
        assert len(raft.proposed) == 1
        stats = reconciler.statistics()
        assert "planned again right after it was applied" in stats.last_error
        assert 5 <= stats.failed <= 15  # looked at again, backing off up to the interval
        gossip.set(view("b", LEFT), view("c"))  # the plan changes: the reconciler goes on
        reconciler.wake()
        await raft.until(lambda: len(raft.proposed) == 2)
        assert raft.changes()[1] == ("ADD_LEARNER", "c")
        nursery.cancel_scope.cancel()


async def test_a_failed_server_is_never_removed_however_long_it_stays_failed(autojump_clock):
    raft = FakeRaft(conf("a,b,c", "d"))
    gossip = Gossip(view("a"), view("b"), view("c", FAILED), view("d", FAILED))
    reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        for _ in range(10):
            reconciler.wake()
            await trio.sleep(360)
        assert raft.proposed == []
        assert reconciler.statistics().rounds >= 10
        nursery.cancel_scope.cancel()


async def test_a_follower_or_a_leader_handing_over_changes_nothing(autojump_clock):
    follower = FakeRaft(conf("a,b"), role=Role.FOLLOWER)
    handing = FakeRaft(conf("a,b"))
    handing.transferee = NodeId("b")
    gossip = Gossip(view("a"), view("b", LEFT), view("c"))
    async with trio.open_nursery() as nursery:
        for raft in (follower, handing):
            reconciler = MembershipReconciler(raft, gossip, interval=INTERVAL)
            await started(nursery, reconciler)
            reconciler.wake()
            await trio.sleep(INTERVAL * 3)
            assert raft.proposed == []
            assert reconciler.statistics().rounds == 0
        nursery.cancel_scope.cancel()


async def test_the_reconciler_returns_when_the_driver_stops(autojump_clock):
    raft = FakeRaft(conf("a"))
    reconciler = MembershipReconciler(raft, Gossip(view("a")), interval=INTERVAL)
    async with trio.open_nursery() as nursery:
        await started(nursery, reconciler)
        raft.closed = True
        reconciler.wake()
    # the nursery closed by itself: run() returned


async def test_the_driver_stopping_during_a_proposal_ends_the_reconciler(autojump_clock):
    raft = FakeRaft(conf("a"))
    raft.script = [EngineClosed()]
    reconciler = MembershipReconciler(raft, Gossip(view("a"), view("b")))
    with trio.fail_after(1):
        await reconciler.run()
    assert raft.changes() == [("ADD_LEARNER", "b")]


@pytest.mark.parametrize(
    "options",
    [{"interval": 0}, {"retry_delay": -1}, {"propose_timeout": 0}, {"catch_up_slack": -1}],
)
def test_reconciler_settings_are_checked(options):
    with pytest.raises(ValidationError):
        MembershipReconciler(FakeRaft(conf("a")), Gossip(), **options)


# -- the bootstrap waiter --------------------------------------------------------------------


def expecting(name: str, status: str = ALIVE, expect: int = 3, formed: bool = False):
    return ServerView(name=name, status=status, expect=expect, raft_formed=formed)


async def test_the_waiter_bootstraps_once_the_expected_servers_stay_in_sight(autojump_clock):
    gossip = Gossip(expecting("a"))
    waiter = BootstrapWaiter("a", 3, gossip, settle=2.0, poll=1.0)
    result: list[ConfState | None] = []

    async def wait() -> None:
        result.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(5)
        gossip.set(expecting("b"))
        waiter.wake()
        await trio.sleep(5)
        assert result == []
        gossip.set(expecting("c"))
        waiter.wake()
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
    assert result == [conf("a,b,c")]
    assert trio.current_time() - start == pytest.approx(2.0)


async def test_a_server_showing_up_while_settling_stops_the_bootstrap(autojump_clock, caplog):
    gossip = Gossip(expecting("a"), expecting("b"), expecting("c"))
    waiter = BootstrapWaiter("a", 3, gossip, settle=2.0)
    result: list[ConfState | None] = []

    async def wait() -> None:
        result.append(await waiter.wait())

    with caplog.at_level(logging.ERROR, logger="trickle.engine.membership"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(1)
            gossip.set(expecting("d"))  # a fourth server with --bootstrap-expect 3
            waiter.wake()
            await trio.sleep(30)
            assert result == []
            gossip.set(expecting("d", LEFT))  # the operator stops it
            waiter.wake()
    assert result == [conf("a,b,c")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, not at every look
    assert "4 servers wait to bootstrap with --bootstrap-expect 3" in errors[0]


async def test_mismatched_expect_is_logged_and_waits_until_fixed(autojump_clock, caplog):
    gossip = Gossip(expecting("a"), expecting("b", expect=5), expecting("c"))
    waiter = BootstrapWaiter("a", 3, gossip, settle=1.0)
    result: list[ConfState | None] = []

    async def wait() -> None:
        result.append(await waiter.wait())

    with caplog.at_level(logging.ERROR, logger="trickle.engine.membership"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(60)
            assert result == []
            gossip.set(expecting("b"))  # restarted with the right value
            waiter.wake()
    assert result == [conf("a,b,c")]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "a has --bootstrap-expect 3 but b=5: every server started with --bootstrap-expect "
        "must be given the same value; nothing is bootstrapped until they agree"
    ]


async def test_a_formed_cluster_in_sight_means_join_at_once(autojump_clock):
    gossip = Gossip(expecting("a"), expecting("b"))
    waiter = BootstrapWaiter("a", 3, gossip)
    result: list[ConfState | None] = []

    async def wait() -> None:
        result.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(4)
        gossip.set(ServerView(name="old", status=ALIVE, raft_formed=True))
        waiter.wake()
        await trio.testing.wait_all_tasks_blocked()
        assert result == [None]
        assert trio.current_time() == 4


async def test_the_waiter_looks_at_gossip_every_poll_without_wakes(autojump_clock):
    gossip = Gossip(expecting("a", expect=2))
    waiter = BootstrapWaiter("a", 2, gossip, settle=0.0, poll=1.0)
    result: list[ConfState | None] = []

    async def wait() -> None:
        result.append(await waiter.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(2.5)
        gossip.set(expecting("b", expect=2))  # no wake
    assert result == [conf("a,b")]
    assert trio.current_time() == 3.0


def test_waiter_settings_are_checked():
    with pytest.raises(ValidationError, match="bootstrap_expect"):
        BootstrapWaiter("a", 0, Gossip())
    with pytest.raises(ValidationError, match="settle"):
        BootstrapWaiter("a", 1, Gossip(), settle=-1)
    with pytest.raises(ValidationError, match="poll"):
        BootstrapWaiter("a", 1, Gossip(), poll=0)


# -- against real Raft drivers ---------------------------------------------------------------

TICK = 0.025


class KvApp:
    """Entries b"key=value" into a dict; conf changes and no-ops are skipped."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.state: dict[bytes, bytes] = {}
        self._changed = changed

    async def apply(self, entries: Sequence[Entry]) -> list[object]:
        for entry in entries:
            if entry.kind is EntryKind.NORMAL and entry.data:
                key, _, value = entry.data.partition(b"=")
                self.state[key] = value
        self._changed()
        return [None] * len(entries)

    async def restore(self, snapshot: Snapshot) -> None:
        self.state = dict(msgpack.unpackb(snapshot.data))
        self._changed()

    async def snapshot(self) -> bytes:
        return msgpack.packb(self.state)


class Servers:
    """Raft drivers on one MemoryNetwork; each runs in its own cancel scope (stop = crash)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.net = MemoryNetwork(rng=random.Random(7))
        self.storage: dict[str, MemoryStorage] = {}
        self.drivers: dict[str, RaftDriver] = {}
        self.apps: dict[str, KvApp] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.starts = 0
        self._changed = trio.Event()

    def changed(self, *_: object) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, check: Callable[[], bool]) -> None:
        """Return once ``check()`` holds (looked at after every apply and conf change)."""
        while not check():
            await self._changed.wait()

    async def until_conf(self, name: str, expected: ConfState) -> None:
        await self.until(lambda: self.drivers[name].conf == expected)

    async def until_value(self, name: str, key: bytes, value: bytes) -> None:
        await self.until(lambda: self.apps[name].state.get(key) == value)

    async def start(self, name: str, bootstrap: ConfState | None) -> RaftDriver:
        self.starts += 1
        storage = self.storage.setdefault(name, MemoryStorage())
        app = self.apps[name] = KvApp(self.changed)
        transport = self.net.transport(NodeId(name))
        driver = self.drivers[name] = RaftDriver(
            NodeId(name),
            config=DEFAULT_CONFIG,
            storage=storage,
            transport=transport,
            app=app,
            tick_seconds=TICK,
            bootstrap=bootstrap,
            rng=random.Random(self.starts),
            storage_in_thread=False,
            on_conf=self.changed,
        )
        scope = self.scopes[name] = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    await inner.start(transport.serve)
                    await inner.start(driver.run)
                    task_status.started()

        await self.nursery.start(run)
        return driver

    def stop(self, name: str) -> None:
        self.scopes[name].cancel()


async def test_servers_joining_leaving_and_failing_with_real_drivers(autojump_clock):
    async with trio.open_nursery() as nursery:
        servers = Servers(nursery)
        n1 = await servers.start("n1", conf("n1"))
        await n1.wait_state(lambda s: s.role is Role.LEADER)
        await n1.propose(b"before=1")
        gossip = Gossip(view("n1"))
        reconciler = MembershipReconciler(n1, gossip, interval=INTERVAL)
        await nursery.start(reconciler.run)

        for name in ("n2", "n3"):  # servers with no Raft state join through gossip
            await servers.start(name, None)
            gossip.set(view(name))
            reconciler.wake()
        with trio.fail_after(5):
            await servers.until_conf("n1", conf("n1,n2,n3"))
            await n1.propose(b"after=3")
            await servers.until_conf("n3", conf("n1,n2,n3"))
            await servers.until_value("n3", b"after", b"3")
        assert servers.apps["n3"].state[b"before"] == b"1"  # caught up from the start

        # n3 leaves gracefully: removed; n2 then fails: kept (a partition must not shrink it)
        servers.stop("n3")
        gossip.set(view("n3", LEFT))
        reconciler.wake()
        with trio.fail_after(5):
            await servers.until_conf("n1", conf("n1,n2"))
        servers.stop("n2")
        gossip.set(view("n2", FAILED))
        reconciler.wake()
        await trio.sleep(60)
        assert n1.conf == conf("n1,n2")
        assert reconciler.statistics().applied == 5  # add+promote twice, one removal
        nursery.cancel_scope.cancel()


async def test_a_cluster_that_lost_its_quorum_is_recovered_and_others_join_again(autojump_clock):
    async with trio.open_nursery() as nursery:
        servers = Servers(nursery)
        three = conf("n1,n2,n3")
        for name in ("n1", "n2", "n3"):
            await servers.start(name, three)
        with trio.fail_after(5):
            leader = await servers.drivers["n1"].wait_leader()
            for i in range(20):
                await servers.drivers[leader].propose(f"k{i}={i}".encode())
            await servers.until_value("n1", b"k19", b"19")
        for name in ("n1", "n2", "n3"):
            servers.stop(name)
        await trio.testing.wait_all_tasks_blocked()
        # n2 and n3 are destroyed for good; n1 alone cannot elect itself: recover it
        del servers.storage["n2"], servers.storage["n3"]
        plan = recover_storage(servers.storage["n1"], node="n1")
        assert plan.after == conf("n1")

        n1 = await servers.start("n1", None)
        with trio.fail_after(5):
            await n1.wait_state(lambda s: s.role is Role.LEADER)
            await n1.propose(b"recovered=1")
        assert servers.apps["n1"].state[b"k19"] == b"19"  # nothing committed was lost

        # replacements start with empty data dirs and join through gossip
        gossip = Gossip(view("n1"))
        reconciler = MembershipReconciler(n1, gossip, interval=INTERVAL)
        await nursery.start(reconciler.run)
        for name in ("n2", "n3"):
            await servers.start(name, None)
            gossip.set(view(name))
        reconciler.wake()
        with trio.fail_after(10):
            await servers.until_conf("n1", conf("n1,n2,n3"))
            await n1.propose(b"later=2")
            await servers.until_value("n2", b"later", b"2")
        assert servers.apps["n2"].state[b"k0"] == b"0"
        assert servers.apps["n2"].state[b"recovered"] == b"1"
        nursery.cancel_scope.cancel()
