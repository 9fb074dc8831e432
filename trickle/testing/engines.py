"""Engines a test runs side by side in one nursery, each stoppable on its own."""

from __future__ import annotations

import trio

from trickle.engine._engine import Engine
from trickle.engine.events import EventKind

CLUSTER_WAIT = 60.0  # seconds (virtual ones on a MockClock) ``leader``, ``wait_alive`` wait at most


class EngineGroup:
    """Engines run in ``nursery``, each in a cancel scope of its own: ``stop`` ends one (as
    a crash of its process would, for an in-memory engine) and returns once it has ended.
    Test harnesses subclass it and build their engines; ``engines`` maps names to the
    last engine started under each."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.engines: dict[str, Engine] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._stopped: dict[str, trio.Event] = {}

    async def run(self, name: str, engine: Engine) -> Engine:
        """Start ``engine`` under ``name`` (a stopped one of that name is replaced);
        returns it once it runs (``Engine.run``'s ``task_status``)."""
        scope, stopped = trio.CancelScope(), trio.Event()

        async def run(task_status: trio.TaskStatus[Engine]) -> None:
            try:
                with scope:
                    await engine.run(task_status=task_status)
            finally:
                stopped.set()

        await self.nursery.start(run)
        self.engines[name], self._scopes[name], self._stopped[name] = engine, scope, stopped
        return engine

    async def stop(self, name: str) -> None:
        """End the engine started under ``name`` and wait until it has."""
        self._scopes[name].cancel()
        await self._stopped[name].wait()

    async def leader(self) -> Engine:
        """The one running engine that leads, once there is exactly one (TooSlowError
        after CLUSTER_WAIT seconds). Polls: leadership is a fact across engines."""
        with trio.fail_after(CLUSTER_WAIT):
            while True:
                leaders = [e for e in self.engines.values() if e.running and e.is_leader()]
                if len(leaders) == 1:
                    return leaders[0]
                await trio.sleep(0.02)


async def wait_alive(engine: Engine, names: set[str]) -> None:
    """Until gossip on ``engine`` counts every one of ``names`` alive (others may be too),
    checked after every membership event; TooSlowError after CLUSTER_WAIT seconds."""
    kinds = [kind for kind in EventKind if kind.startswith("member_")]
    with trio.fail_after(CLUSTER_WAIT), engine.subscribe(kinds=kinds) as events:
        while not names <= {m.name for m in engine.members() if m.status == "alive"}:
            await events.receive()
