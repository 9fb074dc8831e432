"""Raft membership that follows gossip: planner, bootstrap-expect, reconciler, recovery.

The leader keeps the Raft configuration in step with the servers gossip knows (Consul's
and Dkron's "reconcile serf members with Raft peers"), one single-server change at a time:

- a server alive in gossip and not in the configuration is added as a **learner** (the
  change's context is its ``rpc_addr``);
- a learner alive and caught up (its match index within ``catch_up_slack`` of the commit
  index) is **promoted** to voter;
- a server that **left** gracefully is **removed** (never the leader itself: a leaving
  leader hands leadership over first, see ``pick_successor``, and its successor removes it);
- a server that **failed** is left alone: a partition would otherwise shrink the cluster
  under it. An operator removes a server that will not come back (``trickle raft
  remove-peer``). A member gossip does not know at all is left alone too.

Pieces, from pure to Trio:

``ServerView`` / ``server_views``   what the planners need of a gossip member
``plan_membership``                 the next change, or None (pure); ``plan_from_status``
                                    the same from a driver's ``status()``
``pick_successor``                  whom a leaving leader hands over to (pure)
``bootstrap_plan`` / ``membership_tags``   --bootstrap-expect: when to bootstrap, which
                                    configuration, and the tags that make it safe (pure)
``recovery_plan`` / ``recover_storage``    rewrite a stored configuration after a
                                    permanent loss of quorum (pure / one storage call)
``MembershipReconciler``            the leader's task applying the plans
``BootstrapWaiter``                 waits for the moment to bootstrap (a server with
                                    --bootstrap-expect and no Raft state)

Errors: ``BootstrapExpectMismatch`` (a ValidationError) when the servers in sight were
started with different ``--bootstrap-expect`` values, or more of them than expected.
The pure functions import no clock and never log; the two task classes do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import attrs
import trio

from trickle.engine.model import Member
from trickle.errors import (
    ConfChangeRejected,
    EngineClosed,
    NotLeader,
    ProposalDropped,
    TrickleError,
    ValidationError,
)
from trickle.raft._conf import apply_change, apply_entry_data
from trickle.raft.core import Role, Status
from trickle.raft.driver import ProposalUnknown
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    NodeId,
)
from trickle.raft.storage import RaftStorage
from trickle.raft.wire import encode_conf_change

logger = logging.getLogger(__name__)

# gossip statuses (serf's, as trickle.engine.model.Member has them)
ALIVE = "alive"
LEAVING = "leaving"  # this node while its leave spreads
LEFT = "left"
FAILED = "failed"
STATUSES = frozenset({ALIVE, LEAVING, LEFT, FAILED})

# gossip tags read here (the engine gossips "server" and "rpc_addr" already)
TAG_SERVER = "server"  # "true" on servers
TAG_RPC_ADDR = "rpc_addr"  # the server's Raft/RPC listener, host:port
TAG_REGION = "region"
TAG_EXPECT = "expect"  # the server's --bootstrap-expect, on servers started with it
TAG_RAFT_FORMED = "raft_formed"  # "1" on a server that holds Raft state

DEFAULT_CATCH_UP_SLACK = 256  # entries a learner may trail the commit index and be promoted
RECONCILE_INTERVAL = 10.0  # seconds between two reconciliations without membership events
RETRY_DELAY = 1.0  # seconds after a failed change; doubles per failure up to the interval
PROPOSE_TIMEOUT = 30.0  # seconds a change may take to be applied before it is retried
BOOTSTRAP_SETTLE = 2.0  # seconds the bootstrap set must stay the same before bootstrapping
BOOTSTRAP_POLL = 1.0  # seconds between two looks at gossip while waiting to bootstrap


class BootstrapExpectMismatch(ValidationError):
    """The servers waiting to bootstrap do not agree: some were started with another
    ``--bootstrap-expect``, or more servers than expected are waiting. Nobody bootstraps
    until the operator fixes it (restart the odd servers with the right value)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="bootstrap_expect")


def _check_status(instance: object, attribute: object, value: str) -> None:
    if value not in STATUSES:
        raise ValidationError(
            f"unknown server status {value!r} (expected one of {', '.join(sorted(STATUSES))})",
            field="status",
        )


@attrs.frozen(kw_only=True)
class ServerView:
    """A server as gossip sees it, as much as membership needs.

    status: alive, leaving, left or failed (serf's statuses; a suspect counts as alive).
    rpc_addr: its Raft/RPC listener "host:port" ("" when it gossips none: never added).
    region: its region tag (None when it has none).
    expect: the ``--bootstrap-expect`` it gossips (None: none; 0: a malformed value).
    raft_formed: it holds Raft state (it belongs to a formed cluster).
    """

    name: str
    status: str = attrs.field(default=ALIVE, validator=_check_status)
    rpc_addr: str = ""
    region: str | None = None
    expect: int | None = None
    raft_formed: bool = False


def server_view(member: Member) -> ServerView | None:
    """The ServerView of an engine Member, None when it is not a server (no
    ``server=true`` tag). Tag values from the network are never trusted: a malformed
    ``expect`` becomes 0 (which no server expects, so it shows as a mismatch)."""
    tags = member.tags
    if tags.get(TAG_SERVER) != "true":
        return None
    expect: int | None = None
    raw = tags.get(TAG_EXPECT)
    if raw is not None:
        expect = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 0
    status = member.status if member.status in STATUSES else FAILED
    return ServerView(
        name=member.name,
        status=status,
        rpc_addr=tags.get(TAG_RPC_ADDR, ""),
        region=tags.get(TAG_REGION),
        expect=expect,
        raft_formed=tags.get(TAG_RAFT_FORMED) == "1",
    )


def server_views(members: Iterable[Member], *, region: str | None = None) -> list[ServerView]:
    """The servers among ``members`` (``Engine.members()``), sorted by name. With
    ``region``, servers gossiping another region are left out (each region is its own
    Raft cluster, as in Dkron); a server without a region tag is kept."""
    views = []
    for member in members:
        view = server_view(member)
        if view is None:
            continue
        if region is not None and view.region is not None and view.region != region:
            continue
        views.append(view)
    return sorted(views, key=lambda v: v.name)


def membership_tags(*, expect: int | None, raft_formed: bool) -> dict[str, str]:
    """The gossip tags a server adds to its own for bootstrap-expect: ``expect=N`` when
    started with ``--bootstrap-expect N``, ``raft_formed=1`` once it holds Raft state
    (at start from its data dir, or from its bootstrap or its first configuration)."""
    tags: dict[str, str] = {}
    if expect is not None:
        tags[TAG_EXPECT] = str(expect)
    if raft_formed:
        tags[TAG_RAFT_FORMED] = "1"
    return tags


def _index_views(servers: Mapping[str, ServerView] | Iterable[ServerView]) -> dict[str, ServerView]:
    if isinstance(servers, Mapping):
        for name, view in servers.items():
            if name != view.name:
                raise ValidationError(
                    f"servers maps {name!r} to the view of {view.name!r}", field="servers"
                )
        return dict(servers)
    return {view.name: view for view in servers}


# -- the planner ----------------------------------------------------------------------------


def plan_membership(
    conf: ConfState,
    servers: Mapping[str, ServerView],
    progress: Mapping[str, int],
    commit: int,
    *,
    leader: str,
    catch_up_slack: int = DEFAULT_CATCH_UP_SLACK,
) -> ConfChange | None:
    """The next single-server change that brings ``conf`` in step with gossip, or None.

    conf: the leader's latest configuration. servers: gossip's servers by name (of the
    leader's region). progress: each member's match index (the leader's view).
    commit: the leader's commit index. leader: this server's name.

    At most one change, in this order (the first that applies, each by name):
    1. REMOVE a member (voter or learner) that left gracefully, or is leaving, other
       than the leader: it is gone for good, and keeping it only weakens the quorum;
    2. PROMOTE a learner that is alive and whose match is at least
       ``commit - catch_up_slack``;
    3. ADD_LEARNER a server alive in gossip, with an ``rpc_addr``, not in ``conf``
       (context: the ``rpc_addr`` as UTF-8 bytes).
    Never removes the leader, a failed member, or a member gossip does not know. A
    leader that is leaving (or left) plans nothing: it hands over, its successor
    reconciles. A ``leader`` that is not a voter of ``conf`` plans nothing either.
    Raises ValidationError for a negative ``commit`` or ``catch_up_slack``.
    """
    if commit < 0:
        raise ValidationError("commit must not be negative", field="commit")
    if catch_up_slack < 0:
        raise ValidationError("catch_up_slack must not be negative", field="catch_up_slack")
    views = _index_views(servers)
    if leader not in conf.voters:
        return None
    own = views.get(leader)
    if own is not None and own.status in (LEFT, LEAVING):
        return None
    members = conf.voters | conf.learners
    for name in sorted(members):
        view = views.get(name)
        if name != leader and view is not None and view.status in (LEFT, LEAVING):
            return ConfChange(ConfChangeOp.REMOVE, NodeId(name))
    for name in sorted(conf.learners):
        view = views.get(name)
        if view is None or view.status != ALIVE:
            continue
        match = progress.get(name)
        if match is not None and match >= commit - catch_up_slack:
            return ConfChange(ConfChangeOp.PROMOTE, NodeId(name))
    for candidate in sorted(views):
        server = views[candidate]
        if candidate in members or server.status != ALIVE or not server.rpc_addr:
            continue
        return ConfChange(ConfChangeOp.ADD_LEARNER, NodeId(candidate), server.rpc_addr.encode())
    return None


def pick_successor(
    conf: ConfState,
    servers: Mapping[str, ServerView],
    progress: Mapping[str, int],
    *,
    leader: str,
) -> str | None:
    """The voter a leaving leader should hand leadership to (``transfer_leadership``):
    a voter other than ``leader`` that gossip shows alive, the most caught up (highest
    match index), ties by name; a voter gossip does not know comes after every alive
    one; failed and left voters never. None when there is no candidate (a lone voter)."""
    views = _index_views(servers)
    ranked: list[tuple[int, int, str]] = []
    for name in conf.voters:
        if name == leader:
            continue
        view = views.get(name)
        if view is not None and view.status != ALIVE:
            continue
        known = 0 if view is not None else 1
        ranked.append((known, -progress.get(name, 0), name))
    if not ranked:
        return None
    return min(ranked)[2]


def plan_from_status(
    status: Status,
    servers: Iterable[ServerView],
    *,
    catch_up_slack: int = DEFAULT_CATCH_UP_SLACK,
) -> ConfChange | None:
    """``plan_membership`` fed from a driver's ``status()``: the change the reconciler
    would make now (also for diagnostics). None on a server that does not lead."""
    if status.role is not Role.LEADER:
        return None
    return plan_membership(
        status.conf,
        {view.name: view for view in servers},
        {name: p.match for name, p in status.progress.items()},
        status.commit,
        leader=status.id,
        catch_up_slack=catch_up_slack,
    )


# -- bootstrap-expect -----------------------------------------------------------------------


def formed_servers(self_name: str, servers: Iterable[ServerView]) -> list[str]:
    """Names of the other servers in sight (any status but left) that gossip
    ``raft_formed=1``: a cluster exists, and this server must join it, not bootstrap.
    Failed ones count too: a formed cluster that is down is still a cluster."""
    return sorted(
        v.name for v in servers if v.raft_formed and v.status != LEFT and v.name != self_name
    )


def bootstrap_plan(
    self_name: str,
    servers_seen: Iterable[ServerView],
    expect: int,
    *,
    has_state: bool = False,
) -> ConfState | None:
    """The configuration to bootstrap now with ``--bootstrap-expect expect``, or None.

    The bootstrap set is every server in sight (any status but left, this one included
    even if gossip does not list it yet) that gossips an ``expect`` tag and no
    ``raft_formed`` tag. Once it holds exactly ``expect`` servers and all are alive,
    every one of them returns the same configuration: all of them as voters. None while
    it is smaller or some are not alive, when this server ``has_state`` (it restarts:
    Raft recovers its configuration), and when another server in sight gossips
    ``raft_formed=1`` (see ``formed_servers``: join that cluster instead).

    Raises BootstrapExpectMismatch when a server of the set gossips another ``expect``
    (or a malformed one), or when the set holds more than ``expect`` servers: choosing
    among them could split the cluster in two. Raises ValidationError for ``expect`` < 1.
    """
    if isinstance(expect, bool) or not isinstance(expect, int) or expect < 1:
        raise ValidationError(
            "bootstrap_expect must be a positive integer", field="bootstrap_expect"
        )
    if has_state:
        return None
    seen = [v for v in servers_seen if v.status != LEFT]
    if formed_servers(self_name, seen):
        return None
    waiting = {v.name: v for v in seen if v.expect is not None and not v.raft_formed}
    # this server's own expect is the one given, whatever its gossiped tags show yet
    own = next((v for v in seen if v.name == self_name), None)
    own = ServerView(name=self_name) if own is None else own
    waiting[self_name] = attrs.evolve(own, expect=expect, raft_formed=False)
    odd = sorted(name for name, v in waiting.items() if v.expect != expect)
    if odd:
        values = ", ".join(
            f"{name}={waiting[name].expect if waiting[name].expect else 'malformed'}"
            for name in odd
        )
        raise BootstrapExpectMismatch(
            f"{self_name} has --bootstrap-expect {expect} but {values}: every server "
            "started with --bootstrap-expect must be given the same value; nothing is "
            "bootstrapped until they agree"
        )
    if len(waiting) > expect:
        raise BootstrapExpectMismatch(
            f"{len(waiting)} servers wait to bootstrap with --bootstrap-expect {expect} "
            f"({', '.join(sorted(waiting))}): start exactly {expect} servers with it "
            "(stop the others, or give them no --bootstrap-expect and let them join); "
            "nothing is bootstrapped meanwhile"
        )
    if len(waiting) < expect or any(v.status != ALIVE for v in waiting.values()):
        return None
    return ConfState(voters=frozenset(NodeId(name) for name in waiting))


# -- recovery after a permanent loss of quorum ------------------------------------------------


@attrs.frozen(kw_only=True)
class RecoveryPlan:
    """What ``recovery_plan`` decided for one server's stored Raft state.

    before/after: the stored configuration and the one after recovery.
    last_index/last_term: the last stored entry (or snapshot) before recovery.
    commit: the stored commit index before recovery.
    entries: the conf-change entries to append (empty: nothing to change).
    hard_state: the hard state to store with them (None: nothing to change).
    """

    node: str
    before: ConfState
    after: ConfState
    last_index: int
    last_term: int
    commit: int
    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None

    @property
    def changed(self) -> bool:
        return bool(self.entries)

    def describe(self) -> str:
        """One line: the log's end (to compare survivors), then what changes."""
        head = f"{self.node}: last entry {self.last_term}/{self.last_index}, commit {self.commit}"
        if not self.changed:
            return (
                f"{head}; the stored configuration is already {self.after.describe()}: "
                "nothing to recover"
            )
        first, last = self.entries[0].index, self.entries[-1].index
        assert self.hard_state is not None
        tail = self.last_index - self.commit
        text = (
            f"{head}; {self.before.describe()} -> {self.after.describe()}: "
            f"{len(self.entries)} membership entries at {first}..{last} in term "
            f"{self.hard_state.term}, committed"
        )
        if tail > 0:
            text += (
                f"; the {tail} entries after the stored commit index {self.commit} "
                "are kept and committed too"
            )
        return text


def _stored_conf(durable: DurableState) -> ConfState:
    snapshot = durable.snapshot
    conf = snapshot.meta.conf if snapshot is not None else ConfState()
    start = snapshot.meta.index if snapshot is not None else 0
    for entry in durable.entries:
        if entry.index > start and entry.kind is EntryKind.CONF_CHANGE:
            conf = apply_entry_data(conf, entry.data)
    return conf


def recovery_plan(
    durable: DurableState, *, node: str, voters: Iterable[str] | None = None
) -> RecoveryPlan:
    """Rewrite the configuration stored by server ``node`` so that it can lead again
    after its cluster lost its quorum for good (Consul's ``peers.json``).

    voters: the voters after recovery, ``node`` among them; default ``node`` alone, the
    safe choice (docs/cluster.md): it leads at once, and the other servers join it
    again with empty data dirs through gossip. Every voter must be a member of the
    stored configuration.

    The plan appends one conf-change entry per difference (ADD_VOTER for each new
    voter, then REMOVE for every other member, sorted by name) after the last stored
    entry, in a term above every stored one, and a hard state that commits them (and
    with them any entry stored after the stored commit index: it may have been
    committed, and dropping it could lose an acknowledged write). Nothing is rewritten,
    only appended, so the store accepts it as an ordinary save. When the stored
    configuration already is the target, the plan changes nothing.

    Raises ValidationError when ``durable`` holds no configuration, ``node`` is not a
    member of it (a wrong ``--node-name``), or ``voters`` is empty, lacks ``node`` or
    names a server the configuration does not hold.
    """
    if not isinstance(node, str) or not node:
        raise ValidationError("the server to recover needs a non-empty name", field="node")
    target = frozenset(NodeId(v) for v in ((node,) if voters is None else voters))
    if not target:
        raise ValidationError("recovery needs at least one voter", field="voters")
    if any(not isinstance(v, str) or not v for v in target):
        raise ValidationError("voter names must be non-empty strings", field="voters")
    before = _stored_conf(durable)
    members = before.voters | before.learners
    if not members:
        raise ValidationError(
            "the data dir holds no Raft configuration: nothing to recover", field="data_dir"
        )
    if node not in members:
        raise ValidationError(
            f"{node} is not a member of the stored configuration ({before.describe()}): "
            "give the --node-name this server runs with",
            field="node",
        )
    if node not in target:
        raise ValidationError(
            f"the voters after recovery must include {node}, the server being recovered",
            field="voters",
        )
    unknown = sorted(target - members)
    if unknown:
        raise ValidationError(
            f"{', '.join(unknown)} not in the stored configuration ({before.describe()}): "
            "new servers join after recovery, through gossip",
            field="voters",
        )
    snapshot = durable.snapshot
    snap_index = snapshot.meta.index if snapshot is not None else 0
    last_index, last_term = snap_index, snapshot.meta.term if snapshot is not None else 0
    if durable.entries and durable.entries[-1].index >= snap_index:
        last_index, last_term = durable.entries[-1].index, durable.entries[-1].term
    stored = durable.hard_state
    commit = max(stored.commit, snap_index)
    after = ConfState(voters=target)
    plan = RecoveryPlan(
        node=node,
        before=before,
        after=after,
        last_index=last_index,
        last_term=last_term,
        commit=commit,
    )
    if before == after:
        return plan
    changes = [ConfChange(ConfChangeOp.ADD_VOTER, v) for v in sorted(target - before.voters)]
    changes += [ConfChange(ConfChangeOp.REMOVE, m) for m in sorted(members - target)]
    term = max(stored.term, last_term) + 1
    entries = tuple(
        Entry(term, last_index + i, EntryKind.CONF_CHANGE, encode_conf_change(change))
        for i, change in enumerate(changes, start=1)
    )
    result = before
    for change in changes:
        result = apply_change(result, change)
    assert result == after, (result, after)
    return attrs.evolve(
        plan,
        entries=entries,
        hard_state=HardState(term=term, vote=None, commit=entries[-1].index),
    )


def recover_storage(
    storage: RaftStorage,
    *,
    node: str,
    voters: Iterable[str] | None = None,
    dry_run: bool = False,
) -> RecoveryPlan:
    """Load ``storage``, plan the recovery (``recovery_plan``) and save it in one durable
    batch (unless ``dry_run`` or there is nothing to change); returns the plan. Run it
    on a stopped server (a SqliteRaftStorage refuses a file a running server holds).
    Raises what ``recovery_plan`` and the store raise."""
    plan = recovery_plan(storage.load(), node=node, voters=voters)
    if plan.changed and not dry_run:
        storage.save(hard_state=plan.hard_state, entries=plan.entries)
    return plan


# -- the leader's reconciler ------------------------------------------------------------------


class MembershipRaft(Protocol):
    """What the reconciler needs of a RaftDriver."""

    def status(self) -> Status: ...

    async def propose_conf_change(self, change: ConfChange) -> object: ...


@attrs.frozen(kw_only=True)
class ReconcilerStats:
    """rounds: plans computed; applied: changes applied; failed: changes that failed or
    timed out; last_change/last_error: the latest of each, described ("" if none)."""

    rounds: int = 0
    applied: int = 0
    failed: int = 0
    last_change: str = ""
    last_error: str = ""


_IDLE, _APPLIED, _FAILED = "idle", "applied", "failed"


def _describe_change(change: ConfChange) -> str:
    text = change.describe()
    if change.context:
        text += f" ({change.context.decode('utf-8', 'replace')})"
    return text


class MembershipReconciler:
    """The leader's task that keeps the Raft configuration in step with gossip.

    raft: a RaftDriver (``status()``, ``propose_conf_change``). servers: returns the
    servers gossip knows now (``server_views(engine.members(), region=...)``); called
    on the Trio thread, it must not block.

    ``run`` plans (``plan_membership``) and applies one change at a time, waiting for
    each to be applied before planning the next; with nothing to do it sleeps until
    ``wake()`` or ``interval`` seconds. A change that fails (ConfChangeRejected,
    NotLeader, ProposalDropped, ProposalUnknown, not applied within ``propose_timeout``)
    is logged and retried after ``retry_delay`` seconds, doubling per failure up to
    ``interval``; wakes do not shorten that wait. The same change planned again right
    after it was applied (the configuration does not show it) is not proposed again
    while the plan stays the same: it counts as a failure (never a hot loop). A server
    that does not lead (or hands over) plans nothing. Returns when the driver stops
    (EngineClosed).
    Start it while leading, cancel it when leadership ends.
    """

    def __init__(
        self,
        raft: MembershipRaft,
        servers: Callable[[], Iterable[ServerView]],
        *,
        interval: float = RECONCILE_INTERVAL,
        catch_up_slack: int = DEFAULT_CATCH_UP_SLACK,
        retry_delay: float = RETRY_DELAY,
        propose_timeout: float = PROPOSE_TIMEOUT,
    ) -> None:
        if interval <= 0:
            raise ValidationError("interval must be positive", field="interval")
        if retry_delay <= 0:
            raise ValidationError("retry_delay must be positive", field="retry_delay")
        if propose_timeout <= 0:
            raise ValidationError("propose_timeout must be positive", field="propose_timeout")
        if catch_up_slack < 0:
            raise ValidationError("catch_up_slack must not be negative", field="catch_up_slack")
        self._raft = raft
        self._servers = servers
        self._interval = interval
        self._slack = catch_up_slack
        self._retry_delay = retry_delay
        self._propose_timeout = propose_timeout
        self._woken = trio.Event()
        self._failures = 0
        self._last_applied: ConfChange | None = None
        self._stats = ReconcilerStats()

    def wake(self) -> None:
        """Reconcile soon (call it on every membership event). Never blocks."""
        self._woken.set()

    def statistics(self) -> ReconcilerStats:
        return self._stats

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled (or the driver stops); started at once."""
        task_status.started()
        while True:
            self._woken = trio.Event()  # a wake during the round triggers another one
            try:
                outcome = await self._round()
            except EngineClosed:
                return
            if outcome == _APPLIED:
                self._failures = 0
                continue
            if outcome == _FAILED:
                self._failures += 1
                exponent = min(self._failures - 1, 30)
                await trio.sleep(min(self._interval, self._retry_delay * 2**exponent))
                continue
            self._failures = 0
            with trio.move_on_after(self._interval):
                await self._woken.wait()

    async def _round(self) -> str:
        status = self._raft.status()
        if status.role is not Role.LEADER or status.transferee is not None:
            return _IDLE
        self._stats = attrs.evolve(self._stats, rounds=self._stats.rounds + 1)
        change = plan_from_status(status, self._servers(), catch_up_slack=self._slack)
        if change is None:
            self._last_applied = None
            return _IDLE
        if change == self._last_applied:
            # applied, yet the configuration does not show it: proposing it again would
            # change nothing either; wait (backing off) until the plan changes
            if self._failures == 0:
                logger.warning(
                    "%s: membership: %s was applied but the configuration (%s) does not show it",
                    status.id,
                    change.describe(),
                    status.conf.describe(),
                )
            return self._failed(change, "planned again right after it was applied", logged=True)
        self._last_applied = None
        logger.info("%s: membership: %s", status.id, _describe_change(change))
        try:
            with trio.move_on_after(self._propose_timeout) as scope:
                await self._raft.propose_conf_change(change)
        except EngineClosed:
            raise
        except (ConfChangeRejected, NotLeader, ProposalDropped, ProposalUnknown) as exc:
            return self._failed(change, exc.message)
        except TrickleError as exc:
            logger.warning("%s: membership: %s failed: %s", status.id, change.describe(), exc)
            return self._failed(change, exc.message, logged=True)
        if scope.cancelled_caught:
            return self._failed(change, f"not applied within {self._propose_timeout:g} s")
        self._last_applied = change
        self._stats = attrs.evolve(
            self._stats, applied=self._stats.applied + 1, last_change=_describe_change(change)
        )
        return _APPLIED

    def _failed(self, change: ConfChange, reason: str, *, logged: bool = False) -> str:
        if not logged:
            logger.info("membership: %s not made, retried later: %s", change.describe(), reason)
        self._stats = attrs.evolve(
            self._stats,
            failed=self._stats.failed + 1,
            last_error=f"{change.describe()}: {reason}",
        )
        return _FAILED


# -- waiting to bootstrap ---------------------------------------------------------------------


class BootstrapWaiter:
    """Decides, on a server started with ``--bootstrap-expect expect`` and no Raft
    state, when and how to start Raft: before the driver is created.

    servers: returns the servers gossip knows now (``server_views(...)``; gossip must
    be running and joining). ``wait()`` returns the configuration to bootstrap with
    (``RaftDriver(bootstrap=...)``) once ``bootstrap_plan`` has returned the same one
    for ``settle`` seconds (so that a server that shows up a moment later is seen
    before anything is decided), or None as soon as another server gossips
    ``raft_formed=1``: start the driver without bootstrap and wait to be added by that
    cluster's leader. A BootstrapExpectMismatch is logged as an error (once per
    distinct message) and waiting goes on: restarting the odd server with the right
    value lets the cluster form. Call ``wake()`` on every membership event; gossip is
    also looked at every ``poll`` seconds.
    """

    def __init__(
        self,
        self_name: str,
        expect: int,
        servers: Callable[[], Iterable[ServerView]],
        *,
        settle: float = BOOTSTRAP_SETTLE,
        poll: float = BOOTSTRAP_POLL,
    ) -> None:
        bootstrap_plan(self_name, (), expect)  # validates expect
        if settle < 0:
            raise ValidationError("settle must not be negative", field="settle")
        if poll <= 0:
            raise ValidationError("poll must be positive", field="poll")
        self._name = self_name
        self._expect = expect
        self._servers = servers
        self._settle = settle
        self._poll = poll
        self._woken = trio.Event()

    def wake(self) -> None:
        """Look at gossip again now. Never blocks."""
        self._woken.set()

    async def wait(self) -> ConfState | None:
        """Block until this server should bootstrap (the configuration) or join a
        formed cluster (None); see the class docstring."""
        candidate: ConfState | None = None
        since = 0.0
        reported: set[str] = set()
        seen_before: tuple[str, ...] = ()
        while True:
            self._woken = trio.Event()
            views = list(self._servers())
            formed = formed_servers(self._name, views)
            if formed:
                logger.info(
                    "%s: servers %s belong to a formed cluster: joining it, not bootstrapping",
                    self._name,
                    ", ".join(formed),
                )
                return None
            now = trio.current_time()
            try:
                conf = bootstrap_plan(self._name, views, self._expect)
            except BootstrapExpectMismatch as exc:
                if exc.message not in reported:
                    reported.add(exc.message)
                    logger.error("%s", exc.message)
                conf = None
            if conf is None:
                candidate = None
                seen = tuple(sorted(v.name for v in views if v.expect is not None))
                if seen != seen_before:
                    seen_before = seen
                    logger.info(
                        "%s: waiting for %d servers started with --bootstrap-expect %d "
                        "(in sight: %s)",
                        self._name,
                        self._expect,
                        self._expect,
                        ", ".join(seen) or "none",
                    )
                deadline = now + self._poll
            else:
                if conf != candidate:
                    candidate, since = conf, now
                if now - since >= self._settle:
                    logger.info("%s: bootstrapping Raft with %s", self._name, conf.describe())
                    return conf
                deadline = min(since + self._settle, now + self._poll)
            with trio.move_on_at(deadline):
                await self._woken.wait()
