"""Options shared by the whole suite: simulation seeds and golden-file rewriting.

A test that takes a ``sim_seed`` argument runs once per seed: ``--sim-seeds N`` (default
DEFAULT_SIM_SEEDS) seeds 0..N-1, or exactly one with ``--sim-seed S`` to replay a failure.
A failing simulation prints its seed in the test id, e.g. ``test_figure8[seed=17]``.
Golden interaction scripts are compared with their expected output; ``--rewrite``
regenerates them after a deliberate change.

Hypothesis runs without its per-example deadline: tests assert behaviour, never speed,
and on a loaded 2-core machine one example can take 100x its usual time.

A suite started in the background by a non-interactive shell (``make test &`` in a
script, ``nohup``) inherits SIGINT ignored, and so would every process it starts: the
tests that stop a server, a benchmark or ``trickle watch`` with Ctrl-C would wait for a
process that cannot hear it. The suite restores Python's default handler first.
"""

from __future__ import annotations

import signal

import pytest
from hypothesis import settings

settings.register_profile("trickle", deadline=None)
settings.load_profile("trickle")

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

DEFAULT_SIM_SEEDS = 8  # per scenario in CI; `--sim-seeds 500` for a soak


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trickle")
    group.addoption("--sim-seed", type=int, default=None, help="replay one simulation seed")
    group.addoption(
        "--sim-seeds",
        type=int,
        default=DEFAULT_SIM_SEEDS,
        help=f"seeds per simulation scenario (default {DEFAULT_SIM_SEEDS})",
    )
    group.addoption("--rewrite", action="store_true", default=False, help="regenerate golden files")


def sim_seeds(config: pytest.Config) -> list[int]:
    one = config.getoption("--sim-seed")
    if one is not None:
        return [one]
    return list(range(config.getoption("--sim-seeds")))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        seeds = sim_seeds(metafunc.config)
        metafunc.parametrize("sim_seed", seeds, ids=[f"seed={s}" for s in seeds])


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """True when golden files should be regenerated instead of compared."""
    return bool(request.config.getoption("--rewrite"))
