"""Target selection (Dkron's tag rules) and the leader's preference, for "any N", of the
members it can reach."""

from __future__ import annotations

import random

from trickle.engine.model import Member
from trickle.engine.targets import select_targets


def member(name: str, **tags: str) -> Member:
    return Member(name=name, addr="10.0.0.1", port=8946, tags={"server": "true", **tags})


SERVERS = [member("a"), member("b"), member("c")]


def names(members: list[Member]) -> set[str]:
    return {m.name for m in members}


def test_any_one_server_is_never_an_unreachable_one_while_others_match() -> None:
    rng = random.Random(1)
    chosen = [
        select_targets({"server": "true:1"}, SERVERS, region="", rng=rng, unreachable={"b"})
        for _ in range(200)
    ]
    assert all(len(c) == 1 for c in chosen)
    assert set().union(*(names(c) for c in chosen)) == {"a", "c"}


def test_any_n_takes_every_reachable_match_and_fills_up_with_unreachable_ones() -> None:
    rng = random.Random(2)
    for _ in range(50):
        chosen = select_targets(
            {"server": "true:2"}, SERVERS, region="", rng=rng, unreachable={"b", "c"}
        )
        assert len(chosen) == 2 and "a" in names(chosen)


def test_a_job_for_every_matching_node_still_targets_an_unreachable_one() -> None:
    chosen = select_targets(
        {"server": "true"}, SERVERS, region="", rng=random.Random(3), unreachable={"b"}
    )
    assert names(chosen) == {"a", "b", "c"}
    assert names(select_targets({}, SERVERS, region="", rng=random.Random(3))) == {"a", "b", "c"}


def test_without_unreachable_members_the_draws_are_the_same_as_before() -> None:
    """The preference consumes no randomness when every member is reachable, so seeded
    simulations replay the same choices."""
    one, two = random.Random(7), random.Random(7)
    for _ in range(100):
        chosen = select_targets({"server": "true:1"}, SERVERS, region="", rng=one, unreachable=())
        assert chosen == two.sample(SERVERS, 1)
