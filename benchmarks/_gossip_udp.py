"""Kill detection with real UDP/TCP sockets on loopback: n gossip members in one process.

`measure_real_udp_detection(n)` starts n GossipDrivers on 127.0.0.1 (port 0, real UDP
and TCP sockets, the LAN preset by default: memberlist's DefaultLANConfig), joins them,
lets them settle, kills one (cancels its scope: its sockets close, as after kill -9), and
returns the seconds until the last live member declares it failed. `benchmarks/gossip.py`
reports it as `detect_s_real_udp_n10`. Run alone for several trials:

    python benchmarks/_gossip_udp.py --n 10 --trials 5 [--preset lan|local|fast]

prints one JSON object (median, each trial, the settings).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import trio

from trickle.gossip.config import PRESETS, GossipConfig
from trickle.gossip.driver import GossipDriver, GossipSubscription
from trickle.gossip.messages import Address, EventKind, MemberEvent

SETTLE_S = 2.0  # seconds the joined cluster runs before the kill
JOIN_TIMEOUT_S = 60.0  # seconds for every member to see every other
DETECT_TIMEOUT_S = 300.0  # seconds for every member to declare the killed one failed


async def _wait_for(sub: GossipSubscription, kind: EventKind, names: set[str]) -> None:
    pending = set(names)
    async for event in sub:
        if isinstance(event, MemberEvent) and event.kind is kind:
            pending.discard(event.member.name)
            if not pending:
                return


async def _detect(n: int, config: GossipConfig, seed: int) -> float:
    rng = random.Random(seed)
    names = [f"node{i:02d}" for i in range(n)]
    drivers = [
        GossipDriver(name, config=config, bind=("127.0.0.1", 0), rng=random.Random(rng.random()))
        for name in names
    ]
    subs = [d.subscribe(maxsize=100_000) for d in drivers]
    scopes = [trio.CancelScope() for _ in drivers]

    async def run(i: int, task_status: trio.TaskStatus[Address]) -> None:
        with scopes[i]:
            await drivers[i].serve(task_status=task_status)

    async with trio.open_nursery() as nursery:
        addresses = [await nursery.start(run, i) for i in range(n)]
        with trio.fail_after(JOIN_TIMEOUT_S):
            for driver in drivers[1:]:
                if await driver.join([addresses[0]]) != 1:
                    raise RuntimeError(f"{driver.name} could not join {addresses[0]}")
            for sub in subs:
                await _wait_for(sub, EventKind.JOIN, set(names))
        await trio.sleep(SETTLE_S)
        victim = rng.randrange(n)
        live = [i for i in range(n) if i != victim]
        killed_at = trio.current_time()
        scopes[victim].cancel()
        with trio.fail_after(DETECT_TIMEOUT_S):
            async with trio.open_nursery() as waiters:
                for i in live:
                    waiters.start_soon(_wait_for, subs[i], EventKind.FAIL, {names[victim]})
        detected = trio.current_time() - killed_at
        nursery.cancel_scope.cancel()
    return detected


def measure_real_udp_detection(n: int = 10, *, preset: str = "lan", seed: int = 0) -> float:
    """Seconds from killing one of `n` real members on loopback (real UDP and TCP sockets,
    the `preset` configuration: memberlist's LAN values by default) until the last live
    member declares it failed. Takes about the detection time plus a few seconds."""
    if n < 2:
        raise ValueError("n must be at least 2")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}")
    return trio.run(_detect, n, PRESETS[preset](), seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="lan")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    trials = []
    for trial in range(args.trials):
        seconds = measure_real_udp_detection(args.n, preset=args.preset, seed=args.seed + trial)
        print(f"trial {trial}: {seconds:.2f} s", file=sys.stderr)
        trials.append(round(seconds, 3))
    result = {
        f"detect_s_real_udp_n{args.n}_median": round(statistics.median(trials), 3),
        "trials_s": trials,
        "n": args.n,
        "preset": args.preset,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
