"""trickle.tune_gc: what trickle serve does to the garbage collector once started."""

from __future__ import annotations

import gc

import trickle
from trickle.gctuning import GEN0_THRESHOLD


def test_tune_gc_freezes_what_is_alive_and_raises_only_the_young_threshold():
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        trickle.tune_gc()
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
