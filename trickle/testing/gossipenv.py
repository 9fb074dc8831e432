"""A scripted environment for the gossip core (``Membership``), pure and synchronous.

Members have short names ("a", "b", ...), listen at ``(name, 8946)`` and each has its own
seeded ``random.Random``, so a script replays exactly. Time is a virtual clock that only
moves when a command moves it; packets wait in one mailbox until a command delivers or
drops them. Every UDP packet goes through ``wire.encode_packet``/``decode_packet`` on
delivery and must fit the packet budget (``max_packet_bytes - ENCRYPTION_OVERHEAD``), so
scripts also check the encoding. A TCP request (``Outgoing.stream``) is answered at once
by the receiver's ``receive_stream`` and the answer fed back to the requester's
``receive``, as the driver does; it fails silently to a member that is down or cut off.

What a member did in reaction to a command is printed under it, indented:

    a->b udp: ping seq=1 a->b            a packet sent (now in the mailbox)
    b: fail c#0 dead @c:8946             a membership event or user event
    b: c alive#0 -> suspect#0 until 9.400 (timeout 8.000, confirmations 0/2)
                                         a change of b's view not reported by an event

Commands that let time pass (``run``, ``until-probe``, ``next deliver=true``) stamp each
line with the virtual time; ``lost (reason)`` marks a packet that a cut, a member down or
an unknown address swallowed.

Script syntax (as ``trickle.testing.raftenv``): a command line, ``----``, the expected
output, a blank line; lines starting with ``#`` are comments. Commands::

    add-members a b c [warm=true] [preset=lan|wan|local|fast] [FIELD=VALUE...]
        new members; warm: all members know each other (the ``known=`` warm start);
        FIELD: any GossipConfig field (lifeguard=false, probe_interval=2, ...)
    add-member ID name=NAME [...]    a member whose gossip name differs from its handle
    advance SECONDS                  move the clock only
    poll ID...                       run the members' timers due now
    next [ID] [deliver=true]         move the clock to ID's next deadline (no ID: the
                                     earliest one), polling whoever is due on the way
                                     (deliver: packets delivered at once on the way)
    until-probe ID TARGET            run quietly until ID pings TARGET; stop with that
                                     ping in the mailbox
    run SECONDS [verbose=true]       let time pass: every member is polled at its
                                     deadlines and packets are delivered at once; prints
                                     events and view changes (verbose: every packet too)
    deliver ID [from=ID] [kind=ack]  deliver the pending packets to ID (optionally only
    drop ID [from=ID] [kind=ack]     those from one member, or carrying a kind of message)
    deliver-all | stabilize          deliver what is pending | until nothing is
    partition ID... [| ID...]        cut the listed group(s) from everyone else
    cut ID ID | heal                 cut one link both ways | restore every link
    kill ID | restart ID [incarnation=N]   stop a member | a fresh core, same name
    join ID ID... | leave ID | leave-done ID
    set-tags ID k=v... | user-event ID NAME [PAYLOAD]
    members ID | events ID | stats ID | mailbox

``TinyNet`` beside it is for unit tests that need timing rather than a script: cores on
a network with a fixed delay, run strictly in time order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs

from trickle.errors import TrickleError
from trickle.gossip import wire
from trickle.gossip.config import DEFAULT_PORT, PRESETS, GossipConfig
from trickle.gossip.core import Membership, SuspicionView
from trickle.gossip.messages import (
    Ack,
    Address,
    Alive,
    Dead,
    Event,
    EventKind,
    IndirectPing,
    MemberEvent,
    MemberState,
    Message,
    Nack,
    Outgoing,
    Ping,
    PushPull,
    State,
    Suspect,
    UserEvent,
)

_KINDS: dict[str, type] = {
    "ping": Ping,
    "ping-req": IndirectPing,
    "ack": Ack,
    "nack": Nack,
    "alive": Alive,
    "suspect": Suspect,
    "dead": Dead,
    "event": UserEvent,
    "push-pull": PushPull,
}


def describe_message(message: Message) -> str:
    """Message.describe, with a push-pull's members and events spelled out."""
    if isinstance(message, PushPull):
        members = ",".join(m.describe() for m in sorted(message.members, key=lambda m: m.name))
        events = ",".join(f"{e.name}@{e.ltime}" for e in message.events)
        kind = "join" if message.join else "sync"
        return f"push-pull {kind} from={message.source} [{members}] ltime={message.event_ltime}" + (
            f" events=[{events}]" if events else ""
        )
    return message.describe()


@attrs.define(eq=False)
class EnvMember:
    """One member: its handle in scripts, its core and what the env tracks about it."""

    id: str
    name: str
    addr: Address
    config: GossipConfig
    core: Membership
    generation: int = 0
    up: bool = True
    events: list[Event] = attrs.Factory(list)  # since the last `events ID`
    view: dict[str, tuple[State, int, float | None]] = attrs.Factory(dict)


@attrs.frozen
class InFlight:
    src: str  # the sender's handle
    out: Outgoing


class GossipEnv:
    """Members, a virtual clock and a mailbox of packets, all driven by explicit commands."""

    def __init__(self) -> None:
        self.now = 0.0
        self.members: dict[str, EnvMember] = {}
        self.mailbox: list[InFlight] = []
        self.cut_links: set[frozenset[str]] = set()

    # building ----------------------------------------------------------------------------
    def add_members(
        self, ids: Iterable[str], *, config: GossipConfig, warm: bool = False, name: str = ""
    ) -> list[str]:
        ids = list(ids)
        for member_id in ids:
            if member_id in self.members:
                raise ValueError(f"member {member_id!r} exists")
        out = []
        new = [self._make(member_id, config, name=name or member_id) for member_id in ids]
        if warm:
            everyone = [*self.members.values(), *new]
            known = [MemberState(m.name, m.addr, 0, State.ALIVE) for m in everyone]
            new = [self._make(m.id, config, name=m.name, known=known) for m in new]
        for member in new:
            self.members[member.id] = member
            member.view = self._view(member)
            member.core.take_events()  # its own JOIN: always there, not worth a line
            out.append(f"{member.id}: {self._describe_self(member)}")
        return out

    def _make(
        self,
        member_id: str,
        config: GossipConfig,
        *,
        name: str,
        known: Iterable[MemberState] = (),
        generation: int = 0,
        incarnation: int = 0,
    ) -> EnvMember:
        addr = (member_id, DEFAULT_PORT)
        rng = random.Random(f"gossip-{member_id}-{generation}")
        core = Membership(
            name,
            addr,
            config=config,
            rng=rng,
            now=self.now,
            incarnation=incarnation,
            known=[s for s in known if s.name != name],
        )
        return EnvMember(member_id, name, addr, config, core, generation)

    def restart(self, member_id: str, *, incarnation: int = 0) -> list[str]:
        """A new core for the member (its state is lost), same name and address."""
        old = self.members[member_id]
        member = self._make(
            member_id,
            old.config,
            name=old.name,
            generation=old.generation + 1,
            incarnation=incarnation,
        )
        self.members[member_id] = member
        member.view = self._view(member)
        member.core.take_events()
        return [f"{member.id}: {self._describe_self(member)}"]

    # driving -----------------------------------------------------------------------------
    def advance(self, seconds: float) -> list[str]:
        if seconds < 0:
            raise ValueError("time does not go back")
        self.now += seconds
        return [f"now={self.now:.3f}"]

    def poll(self, member_id: str) -> list[str]:
        member = self.members[member_id]
        if not member.up:
            return [f"{member_id} is down"]
        member.core.poll(now=self.now)
        return self._reaction(member, header=f"poll {member_id} at {self.now:.3f}")

    def next(self, member_id: str | None = None, *, deliver: bool = False) -> list[str]:
        """Move the clock to ID's next deadline (or the earliest one), polling every
        member whose timers come due on the way, in time order. Packets stay in the
        mailbox; with `deliver`, they are delivered at once (and printed) on the way,
        including those sent by the last poll."""
        up = self._up_sorted()
        if not up:
            return ["nobody is up"]
        if member_id is not None:
            end = self.members[member_id].core.next_deadline()
        else:
            end = min(m.core.next_deadline() for m in up)
        out = self.stabilize(stamp=True) if deliver else []
        while True:
            due, member = min(((m.core.next_deadline(), m) for m in up), key=lambda p: p[0])
            if due > end:
                break
            self.now = max(self.now, due)
            member.core.poll(now=self.now)
            lines = self._reaction(member, sends=not deliver)
            if lines:  # a timer with nothing to show (say, a relay forgotten) is skipped
                out += [f"{self.now:.3f} poll {member.id}", *lines]
            if deliver:
                out += self.stabilize(stamp=True)
        self.now = max(self.now, end)
        return out

    def until_probe(self, prober: str, target: str) -> list[str]:
        """Let time pass as `run` does (quietly) until `prober` pings `target` directly;
        stop there, that ping (and whatever else the poll sent) left in the mailbox."""
        member = self.members[prober]
        out = self.stabilize(packets=False, sends=False, stamp=True)
        for _ in range(100_000):
            up = self._up_sorted()
            due, polled = min(((m.core.next_deadline(), m) for m in up), key=lambda p: p[0])
            self.now = max(self.now, due)
            polled.core.poll(now=self.now)
            if polled is member:
                sent = member.core.take_outgoing()
                pings = [
                    m
                    for o in sent
                    if not o.stream
                    for m in o.messages
                    if isinstance(m, Ping) and m.source == member.name
                ]
                self.mailbox += [InFlight(member.id, o) for o in sent]
                if any(p.target == self.members[target].name for p in pings):
                    lines = [f"  {self._describe_flight(InFlight(member.id, o))}" for o in sent]
                    lines += self._reaction(member)  # its events and view changes
                    return [*out, f"{self.now:.3f} poll {prober}", *lines]
            out += self._reaction(polled, sends=False, stamp=True)
            out += self.stabilize(packets=False, sends=False, stamp=True)
        raise AssertionError(f"{prober} never probed {target}")

    def run(self, seconds: float, *, verbose: bool = False) -> list[str]:
        """Let `seconds` pass on a perfect network (but for cuts and members down)."""
        end = self.now + seconds
        out = self.stabilize(packets=verbose, sends=False, stamp=True)
        while True:
            up = self._up_sorted()
            if not up:
                break
            due, member = min(((m.core.next_deadline(), m) for m in up), key=lambda p: p[0])
            if due > end:
                break
            self.now = max(self.now, due)
            member.core.poll(now=self.now)
            out += self._reaction(member, sends=False, stamp=True)
            out += self.stabilize(packets=verbose, sends=False, stamp=True)
        self.now = end
        return [*out, f"now={self.now:.3f}"]

    def deliver(
        self,
        member_id: str,
        *,
        src: str | None = None,
        kind: str | None = None,
        drop: bool = False,
    ) -> list[str]:
        target = self.members[member_id].addr
        wanted = _KINDS[kind] if kind is not None else None
        out: list[str] = []
        chosen: list[InFlight] = []
        keep: list[InFlight] = []
        for flight in self.mailbox:
            matches = (
                flight.out.to == target
                and (src is None or flight.src == src)
                and (wanted is None or any(isinstance(m, wanted) for m in flight.out.messages))
            )
            (chosen if matches else keep).append(flight)
        self.mailbox = keep
        for flight in chosen:
            if drop:
                out.append(f"dropped {self._describe_flight(flight)}")
            else:
                out += self._deliver(flight)
        return out or ["no packets"]

    def deliver_all(
        self, *, packets: bool = True, sends: bool = True, stamp: bool = False
    ) -> list[str]:
        pending, self.mailbox = self.mailbox, []
        out: list[str] = []
        for flight in pending:
            out += self._deliver(flight, packets=packets, sends=sends, stamp=stamp)
        return out

    def stabilize(
        self, *, packets: bool = True, sends: bool = True, stamp: bool = False
    ) -> list[str]:
        out: list[str] = []
        for _ in range(10_000):
            if not self.mailbox:
                return out
            out += self.deliver_all(packets=packets, sends=sends, stamp=stamp)
        raise AssertionError("stabilize did not converge")

    def partition(self, groups: list[list[str]]) -> list[str]:
        """Cut every listed group from every member outside it."""
        for group in groups:
            inside = set(group)
            for a in group:
                for b in self.members:
                    if b not in inside:
                        self.cut_links.add(frozenset((a, b)))
        return ["ok"]

    def cut(self, a: str, b: str) -> list[str]:
        self.cut_links.add(frozenset((a, b)))
        return ["ok"]

    def heal(self) -> list[str]:
        self.cut_links.clear()
        return ["ok"]

    def kill(self, member_id: str) -> list[str]:
        self.members[member_id].up = False
        return ["ok"]

    # operations ----------------------------------------------------------------------------
    def join(self, member_id: str, others: Iterable[str]) -> list[str]:
        member = self.members[member_id]
        addresses = [
            self.members[o].addr if o in self.members else (o, DEFAULT_PORT) for o in others
        ]
        member.core.join(addresses, now=self.now)
        return self._reaction(member) or ["ok"]

    def leave(self, member_id: str) -> list[str]:
        member = self.members[member_id]
        member.core.leave(now=self.now)
        return self._reaction(member) or ["ok"]

    def set_tags(self, member_id: str, tags: dict[str, str]) -> list[str]:
        member = self.members[member_id]
        return _call(lambda: member.core.set_tags(tags, now=self.now)) or self._reaction(member)

    def user_event(self, member_id: str, name: str, payload: bytes) -> list[str]:
        member = self.members[member_id]
        lines = _call(lambda: member.core.send_user_event(name, payload, now=self.now))
        return lines or self._reaction(member)

    # queries -------------------------------------------------------------------------------
    def describe_members(self, member_id: str) -> list[str]:
        core = self.members[member_id].core
        out = []
        for m in core.members():
            line = f"{m.describe()} since {m.state_since:.3f}"
            suspicion = core.suspicion(m.name)
            if suspicion is not None:
                line += " " + _describe_suspicion(suspicion)
            out.append(line)
        return out

    def describe_events(self, member_id: str) -> list[str]:
        member = self.members[member_id]
        out = [e.describe() for e in member.events] or ["no events"]
        member.events = []
        return out

    def stats(self, member_id: str) -> list[str]:
        fields = attrs.asdict(self.members[member_id].core.statistics())
        gauges = ("alive", "suspect", "dead", "left", "incarnation", "health_score")
        first = " ".join(f"{k}={fields.pop(k)}" for k in gauges)
        return [first, " ".join(f"{k}={v}" for k, v in fields.items())]

    def describe_mailbox(self) -> list[str]:
        return [self._describe_flight(f) for f in self.mailbox] or ["empty"]

    # scripts ------------------------------------------------------------------------------
    def run_command(self, command: str) -> list[str]:
        """Run one script command line; returns its output lines."""
        words = command.split()
        name, args = words[0], words[1:]
        kv = {k: v for k, _, v in (a.partition("=") for a in args if "=" in a)}
        pos = [a for a in args if "=" not in a]
        if name in ("add-members", "add-member"):
            warm = kv.pop("warm", "false") == "true"
            member_name = kv.pop("name", "")
            return self.add_members(pos, config=_config(kv), warm=warm, name=member_name)
        if name == "advance":
            return self.advance(float(pos[0]))
        if name == "poll":
            return [line for m in pos for line in self.poll(m)]
        if name == "next":
            return self.next(pos[0] if pos else None, deliver=kv.get("deliver") == "true")
        if name == "until-probe":
            return self.until_probe(pos[0], pos[1])
        if name == "run":
            return self.run(float(pos[0]), verbose=kv.get("verbose") == "true")
        if name in ("deliver", "drop"):
            return self.deliver(
                pos[0], src=kv.get("from"), kind=kv.get("kind"), drop=name == "drop"
            )
        if name == "deliver-all":
            return self.deliver_all() or ["no packets"]
        if name == "stabilize":
            return self.stabilize() or ["no packets"]
        if name == "partition":
            groups: list[list[str]] = [[]]
            for word in pos:
                if word == "|":
                    groups.append([])
                else:
                    groups[-1].append(word)
            return self.partition([g for g in groups if g])
        if name == "cut":
            return self.cut(pos[0], pos[1])
        if name == "heal":
            return self.heal()
        if name == "kill":
            return self.kill(pos[0])
        if name == "restart":
            return self.restart(pos[0], incarnation=int(kv.get("incarnation", "0")))
        if name == "join":
            return self.join(pos[0], pos[1:])
        if name == "leave":
            return self.leave(pos[0])
        if name == "leave-done":
            return [str(self.members[pos[0]].core.leave_done()).lower()]
        if name == "set-tags":
            return self.set_tags(pos[0], kv)
        if name == "user-event":
            payload = pos[2].encode() if len(pos) > 2 else b""
            return self.user_event(pos[0], pos[1], payload)
        if name == "members":
            return self.describe_members(pos[0])
        if name == "events":
            return self.describe_events(pos[0])
        if name == "stats":
            return self.stats(pos[0])
        if name == "mailbox":
            return self.describe_mailbox()
        raise ValueError(f"unknown command {name!r}")

    # internals -----------------------------------------------------------------------------
    def _up_sorted(self) -> list[EnvMember]:
        return [self.members[k] for k in sorted(self.members) if self.members[k].up]

    def _by_addr(self, addr: Address) -> EnvMember | None:
        member = self.members.get(addr[0])
        return member if member is not None and member.addr == addr else None

    def _handle(self, addr: Address) -> str:
        member = self._by_addr(addr)
        return member.id if member is not None else f"{addr[0]}:{addr[1]}"

    def _describe_flight(self, flight: InFlight) -> str:
        via = "tcp" if flight.out.stream else "udp"
        body = " | ".join(describe_message(m) for m in flight.out.messages)
        return f"{flight.src}->{self._handle(flight.out.to)} {via}: {body}"

    def _blocked(self, src: str, dst: EnvMember) -> str | None:
        if not dst.up:
            return f"{dst.id} is down"
        if frozenset((src, dst.id)) in self.cut_links:
            return "cut"
        return None

    def _deliver(
        self, flight: InFlight, *, packets: bool = True, sends: bool = True, stamp: bool = False
    ) -> list[str]:
        """Hand one packet (or TCP request) over. `packets`: print the packet line (with
        the time if `stamp`); `sends`: print what the receiver sent in reaction. The
        receiver's events and view changes are always printed."""
        dst = self._by_addr(flight.out.to)
        src = self.members[flight.src]
        line = self._describe_flight(flight)
        when = f"{self.now:.3f} " if stamp else ""
        reason = "nobody listens there" if dst is None else self._blocked(src.id, dst)
        if flight.out.stream and reason is None and not src.up:
            reason = f"{src.id} is down"
        if reason is not None or dst is None:
            return [f"{when}lost ({reason}) {line}"] if packets else []
        line = when + line
        # under a packet line the reactions need no time; without one they do
        react_stamp = stamp and not packets
        out = [line] if packets else []
        if not flight.out.stream:
            data = wire.encode_packet(flight.out.messages)
            budget = src.config.max_packet_bytes - wire.ENCRYPTION_OVERHEAD
            if len(data) > budget:
                raise AssertionError(f"a {len(data)}-byte packet exceeds {budget}: {line}")
            dst.core.receive(src.addr, wire.decode_packet(data), now=self.now)
            return out + self._reaction(dst, sends=sends, stamp=react_stamp)
        (request,) = flight.out.messages
        answer = dst.core.receive_stream(src.addr, request, now=self.now)
        out += self._reaction(dst, sends=sends, stamp=react_stamp)
        if answer is not None:
            if packets:
                out.append(f"{dst.id}->{src.id} tcp answer: {describe_message(answer)}")
            src.core.receive(dst.addr, [answer], now=self.now)
            out += self._reaction(src, sends=sends, stamp=react_stamp)
        return out

    def _reaction(
        self, member: EnvMember, *, header: str = "", sends: bool = True, stamp: bool = False
    ) -> list[str]:
        """What `member` did since the last look: packets sent (into the mailbox; printed
        if `sends`), events, view changes."""
        prefix = f"  {self.now:.3f} " if stamp else "  "
        out: list[str] = []
        for sent in member.core.take_outgoing():
            flight = InFlight(member.id, sent)
            self.mailbox.append(flight)
            if sends:
                out.append(f"{prefix}{self._describe_flight(flight)}")
        events = member.core.take_events()
        member.events += events
        reported: set[str] = set()
        for event in events:
            out.append(f"{prefix}{member.id}: {event.describe()}")
            if isinstance(event, MemberEvent):
                reported.add(event.member.name)
        view = self._view(member)
        for name in sorted(set(view) | set(member.view)):
            before, after = member.view.get(name), view.get(name)
            if before == after or name in reported or after is None:
                continue
            out.append(f"{prefix}{member.id}: {self._describe_change(member, name, before)}")
        member.view = view
        if header:
            out.insert(0, header)
        return out

    def _view(self, member: EnvMember) -> dict[str, tuple[State, int, float | None]]:
        core = member.core
        view: dict[str, tuple[State, int, float | None]] = {}
        for m in core.members():
            suspicion = core.suspicion(m.name)
            deadline = suspicion.deadline if suspicion is not None else None
            view[m.name] = (m.state, m.incarnation, deadline)
        return view

    def _describe_change(
        self, member: EnvMember, name: str, before: tuple[State, int, float | None] | None
    ) -> str:
        core = member.core
        now = core.member(name)
        assert now is not None
        after = f"{now.state.name.lower()}#{now.incarnation}"
        if before is None:
            line = f"{name} {after}"
        elif (before[0], before[1]) == (now.state, now.incarnation):
            line = f"{name} {after} confirmed,"
        else:
            line = f"{name} {before[0].name.lower()}#{before[1]} -> {after}"
        suspicion = core.suspicion(name)
        if suspicion is not None:
            line += " " + _describe_suspicion(suspicion)
        return line

    def _describe_self(self, member: EnvMember) -> str:
        me = member.core.member(member.name)
        assert me is not None
        others = len(member.core.members()) - 1
        return f"{me.describe()} knows {others} other(s)"


def _describe_suspicion(s: SuspicionView) -> str:
    return (
        f"until {s.deadline:.3f} (timeout {s.deadline - s.since:.3f},"
        f" confirmations {s.confirmations}/{s.needed})"
    )


def _config(kv: dict[str, str]) -> GossipConfig:
    preset = PRESETS[kv.pop("preset", "lan")]
    fields = attrs.fields_dict(GossipConfig)
    overrides: dict[str, object] = {}
    for key, text in kv.items():
        field = key.replace("-", "_")
        if field not in fields:
            raise ValueError(f"unknown config field {key!r}")
        default = getattr(GossipConfig(), field)
        if isinstance(default, bool):
            overrides[field] = text == "true"
        elif isinstance(default, int):
            overrides[field] = int(text)
        else:
            overrides[field] = float(text)
    return preset(**overrides)


def _call(fn: Callable[[], object]) -> list[str]:
    try:
        fn()
    except TrickleError as exc:
        return [f"error: {type(exc).__name__}: {exc}"]
    return []


def run_script(path: Path, *, rewrite: bool = False) -> tuple[str, str]:
    """Run a golden script; returns (expected text, actual text). With ``rewrite`` the
    file is regenerated from the actual output."""
    text = path.read_text()
    env = GossipEnv()
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
        out_lines += [command, "----", *env.run_command(command)]
    actual = "\n".join(out_lines) + "\n"
    if rewrite:
        path.write_text(actual)
    return text, actual


class TinyNet:
    """A timed network for unit tests: cores named `names` that know each other (a warm
    start), every packet delayed `delay` seconds, members that can be downed and links
    cut; polls and deliveries strictly in time order. `fails` records every FAIL event
    as (time, observer, failed), `pings` every direct UDP Ping as (time, prober, target)."""

    def __init__(
        self,
        names: list[str],
        *,
        config: GossipConfig | None = None,
        delay: float = 0.001,
        seed: int = 0,
    ) -> None:
        self.delay = delay
        self.now = 0.0
        states = [MemberState(n, (n, DEFAULT_PORT), 0, State.ALIVE) for n in names]
        self.cores = {
            n: Membership(
                n,
                (n, DEFAULT_PORT),
                config=config or PRESETS["lan"](),
                rng=random.Random(f"tiny-{n}-{seed}"),
                now=0.0,
                known=[s for s in states if s.name != n],
            )
            for n in names
        }
        self.down: set[str] = set()
        self.cut: set[frozenset[str]] = set()
        self.heap: list[tuple[float, int, str, str, tuple[str, Outgoing]]] = []
        self.seq = itertools.count()
        self.fails: list[tuple[float, str, str]] = []
        self.pings: list[tuple[float, str, str]] = []
        for core in self.cores.values():
            core.take_events()
            self.flush(core)

    def flush(self, core: Membership) -> None:
        """Send what `core` wants sent, record its events."""
        for out in core.take_outgoing():
            dst = out.to[0]
            for m in out.messages:
                if isinstance(m, Ping) and not out.stream and m.source == core.name:
                    self.pings.append((self.now, core.name, m.target))
            blocked = dst in self.down or frozenset((core.name, dst)) in self.cut
            if blocked or core.name in self.down:
                continue
            kind = "tcp" if out.stream else "udp"
            entry = (self.now + self.delay, next(self.seq), kind, dst, (core.name, out))
            heapq.heappush(self.heap, entry)
        for event in core.take_events():
            if isinstance(event, MemberEvent) and event.kind is EventKind.FAIL:
                self.fails.append((self.now, core.name, event.member.name))

    def run_until(self, end: float) -> None:
        while True:
            polls = [(c.next_deadline(), n) for n, c in self.cores.items() if n not in self.down]
            due, name = min(polls)
            packet = self.heap[0][0] if self.heap else float("inf")
            if min(due, packet) > end:
                break
            if due <= packet:
                self.now = max(self.now, due)
                self.cores[name].poll(now=self.now)
                self.flush(self.cores[name])
                continue
            self.now, _, kind, dst, (src, out) = heapq.heappop(self.heap)
            if dst in self.down:
                continue
            core = self.cores[dst]
            if kind == "udp":
                core.receive((src, DEFAULT_PORT), out.messages, now=self.now)
            else:
                answer = core.receive_stream((src, DEFAULT_PORT), out.messages[0], now=self.now)
                if answer is not None and src not in self.down:
                    self.cores[src].receive((dst, DEFAULT_PORT), [answer], now=self.now)
                    self.flush(self.cores[src])
            self.flush(core)
        self.now = end


__all__ = ["GossipEnv", "TinyNet", "describe_message", "run_script"]
