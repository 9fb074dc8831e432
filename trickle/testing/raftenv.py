"""A scripted environment for RaftNode tests (etcd's rafttest interaction env), pure and synchronous.

Nodes named "1", "2", ... each with an in-memory store (what ``process_ready`` persisted),
a tiny state machine (the applied data) and a mailbox. Nothing moves unless a command
moves it: ``tick``, ``deliver_msgs``, ``process_ready``, ``stabilize``. Every command
returns the lines it printed, so golden scripts (``run_script``) show exactly what was
persisted, sent and applied. A test helper (trickle.testing), used by the core's unit tests.

Script syntax: a command line, a line ``----``, the expected output, a blank line.
Lines starting with ``#`` are comments. Commands::

    add-nodes N [voters=(1,2,3)] [learners=(4)] [pre-vote=false] [check-quorum=false]
              [election=10] [heartbeat=2] [max-msg-bytes=N] [max-inflight=N]
              [chunk=N] [trailing=N]
    campaign ID | tick ID [COUNT] | tick-all [COUNT] | propose ID DATA
    propose-conf-change ID add_learner|add_voter|promote|remove NODE
    transfer-leadership from=ID to=ID | read-index ID CTX | compact ID INDEX
    deliver-msgs ID [type=APPEND] | drop-msgs ID [type=APPEND] | process-ready ID...
    stabilize [ID...] | partition ID... | heal | status ID | raft-log ID | restart ID
    report-unreachable ID PEER
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from trickle.errors import TrickleError
from trickle.raft.config import RaftConfig
from trickle.raft.core import RaftNode, Ready, Role
from trickle.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    DurableState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NodeId,
    Snapshot,
)
from trickle.raft.storage import fill_cold_entries
from trickle.raft.wire import decode_conf_change

_SEP = b"|"  # joins applied data in the state machine image


def describe_entry(entry: Entry) -> str:
    """Like Entry.describe, with conf changes decoded (``1/3 conf:add_voter 3``)."""
    if entry.kind == EntryKind.CONF_CHANGE:
        try:
            return f"{entry.term}/{entry.index} conf:{decode_conf_change(entry.data).describe()}"
        except TrickleError:
            return entry.describe()
    return entry.describe()


def describe_message(m: Message) -> str:
    """Message.describe with conf-change entries decoded and control bytes escaped."""
    line = m.describe()
    for e in m.entries:
        if type(e) is Entry and e.kind == EntryKind.CONF_CHANGE:
            line = line.replace(e.describe(), describe_entry(e), 1)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)


@attrs.define
class MemStore:
    """What a node made durable: the result of carrying out its Readys in order."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: list[Entry] = attrs.Factory(list)

    def save(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            meta = rd.snapshot.meta
            held = self.snapshot is not None and (
                (self.snapshot.meta.index, self.snapshot.meta.term) == (meta.index, meta.term)
            )
            if held or any(e.index == meta.index and e.term == meta.term for e in self.entries):
                self.entries = [e for e in self.entries if e.index > meta.index]
            else:
                self.entries = []  # another history: the snapshot replaces the whole log
            self.snapshot = rd.snapshot
        if rd.entries:
            first = rd.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snapshot: Snapshot, keep_from: int) -> None:
        if self.snapshot is None or snapshot.meta.index > self.snapshot.meta.index:
            self.snapshot = snapshot
        self.entries = [e for e in self.entries if e.index >= keep_from]

    def load(self) -> DurableState:
        return DurableState(
            hard_state=self.hard_state, snapshot=self.snapshot, entries=tuple(self.entries)
        )

    def entries_between(self, lo: int, hi: int) -> list[Entry]:
        return [e for e in self.entries if lo <= e.index <= hi]


@attrs.define
class StateMachine:
    """The applied data: the snapshot image it was restored from plus entries since."""

    base: bytes = b""
    base_index: int = 0
    applied: list[tuple[int, bytes]] = attrs.Factory(list)  # (index, data) of NORMAL data

    @property
    def applied_index(self) -> int:
        return self._last

    _last: int = 0

    def restore(self, snapshot: Snapshot) -> None:
        self.base = bytes(snapshot.data)
        self.base_index = snapshot.meta.index
        self.applied = []
        self._last = snapshot.meta.index

    def apply(self, entry: Entry) -> None:
        if entry.index != self._last + 1:
            raise AssertionError(f"applied {entry.index} after {self._last}")
        self._last = entry.index
        if entry.kind == EntryKind.NORMAL and entry.data:
            self.applied.append((entry.index, entry.data))

    def image(self, index: int) -> bytes:
        """The state as of ``index`` (base_index <= index <= applied)."""
        parts = [self.base] if self.base else []
        parts += [data for i, data in self.applied if i <= index]
        return _SEP.join(parts)


@attrs.define(eq=False)
class EnvNode:
    id: NodeId
    config: RaftConfig
    raft: RaftNode
    store: MemStore
    fsm: StateMachine


class InteractionEnv:
    """Nodes, their stores and a network of mailboxes, all driven by explicit commands."""

    def __init__(self) -> None:
        self.nodes: dict[NodeId, EnvNode] = {}
        self.network: list[Message] = []  # sent, not yet delivered, in send order
        self.groups: dict[NodeId, int] = {}  # partition group per node (default 0)
        self.read_states: dict[NodeId, list[tuple[int, bytes]]] = {}
        self.on_apply: Callable[[NodeId, Entry], None] | None = None  # e.g. a safety checker

    # building ---------------------------------------------------------------------------
    def add_nodes(
        self,
        count: int,
        *,
        voters: Iterable[str] = (),
        learners: Iterable[str] = (),
        config: RaftConfig | None = None,
    ) -> list[str]:
        config = config or RaftConfig()
        voter_ids = frozenset(NodeId(v) for v in voters)
        learner_ids = frozenset(NodeId(v) for v in learners)
        bootstrap = ConfState(voters=voter_ids, learners=learner_ids) if voter_ids else None
        out = []
        for _ in range(count):
            node_id = NodeId(str(len(self.nodes) + 1))
            raft = RaftNode(node_id, config=config, rng=_rng(node_id), bootstrap=bootstrap)
            self.nodes[node_id] = EnvNode(node_id, config, raft, MemStore(), StateMachine())
            self.read_states[node_id] = []
            out.append(f"{node_id}: {_describe_status(raft)}")
        return out

    def restart(self, node_id: str) -> list[str]:
        """Rebuild a node from its store (the application keeps its applied state)."""
        node = self.nodes[NodeId(node_id)]
        node.raft = RaftNode(
            node.id,
            config=node.config,
            rng=_rng(node.id),
            durable=node.store.load(),
            applied=node.fsm.applied_index,
        )
        return [f"{node.id}: {_describe_status(node.raft)}"]

    # driving ----------------------------------------------------------------------------
    def process_ready(self, node_id: str) -> list[str]:
        node = self.nodes[NodeId(node_id)]
        if not node.raft.has_ready():
            return [f"> {node_id} has no Ready"]
        rd = node.raft.ready()
        out = [f"> {node_id} handling {rd.describe()}"]
        for m in rd.leader_messages:
            out.append(f"  send {describe_message(m)}")
            self.network.append(fill_cold_entries(m, node.store.entries_between))
        if rd.snapshot is not None:
            out.append(f"  persist {rd.snapshot.describe()}")
        for e in rd.entries:
            out.append(f"  persist {describe_entry(e)}")
        node.store.save(rd)
        for m in rd.messages:
            out.append(f"  send-after-persist {describe_message(m)}")
            self.network.append(fill_cold_entries(m, node.store.entries_between))
        if rd.snapshot is not None:
            node.fsm.restore(rd.snapshot)
            out.append(f"  restore {rd.snapshot.describe()}")
        for e in rd.committed_entries:
            if self.on_apply is not None:
                self.on_apply(node.id, e)
            node.fsm.apply(e)
            out.append(f"  apply {describe_entry(e)}")
        for rs in rd.read_states:
            self.read_states[node.id].append((rs.index, rs.context))
            out.append(f"  read-state index={rs.index} ctx={rs.context.decode(errors='replace')}")
        node.raft.advance(rd)
        return out

    def deliver_msgs(
        self, node_id: str, *, type: str | None = None, drop: bool = False
    ) -> list[str]:
        dst = NodeId(node_id)
        out = []
        keep: list[Message] = []
        for m in self.network:
            if m.dst != dst or (type is not None and m.type.name != type):
                keep.append(m)
                continue
            if drop:
                out.append(f"  dropped {describe_message(m)}")
            elif self.groups.get(m.src, 0) != self.groups.get(m.dst, 0):
                out.append(f"  partitioned {describe_message(m)}")
            else:
                out.append(f"  {describe_message(m)}")
                before = _soft(self.nodes[dst].raft)
                self.nodes[dst].raft.step(m)
                out += _soft_change(dst, before, self.nodes[dst].raft)
        self.network = keep
        return out

    def stabilize(self, node_ids: Iterable[str] = ()) -> list[str]:
        ids = [NodeId(n) for n in node_ids] or sorted(self.nodes, key=_id_key)
        out: list[str] = []
        for _ in range(1000):
            moved = False
            for n in ids:
                if self.nodes[n].raft.has_ready():
                    out += self.process_ready(n)
                    moved = True
            for n in ids:
                if any(m.dst == n for m in self.network):
                    out.append(f"> {n} receiving messages")
                    out += self.deliver_msgs(n)
                    moved = True
            if not moved:
                return out
        raise AssertionError("stabilize did not converge")

    def tick(self, node_id: str, count: int = 1) -> list[str]:
        node = self.nodes[NodeId(node_id)]
        before = _soft(node.raft)
        for _ in range(count):
            node.raft.tick()
        return _soft_change(node.id, before, node.raft) or ["ok"]

    def campaign(self, node_id: str) -> list[str]:
        node = self.nodes[NodeId(node_id)]
        before = _soft(node.raft)
        node.raft.campaign()
        return _soft_change(node.id, before, node.raft) or ["ok"]

    def propose(self, node_id: str, data: bytes) -> list[str]:
        raft = self.nodes[NodeId(node_id)].raft
        return _call(lambda: "ok {}/{}".format(*raft.propose(data)))

    def propose_conf_change(self, node_id: str, op: str, target: str) -> list[str]:
        raft = self.nodes[NodeId(node_id)].raft
        change = ConfChange(op=ConfChangeOp[op.upper()], node=NodeId(target))
        return _call(lambda: "ok {}/{}".format(*raft.propose_conf_change(change)))

    def transfer_leadership(self, src: str, dst: str) -> list[str]:
        raft = self.nodes[NodeId(src)].raft

        def go() -> str:
            raft.transfer_leadership(NodeId(dst))
            return "ok"

        return _call(go)

    def read_index(self, node_id: str, ctx: bytes) -> list[str]:
        raft = self.nodes[NodeId(node_id)].raft

        def go() -> str:
            raft.read_index(ctx)
            return "ok"

        return _call(go)

    def compact(self, node_id: str, index: int) -> list[str]:
        node = self.nodes[NodeId(node_id)]

        def go() -> str:
            meta = node.raft.snapshot_meta(index)
            snapshot = Snapshot(meta=meta, data=node.fsm.image(index))
            keep_from = node.raft.compact(snapshot)
            node.store.compact(snapshot, keep_from)
            return f"ok {snapshot.describe()} first-kept={keep_from}"

        return _call(go)

    def partition(self, node_ids: Iterable[str]) -> list[str]:
        self.groups = {NodeId(n): 1 for n in node_ids}
        return ["ok"]

    def heal(self) -> list[str]:
        self.groups = {}
        return ["ok"]

    def report_unreachable(self, node_id: str, peer: str) -> list[str]:
        self.nodes[NodeId(node_id)].raft.report_unreachable(NodeId(peer))
        return ["ok"]

    def status(self, node_id: str) -> list[str]:
        raft = self.nodes[NodeId(node_id)].raft
        st = raft.status()
        out = [
            f"{st.id}: {_describe_status(raft)} commit={st.commit} applied={st.applied} "
            f"log={st.first_index}..{st.last_index} dropped={st.dropped_messages}"
            + (f" transferee={st.transferee}" if st.transferee else "")
        ]
        for peer, pr in sorted(st.progress.items(), key=lambda kv: _id_key(kv[0])):
            out.append(
                f"  {peer}: {pr.state.value} match={pr.match} next={pr.next}"
                + (" learner" if pr.learner else "")
                + ("" if pr.recent_active else " inactive")
            )
        return out

    def raft_log(self, node_id: str) -> list[str]:
        store = self.nodes[NodeId(node_id)].store
        out = [f"hard state: {store.hard_state.describe()}"]
        if store.snapshot is not None:
            out.append(store.snapshot.describe())
        out += [describe_entry(e) for e in store.entries] or ["no entries"]
        return out

    # scripts ----------------------------------------------------------------------------
    def run(self, command: str) -> list[str]:
        """Run one script command line; returns its output lines."""
        words = command.split()
        name, args = words[0], words[1:]
        kv = {k: v for k, _, v in (a.partition("=") for a in args if "=" in a)}
        pos = [a for a in args if "=" not in a]
        if name == "add-nodes":
            return self.add_nodes(
                int(pos[0]),
                voters=_ids(kv.get("voters", "")),
                learners=_ids(kv.get("learners", "")),
                config=_config(kv),
            )
        if name == "campaign":
            return self.campaign(pos[0])
        if name == "tick":
            return self.tick(pos[0], int(pos[1]) if len(pos) > 1 else 1)
        if name == "tick-all":
            count = int(pos[0]) if pos else 1
            return [line for n in sorted(self.nodes, key=_id_key) for line in self.tick(n, count)]
        if name == "propose":
            return self.propose(pos[0], pos[1].encode())
        if name == "propose-conf-change":
            return self.propose_conf_change(pos[0], pos[1], pos[2])
        if name == "transfer-leadership":
            return self.transfer_leadership(kv["from"], kv["to"])
        if name == "read-index":
            return self.read_index(pos[0], pos[1].encode())
        if name == "compact":
            return self.compact(pos[0], int(pos[1]))
        if name in ("deliver-msgs", "drop-msgs"):
            out = []
            for n in pos:
                out += self.deliver_msgs(n, type=kv.get("type"), drop=name == "drop-msgs")
            return out or ["no messages"]
        if name == "process-ready":
            return [line for n in pos for line in self.process_ready(n)]
        if name == "stabilize":
            return self.stabilize(pos) or ["ok"]
        if name == "partition":
            return self.partition(pos)
        if name == "heal":
            return self.heal()
        if name == "status":
            return self.status(pos[0])
        if name == "raft-log":
            return self.raft_log(pos[0])
        if name == "restart":
            return self.restart(pos[0])
        if name == "report-unreachable":
            return self.report_unreachable(pos[0], pos[1])
        raise ValueError(f"unknown command {name!r}")


def run_script(path: Path, *, rewrite: bool = False) -> tuple[str, str]:
    """Run a golden script; returns (expected text, actual text). With ``rewrite`` the
    file is regenerated from the actual output."""
    text = path.read_text()
    env = InteractionEnv()
    out_lines: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            out_lines.append(line)
            i += 1
            continue
        command = line
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"{path.name}:{i + 1}: expected ---- after {command!r}")
        i += 2
        while i < len(lines) and lines[i].strip():
            i += 1
        out_lines += [command, "----", *env.run(command)]
    actual = "\n".join(out_lines) + "\n"
    if rewrite:
        path.write_text(actual)
    return text, actual


# direct helpers for unit tests ----------------------------------------------------------
def make_node(
    node_id: str = "1",
    *,
    voters: Iterable[str] = ("1", "2", "3"),
    learners: Iterable[str] = (),
    config: RaftConfig | None = None,
    durable: DurableState | None = None,
    applied: int = 0,
    seed: int | str | None = None,
) -> RaftNode:
    """A node bootstrapped with ``voters`` (unless ``durable`` is given) whose bootstrap
    Ready has already been carried out."""
    rng = random.Random(seed if seed is not None else f"raft-node-{node_id}")
    bootstrap = None
    if durable is None and voters:
        bootstrap = ConfState(
            voters=frozenset(map(NodeId, voters)), learners=frozenset(map(NodeId, learners))
        )
    raft = RaftNode(
        NodeId(node_id),
        config=config or RaftConfig(),
        rng=rng,
        durable=durable,
        applied=applied,
        bootstrap=bootstrap,
    )
    if durable is None:
        drain(raft)
    return raft


def drain(raft: RaftNode) -> list[Ready]:
    """Carry out every pending Ready (as if persisted, sent and applied) and return them."""
    readies = []
    while raft.has_ready():
        rd = raft.ready()
        readies.append(rd)
        raft.advance(rd)
    return readies


def sent(readies: Iterable[Ready]) -> list[Message]:
    """All messages of ``readies``, leader messages first in each Ready."""
    return [m for rd in readies for m in (*rd.leader_messages, *rd.messages)]


def msg(type: MessageType, src: str, dst: str, term: int, **fields: object) -> Message:
    return Message(type=type, src=NodeId(src), dst=NodeId(dst), term=term, **fields)  # type: ignore[arg-type]


# helpers ------------------------------------------------------------------------------
def _rng(node_id: str) -> random.Random:
    return random.Random(f"raft-node-{node_id}")


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), node_id) if node_id.isdigit() else (1 << 30, node_id)


def _ids(text: str) -> list[str]:
    return [t for t in re.split(r"[(),\s]+", text) if t]


def _config(kv: dict[str, str]) -> RaftConfig:
    names: dict[str, tuple[str, Callable[[str], object]]] = {
        "pre-vote": ("pre_vote", lambda v: v == "true"),
        "check-quorum": ("check_quorum", lambda v: v == "true"),
        "election": ("election_ticks", int),
        "heartbeat": ("heartbeat_ticks", int),
        "max-msg-bytes": ("max_msg_bytes", int),
        "max-inflight": ("max_inflight", int),
        "chunk": ("snapshot_chunk_bytes", int),
        "trailing": ("trailing_entries", int),
    }
    fields: dict[str, object] = {}
    for key, value in kv.items():
        if key in names:
            field, conv = names[key]
            fields[field] = conv(value)
    return RaftConfig(**fields)  # type: ignore[arg-type]


def _call(fn: Callable[[], str]) -> list[str]:
    try:
        return [fn()]
    except TrickleError as exc:
        return [f"error: {type(exc).__name__}: {exc}"]


def _describe_status(raft: RaftNode) -> str:
    st = raft.status()
    return f"{st.role.value} term={st.term} leader={st.leader or '-'} {st.conf.describe()}"


def _soft(raft: RaftNode) -> tuple[Role, int, NodeId | None]:
    st = raft.status()
    return st.role, st.term, st.leader


def _soft_change(
    node_id: str, before: tuple[Role, int, NodeId | None], raft: RaftNode
) -> list[str]:
    after = _soft(raft)
    if after == before:
        return []
    role, term, leader = after
    return [f"  {node_id} is {role.value} term={term} leader={leader or '-'}"]


__all__ = ["InteractionEnv", "MemStore", "drain", "make_node", "msg", "run_script", "sent"]
