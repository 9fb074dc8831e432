"""Garbage-collector settings for a process whose main job is running an Engine.

A scheduler at hundreds of fires a second allocates and frees many small objects per fire.
With CPython's default first threshold (700 net allocations), the young generations are
collected every few milliseconds, and every object that lives through a fire's launch (tens
of milliseconds: commands, execution records, tasks) is promoted to the oldest generation,
so full collections come every few seconds, each pausing the event loop for tens of
milliseconds. Those pauses were most of trickle's scheduling lateness tail (see
docs/benchmarks.md, issue 2's runs). ``tune_gc`` raises the first threshold, so fire
objects die young, and freezes what is alive at that point (the loaded jobs), so full
collections do not walk it again.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000  # net container allocations between two young collections


def tune_gc() -> None:
    """Freeze the objects alive now and raise the young generation's threshold to
    GEN0_THRESHOLD (the older generations keep theirs). Call it once the Engine has
    started, as ``trickle serve`` does. It changes the whole process: an embedding
    program decides (see docs/embedding.md)."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
