"""Replaying a simulation in fresh interpreters, each with its own PYTHONHASHSEED: a seed
must give the same trace whatever Python's string hashing does (sets, dicts of str)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_SCRIPT = """
import importlib, json, sys
sys.path.insert(0, {root!r})
result = getattr(importlib.import_module({module!r}), {function!r})({seed!r})
print(json.dumps(result))
"""


def results_under_hash_seeds(
    module: str,
    function: str,
    seed: int,
    *,
    hash_seeds: Sequence[str] = ("1", "2"),
    root: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
) -> list[Any]:
    """``module.function(seed)`` run once in a new interpreter per hash seed; its results
    as JSON gives them back (a tuple comes back as a list). ``root`` goes first on the
    import path (default: the current directory, the repository root under pytest), so
    ``module`` may be a test module such as ``tests.sim.test_raft_sim_determinism``."""
    where = str(Path(root) if root is not None else Path.cwd())
    script = _SCRIPT.format(root=where, module=module, function=function, seed=seed)
    results = []
    for hash_seed in hash_seeds:
        out = subprocess.run(
            [sys.executable, "-c", script],
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            capture_output=True,
            text=True,
            check=True,
            cwd=where,
            timeout=timeout,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results
