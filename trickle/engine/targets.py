"""Target selection: which members run a job, by Dkron's tag rules. Pure.

A job's ``tags`` map ``key -> "value[:count]"``. Candidates are alive members of the
leader's region carrying every job tag with exactly that value; with counts, the smallest
count wins and that many candidates are chosen at random; no tags means every candidate.

Choosing "any N" of them, the leader prefers the members it can reach: a member gossip
still calls alive, but whose RPC connection the leader has just failed to open (a server
killed a moment ago, before gossip's failure detection declares it), is taken only when
too few others match. Dkron picks it and the run fails; here the fire runs elsewhere.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence

from trickle.engine.model import Member


def parse_tag(value: str) -> tuple[str, int | None]:
    """``"value[:count]"`` -> (value, count or None)."""
    parts = value.split(":")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return value, None


def select_targets(
    job_tags: Mapping[str, str],
    members: Sequence[Member],
    *,
    region: str,
    rng: random.Random,
    unreachable: Collection[str] = (),
) -> list[Member]:
    """The members a run of a job with ``job_tags`` goes to. ``unreachable``: names of
    members the leader cannot reach right now, chosen last for "any N" (a job without a
    count runs on every candidate, reachable or not: its run there is recorded failed)."""
    candidates = [
        m for m in members if m.status == "alive" and m.tags.get("region", region) == region
    ]
    count: int | None = None
    for key, raw in job_tags.items():
        value, n = parse_tag(raw)
        candidates = [m for m in candidates if m.tags.get(key) == value]
        if n is not None:
            count = n if count is None else min(count, n)
    if count is None or count >= len(candidates):
        return candidates
    if unreachable:
        reachable = [m for m in candidates if m.name not in unreachable]
        if len(reachable) >= count:
            return rng.sample(reachable, count)
        rest = [m for m in candidates if m.name in unreachable]
        return reachable + rng.sample(rest, count - len(reachable))
    return rng.sample(candidates, count)


def describe_tags(job_tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(job_tags.items())) or "(none)"
