"""Target selection: which members run a job, by Dkron's tag rules. Pure.

A job's ``tags`` map ``key -> "value[:count]"``. Candidates are alive members of the
leader's region carrying every job tag with exactly that value; with counts, the smallest
count wins and that many candidates are chosen at random; no tags means every candidate.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

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
) -> list[Member]:
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
    return rng.sample(candidates, count)


def describe_tags(job_tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(job_tags.items())) or "(none)"
