"""The gossip driver on MockClock over the in-memory network: join, failure detection,
leave, tags, user events, subscribers, loss, partitions, encryption and bad input."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

import pytest
import trio

from trickle.errors import ValidationError
from trickle.gossip.config import GossipConfig, lan
from trickle.gossip.driver import (
    EventsLost,
    GossipDriver,
    GossipNotServing,
    GossipSubscription,
    SubscriberEvent,
)
from trickle.gossip.keyring import Keyring, generate_key
from trickle.gossip.messages import (
    Address,
    EventKind,
    MemberEvent,
    Ping,
    State,
    UserEventReceived,
)
from trickle.gossip.wire import encode_packet
from trickle.testing.gossipnet import MemoryNetwork

WAIT = 600.0  # virtual seconds any wait below may take before the test fails


class Watcher:
    """Everything one subscriber saw, with the virtual time it arrived."""

    def __init__(self, sub: GossipSubscription) -> None:
        self.sub = sub
        self.seen: list[tuple[float, SubscriberEvent]] = []

    async def wait(
        self, predicate: Callable[[SubscriberEvent], bool], *, since: float = -math.inf
    ) -> float:
        """The time of the first event matching `predicate` that arrived at or after
        `since` (waiting for it if needed)."""
        for at, event in self.seen:
            if at >= since and predicate(event):
                return at
        async for event in self.sub:
            at = trio.current_time()
            self.seen.append((at, event))
            if at >= since and predicate(event):
                return at
        raise AssertionError("the subscription ended")

    def events(self) -> list[SubscriberEvent]:
        while True:
            try:
                event = self.sub.receive_nowait()
            except trio.WouldBlock:
                break
            self.seen.append((trio.current_time(), event))
        return [event for _, event in self.seen]


def is_event(kind: EventKind, name: str) -> Callable[[SubscriberEvent], bool]:
    def match(event: SubscriberEvent) -> bool:
        return isinstance(event, MemberEvent) and event.kind is kind and event.member.name == name

    return match


class Node:
    def __init__(self, driver: GossipDriver) -> None:
        self.driver = driver
        self.scope = trio.CancelScope()
        self.address: Address = ("", 0)
        self.watcher = Watcher(driver.subscribe(maxsize=10_000))

    @property
    def name(self) -> str:
        return self.driver.name


class Cluster:
    """Drivers on one MemoryNetwork, each in its own cancel scope (stop = crash)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        seed: int = 0,
        config: GossipConfig | None = None,
        loss: float = 0.0,
    ) -> None:
        self.nursery = nursery
        self.seed = seed
        self.config = config or lan()
        self.net = MemoryNetwork(rng=random.Random(seed), loss=loss)
        self.nodes: dict[str, Node] = {}

    async def start(self, name: str, **options: object) -> Node:
        transport = self.net.transport(options.pop("address", None))  # type: ignore[arg-type]
        driver = GossipDriver(
            name,
            config=options.pop("config", self.config),  # type: ignore[arg-type]
            transport=transport,
            rng=random.Random(f"{self.seed}-{name}"),
            **options,  # type: ignore[arg-type]
        )
        node = Node(driver)

        async def run(task_status: trio.TaskStatus[Address]) -> None:
            with node.scope:
                await driver.serve(task_status=task_status)

        node.address = await self.nursery.start(run)
        self.nodes[name] = node
        return node

    async def start_joined(self, names: list[str], **options: object) -> list[Node]:
        """Start `names`; each later one joins the first; wait until all see all."""
        nodes = [await self.start(name, **options) for name in names]
        for node in nodes[1:]:
            assert await node.driver.join([nodes[0].address]) == 1
        with trio.fail_after(WAIT):
            for node in nodes:
                for other in nodes:
                    await node.watcher.wait(is_event(EventKind.JOIN, other.name))
        return nodes

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.scope.cancel_called]

    def kill(self, name: str) -> None:
        self.nodes[name].scope.cancel()


NAMES = ["a", "b", "c", "d", "e"]


async def test_members_join_and_see_each_other_alive(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES)
        for node in nodes:
            members = node.driver.members()
            assert [m.name for m in members] == NAMES
            assert all(m.state is State.ALIVE for m in members)
            assert node.driver.member(node.name).addr == node.address  # type: ignore[union-attr]
        stats = nodes[0].driver.statistics()
        assert stats.membership is not None and stats.membership.alive == len(NAMES)
        assert stats.packets_sent > 0 and stats.packets_received > 0
        assert stats.malformed == stats.rejected_decrypt == stats.internal_errors == 0
        nursery.cancel_scope.cancel()


async def test_killed_member_is_declared_failed_by_everyone_in_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = lan()
    n = len(NAMES)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, config=config)
        await cluster.start_joined(NAMES)
        await trio.sleep(5)
        killed_at = trio.current_time()
        cluster.kill("c")
        with trio.fail_after(WAIT):
            times = [
                await node.watcher.wait(is_event(EventKind.FAIL, "c")) - killed_at
                for node in cluster.live()
            ]
        # A first probe of "c" comes within n - 1 probe periods (round robin), then at
        # worst the whole Lifeguard suspicion timeout without confirmations, then the
        # news spreads by gossip.
        bound = n * config.probe_interval + config.suspicion_max_timeout(n) + 2.0
        assert max(times) <= bound, times
        # the other observers' confirmations bring the suspicion down to its minimum
        expected = n * config.probe_interval + config.suspicion_timeout(n) + 2.0
        assert statistics.median(times) <= expected, times
        # with four independent observers the confirmations shorten it a lot
        assert min(times) >= config.suspicion_timeout(n), times
        for node in cluster.live():
            assert node.driver.member("c").state is State.DEAD  # type: ignore[union-attr]
            assert not any(
                is_event(EventKind.FAIL, other.name)(e)
                for e in node.watcher.events()
                for other in cluster.live()
            )
        nursery.cancel_scope.cancel()


async def test_member_killed_on_the_network_is_declared_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES[:4])
        cluster.net.kill(nodes[3].address)
        with trio.fail_after(WAIT):
            for node in nodes[:3]:
                await node.watcher.wait(is_event(EventKind.FAIL, "d"))
        nursery.cancel_scope.cancel()


async def test_member_that_leaves_is_seen_as_left_not_failed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES)
        with trio.fail_after(WAIT):
            assert await nodes[1].driver.leave(timeout=10)
        cluster.kill("b")
        with trio.fail_after(WAIT):
            for node in cluster.live():
                await node.watcher.wait(is_event(EventKind.LEAVE, "b"))
        await trio.sleep(120)  # long past any suspicion timeout
        for node in cluster.live():
            assert node.driver.member("b").state is State.LEFT  # type: ignore[union-attr]
            assert not any(is_event(EventKind.FAIL, "b")(e) for e in node.watcher.events())
        nursery.cancel_scope.cancel()


async def test_tag_update_reaches_every_member(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES, tags={"role": "agent"})
        nodes[2].driver.set_tags({"role": "server", "dc": "east"})
        assert nodes[2].driver.tags == {"role": "server", "dc": "east"}

        def updated(event: SubscriberEvent) -> bool:
            return (
                is_event(EventKind.UPDATE, "c")(event)
                and isinstance(event, MemberEvent)
                and dict(event.member.tags) == {"role": "server", "dc": "east"}
            )

        with trio.fail_after(WAIT):
            for node in nodes:
                await node.watcher.wait(updated)
        for node in nodes:
            assert dict(node.driver.member("c").tags) == {"role": "server", "dc": "east"}  # type: ignore[union-attr]
            assert dict(node.driver.member("a").tags) == {"role": "agent"}  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def test_tags_over_the_limit_are_refused(autojump_clock: trio.abc.Clock) -> None:
    with pytest.raises(ValidationError, match="tags"):
        GossipDriver("x", transport=MemoryNetwork().transport(), tags={"k": "v" * 600})
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        node = await cluster.start("a")
        with pytest.raises(ValidationError):
            node.driver.set_tags({"k": "v" * 600})
        assert node.driver.tags == {}
        nursery.cancel_scope.cancel()


async def test_user_event_is_delivered_once_to_every_member(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES)
        ltime = nodes[0].driver.send_user_event("deploy", b"v2")

        def deploy(event: SubscriberEvent) -> bool:
            return isinstance(event, UserEventReceived) and event.name == "deploy"

        with trio.fail_after(WAIT):
            for node in nodes:
                await node.watcher.wait(deploy)
        await trio.sleep(60)
        for node in nodes:
            got = [e for e in node.watcher.events() if deploy(e)]
            assert len(got) == 1
            assert isinstance(got[0], UserEventReceived)
            assert (got[0].ltime, got[0].payload) == (ltime, b"v2")
        with pytest.raises(ValidationError):
            nodes[0].driver.send_user_event("big", b"x" * 1000)
        nursery.cancel_scope.cancel()


async def test_slow_subscriber_loses_events_and_never_blocks_the_member(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        first = await cluster.start("a")
        stuck = first.driver.subscribe(maxsize=2)  # never read until the end
        nodes = [first] + [await cluster.start(name) for name in NAMES[1:]]
        for node in nodes[1:]:
            assert await node.driver.join([first.address]) == 1
        for i in range(20):
            nodes[1].driver.set_tags({"round": str(i)})
            await trio.sleep(1)

        def last_round(event: SubscriberEvent) -> bool:
            return (
                isinstance(event, MemberEvent)
                and event.member.name == "b"
                and event.member.tags.get("round") == "19"
            )

        with trio.fail_after(WAIT):
            await first.watcher.wait(last_round)  # the member went on meanwhile
        held = []
        while True:
            try:
                held.append(stuck.receive_nowait())
            except trio.WouldBlock:
                break
        assert len(held) == 3 and isinstance(held[2], EventsLost)
        assert held[2].count == stuck.dropped > 0
        assert first.driver.statistics().events_dropped == stuck.dropped
        stuck.close()
        with pytest.raises(trio.EndOfChannel):
            await stuck.receive()
        nursery.cancel_scope.cancel()


async def test_no_member_is_declared_failed_under_moderate_loss(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, seed=7)
        nodes = await cluster.start_joined(NAMES)
        cluster.net.loss = 0.05
        await trio.sleep(300)
        for node in nodes:
            assert not any(
                isinstance(e, MemberEvent) and e.kind is EventKind.FAIL
                for e in node.watcher.events()
            ), node.name
            assert all(m.state is State.ALIVE for m in node.driver.members())
        assert cluster.net.lost > 0
        nursery.cancel_scope.cancel()


async def test_partitioned_members_fail_each_other_and_merge_after_heal(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = lan(reconnect_interval=10.0)
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, config=config)
        nodes = await cluster.start_joined(NAMES[:4])
        left, right = nodes[:2], nodes[2:]
        cluster.net.partition([n.address for n in left], [n.address for n in right])
        sides = [(left, right), (right, left)]
        with trio.fail_after(WAIT):
            for here, there in sides:
                for node in here:
                    for other in there:
                        await node.watcher.wait(is_event(EventKind.FAIL, other.name))
        cluster.net.heal()
        healed_at = trio.current_time()
        with trio.fail_after(WAIT):  # the failed members are rejoined every reconnect_interval
            for here, there in sides:
                for node in here:
                    for other in there:
                        back = is_event(EventKind.JOIN, other.name)
                        await node.watcher.wait(back, since=healed_at)
        for node in nodes:
            assert all(m.state is State.ALIVE for m in node.driver.members()), node.name
        nursery.cancel_scope.cancel()


async def test_join_retries_until_a_member_answers(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        a = await cluster.start("a")
        later: Address = ("10.9.9.9", 8946)

        async def start_later() -> None:
            await trio.sleep(25)
            await cluster.start("b", address=later)

        nursery.start_soon(start_later)
        t0 = trio.current_time()
        answered = await a.driver.join([later], attempts=None, retry_interval=10)
        assert answered == 1
        assert 25 <= trio.current_time() - t0 <= 31
        assert await a.driver.join(["10.7.7.7:8946"], attempts=2, retry_interval=1) == 0
        with pytest.raises(ValidationError):
            await a.driver.join([])
        with pytest.raises(ValidationError):
            await a.driver.join(["host:notaport"])
        nursery.cancel_scope.cancel()


async def test_operations_need_a_serving_member(autojump_clock: trio.abc.Clock) -> None:
    driver = GossipDriver("a", transport=MemoryNetwork().transport())
    assert driver.members() == [] and driver.member("a") is None
    assert driver.statistics().membership is None
    with pytest.raises(GossipNotServing):
        await driver.join(["10.0.0.2"])
    with pytest.raises(GossipNotServing):
        driver.send_user_event("x")
    with pytest.raises(GossipNotServing):
        await driver.leave()
    driver.set_tags({"dc": "a"})  # the tags it will start with
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.serve)
        assert dict(driver.member("a").tags) == {"dc": "a"}  # type: ignore[union-attr]
        with pytest.raises(RuntimeError):
            await driver.serve()
        nursery.cancel_scope.cancel()
    with pytest.raises(GossipNotServing):
        driver.send_user_event("x")


async def test_restarted_member_comes_back_alive(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES[:3])
        victim = nodes[2]
        incarnation = victim.driver.member("c").incarnation  # type: ignore[union-attr]
        cluster.kill("c")
        with trio.fail_after(WAIT):
            for node in nodes[:2]:
                await node.watcher.wait(is_event(EventKind.FAIL, "c"))
        failed_at = trio.current_time()
        # a new process at the same address, under the same name
        restarted = await cluster.start("c", address=victim.address)
        assert await restarted.driver.join([nodes[0].address]) == 1
        with trio.fail_after(WAIT):
            for node in nodes[:2]:
                await node.watcher.wait(is_event(EventKind.JOIN, "c"), since=failed_at)
                member = node.driver.member("c")
                assert member is not None and member.state is State.ALIVE
                assert member.incarnation > incarnation
        nursery.cancel_scope.cancel()


async def test_encrypted_cluster_works_and_rejects_plaintext_and_wrong_keys(
    autojump_clock: trio.abc.Clock,
) -> None:
    key = generate_key()
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = []
        for name in NAMES[:3]:
            nodes.append(await cluster.start(name, keyring=Keyring([key])))
        for node in nodes[1:]:
            assert await node.driver.join([nodes[0].address]) == 1
        with trio.fail_after(WAIT):
            for node in nodes:
                for other in nodes:
                    await node.watcher.wait(is_event(EventKind.JOIN, other.name))
        plain = await cluster.start("plain")
        assert await plain.driver.join([nodes[0].address]) == 0
        wrong = await cluster.start("wrong", keyring=Keyring([generate_key()]))
        assert await wrong.driver.join([nodes[0].address]) == 0
        assert nodes[0].driver.statistics().rejected_decrypt >= 2
        # the plaintext member also refuses what the encrypted ones send it
        assert plain.driver.statistics().rejected_decrypt == 0
        assert [m.name for m in nodes[0].driver.members()] == ["a", "b", "c"]
        nursery.cancel_scope.cancel()


async def test_keys_rotate_at_runtime_without_losing_anyone(
    autojump_clock: trio.abc.Clock,
) -> None:
    old, new = generate_key(), generate_key()
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = []
        for name in NAMES[:3]:
            nodes.append(await cluster.start(name, keyring=Keyring([old])))
        for node in nodes[1:]:
            assert await node.driver.join([nodes[0].address]) == 1
        for node in nodes:
            node.driver.install_key(new)
        for node in nodes:
            node.driver.use_key(new)
            await trio.sleep(3)
        for node in nodes:
            node.driver.remove_key(old)
        with pytest.raises(ValidationError):
            nodes[0].driver.remove_key(new)
        await trio.sleep(60)
        for node in nodes:
            assert all(m.state is State.ALIVE for m in node.driver.members()), node.name
            assert not any(
                isinstance(e, MemberEvent) and e.kind is EventKind.FAIL
                for e in node.watcher.events()
            )
        stale = await cluster.start("stale", keyring=Keyring([old]))
        assert await stale.driver.join([nodes[0].address]) == 0
        nursery.cancel_scope.cancel()


async def test_garbage_packets_are_dropped_and_counted(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES[:3])
        rogue = cluster.net.transport(("10.6.6.6", 8946))

        async def nothing(source: Address, payload: bytes) -> bytes | None:
            return None

        await nursery.start(rogue.serve, nothing)
        target = nodes[0].address
        for data in (b"", b"\x00", b"\x92\x01", b"garbage" * 10, b"\xc1" * 40):
            rogue.send_packet(target, data)
        ping = Ping(seq=1, target="a", source="rogue", source_addr=("10.6.6.6", 8946))
        rogue.send_packet(target, encode_packet([ping])[:-3])  # truncated
        keyed = Keyring([generate_key()]).encrypt(encode_packet([ping]))
        rogue.send_packet(target, keyed)  # encrypted, to a member without a key
        assert await rogue.request(target, b"\x01\x02\x03", timeout=5) is None
        await trio.sleep(1)
        stats = nodes[0].driver.statistics()
        assert stats.malformed >= 6
        assert stats.rejected_decrypt == 1
        assert stats.internal_errors == 0
        # and the member carries on
        nodes[1].driver.set_tags({"still": "here"})
        with trio.fail_after(WAIT):
            await nodes[0].watcher.wait(is_event(EventKind.UPDATE, "b"))
        nursery.cancel_scope.cancel()


async def test_tcp_exchanges_beyond_max_streams_are_dropped_and_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery)
        nodes = await cluster.start_joined(NAMES[:3])
        lonely = await cluster.start("z", max_streams=1)
        assert await lonely.driver.join([nodes[0].address]) == 1
        with trio.fail_after(WAIT):
            for node in nodes:
                await node.watcher.wait(is_event(EventKind.JOIN, "z"))
        # cut off, each failed probe starts a TCP ping that hangs until tcp_timeout
        cluster.net.isolate(lonely.address)
        await trio.sleep(3 * lonely.driver.config.probe_interval)
        assert lonely.driver.statistics().streams_dropped > 0
        nursery.cancel_scope.cancel()
