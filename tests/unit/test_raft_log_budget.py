"""RaftLog.over_budget_from: where the entries kept below a snapshot exceed a byte budget."""

from __future__ import annotations

import random

from trickle.raft._log import RaftLog
from trickle.raft.messages import Entry


def reference(log: RaftLog, index: int, stop: int, budget: int) -> int | None:
    """The walk compaction did before, one entry() per index."""
    i = index
    while i > stop:
        budget -= len(log.entry(i).data)
        if budget < 0:
            return i
        i -= 1
    return None


def test_the_index_where_the_data_first_exceeds_the_budget() -> None:
    log = RaftLog(
        offset=10, offset_term=1, entries=[Entry(1, i, data=b"x" * 10) for i in range(11, 21)]
    )
    assert log.over_budget_from(20, 10, 25) == 18  # 20, 19 fit (20 bytes), 18 makes 30
    assert log.over_budget_from(20, 10, 100) is None  # all ten fit exactly
    assert log.over_budget_from(20, 10, 99) == 11
    assert log.over_budget_from(20, 18, 1000) is None  # stops before the stop index
    assert log.over_budget_from(20, 20, 0) is None  # nothing to walk
    assert log.over_budget_from(15, 10, 0) == 15  # the first entry alone is over


def test_same_answer_as_walking_entry_by_entry() -> None:
    rng = random.Random(5)
    for _ in range(200):
        offset = rng.randrange(0, 50)
        n = rng.randrange(0, 40)
        data = [bytes(rng.randrange(0, 30)) for _ in range(n)]
        log = RaftLog(
            offset=offset,
            offset_term=1,
            entries=[Entry(1, offset + 1 + k, data=d) for k, d in enumerate(data)],
        )
        index = rng.randrange(offset, offset + n + 1)
        stop = rng.randrange(offset, index + 1)
        budget = rng.randrange(0, 300)
        assert log.over_budget_from(index, stop, budget) == reference(log, index, stop, budget)
