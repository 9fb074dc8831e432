"""Majority arithmetic over a configuration's voters: commit index, election outcome."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from trickle.raft.messages import NodeId


class VoteResult(enum.Enum):
    PENDING = "pending"  # neither a majority of grants nor of rejections yet
    WON = "won"
    LOST = "lost"


def majority(voters: int) -> int:
    """Votes needed among ``voters`` voters."""
    return voters // 2 + 1


def quorum_value(values: Iterable[int]) -> int:
    """The largest value that a majority of voters has reached (0 when there are none).

    With each voter's match index this is the highest index stored by a quorum.
    """
    ordered = sorted(values, reverse=True)
    if not ordered:
        return 0
    return ordered[len(ordered) // 2]  # ordered[majority(len(ordered)) - 1]


def vote_result(voters: Iterable[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Outcome of an election so far; only votes of ``voters`` count."""
    granted = rejected = total = 0
    for voter in voters:
        total += 1
        vote = votes.get(voter)
        if vote is True:
            granted += 1
        elif vote is False:
            rejected += 1
    need = majority(total)
    if granted >= need:
        return VoteResult.WON
    if total - rejected >= need:
        return VoteResult.PENDING
    return VoteResult.LOST
