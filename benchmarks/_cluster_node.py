"""One server process of the cluster benchmark (benchmarks/cluster.py): ``trickle serve``
with two benchmark executors, ``noop`` and ``seed``.

    python benchmarks/_cluster_node.py [--fire-log FILE|auto] [--node-tag] [--death-pipe] \
        -- <trickle serve flags>

Everything after the benchmark's own flags goes to ``trickle serve`` (``trickle.cli.serve``,
the same click command, so the same flags, environment, config file, ready line, signals
and exit codes). The only difference is the Engine: a subclass that registers, at
construction, the two executors below (``trickle serve`` has no hook to register
executors, so ``trickle.engine._engine.Engine``, which ``serve_node`` imports when it
runs, is replaced by that subclass in this process only).

``noop``: does nothing and succeeds. With ``--fire-log FILE``, each run first appends
one line to FILE (unbuffered, one ``write``), ``<wall clock at start> <scheduled_at>
<job> <node>`` (Unix seconds, 6 decimals; scheduled_at is ``-`` for a manual run): the
executor's own view of when the run started, which is what lateness is about. The
benchmark reads these files; they are on the same host, so one clock.

``seed``: writes finished executions into the history through the engine's own
replicated commands, for the memory figures (a million real runs take hours here). Each
seeded execution is one ``RunStarted`` (the launch intent a scheduled run commits) and
one ``RunFinished`` (its result), proposed together through ``Engine._propose``: the Raft
log, then every server's state machine and SQLite store, exactly as a real run's records
go, minus the scheduler's decision and the executor's call. executor_config (strings):
``jobs`` (comma-separated names of existing jobs; the executions are spread over them in
turn), ``executions`` (how many), ``batch`` (executions per proposal; the replicated log
merges concurrent proposals into entries of up to 2,048 commands, as it does under load),
``concurrency`` (proposals in flight; one dropped by a leader change, so not applied, is
proposed again; one whose fate is unknown fails the run), ``node`` (the node_name recorded, default this
node), ``start`` (Unix seconds of the first seeded started_at; one millisecond apart).
The run's output is one JSON line: executions written, seconds taken, rate.

The node exits at once when its parent process is gone (even killed by SIGKILL), so a
benchmark that dies leaves no server behind. ``--death-pipe``: also when stdin reaches
end of file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEED_BATCH = 50  # executions per seed proposal (100 commands)
SEED_CONCURRENCY = 8  # seed proposals in flight
SEED_RETRIES = 50  # tries of one seed proposal dropped by leader changes (not applied)
SEED_RETRY_PAUSE = 0.2  # seconds between two
PARENT_POLL = 0.5  # seconds between two looks at whether the parent process is gone


class FireLog:
    """Appends one line per noop run to a file, unbuffered (a kill -9 loses nothing)."""

    def __init__(self, path: str | None) -> None:
        self._fd = None if path is None else os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def record(self, started: float, scheduled_at: datetime | None, job: str, node: str) -> None:
        if self._fd is None:
            return
        scheduled = "-" if scheduled_at is None else f"{scheduled_at.timestamp():.6f}"
        os.write(self._fd, f"{started:.6f} {scheduled} {job} {node}\n".encode())


def make_engine_class(fire_log: FireLog) -> type:
    """The Engine subclass ``trickle serve`` constructs in this process: the product's
    Engine with ``noop`` and ``seed`` registered."""
    from trickle.engine._engine import Engine

    class BenchEngine(Engine):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            engine = self

            async def noop(ctx: Any) -> None:
                ex = ctx.execution
                fire_log.record(time.time(), ex.scheduled_at, ex.job_name, ex.node_name)

            async def seed(ctx: Any) -> None:
                summary = await seed_history(engine, ctx.config)
                ctx.output.write(json.dumps(summary) + "\n")

            self.register_executor("noop", noop)
            self.register_executor("seed", seed)

    return BenchEngine


def _int(config: Any, key: str, default: int) -> int:
    raw = config.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"executor_config.{key} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"executor_config.{key} must be at least 1, got {value}")
    return value


async def seed_history(engine: Any, config: Any) -> dict[str, Any]:
    """Commit ``executions`` finished executions of ``jobs`` (see the module docstring)."""
    import trio

    from trickle.engine import commands as c
    from trickle.engine.model import Execution, ExecutionStatus, Trigger, execution_id, group_id
    from trickle.errors import NotLeader, ProposalDropped

    jobs = [j for j in str(config.get("jobs", "")).split(",") if j]
    if not jobs:
        raise ValueError("executor_config.jobs must name at least one job")
    total = _int(config, "executions", 1)
    batch = _int(config, "batch", SEED_BATCH)
    concurrency = _int(config, "concurrency", SEED_CONCURRENCY)
    node = str(config.get("node") or engine.node_name)
    start = float(config.get("start") or (time.time() - 30 * 86_400))
    base = datetime.fromtimestamp(start, UTC)
    counter = iter(range(total))
    errors: list[str] = []
    retries = {"leader_changes": 0}
    written = 0

    def pair(i: int) -> tuple[Any, Any]:
        at = base + timedelta(milliseconds=i)
        ex = Execution(
            id=execution_id(at, node),
            job_name=jobs[i % len(jobs)],
            node_name=node,
            group=group_id(at),
            started_at=at,
            status=ExecutionStatus.RUNNING,
            trigger=Trigger.SCHEDULE,
            scheduled_at=at,
        )
        finished = c.RunFinished(
            job_name=ex.job_name,
            execution_id=ex.id,
            finished_at=at + timedelta(microseconds=500),
            success=True,
            output="",
        )
        return c.RunStarted(execution=ex), finished

    async def proposer() -> None:
        nonlocal written
        while True:
            indexes = [i for _, i in zip(range(batch), counter, strict=False)]
            if not indexes:
                return
            pairs = [pair(i) for i in indexes]
            commands = [p[0] for p in pairs] + [p[1] for p in pairs]
            for _attempt in range(SEED_RETRIES):
                try:
                    results = await engine._propose(commands)
                    break
                except (NotLeader, ProposalDropped):  # not applied: the same batch again
                    retries["leader_changes"] += 1
                    await trio.sleep(SEED_RETRY_PAUSE)
            else:
                raise RuntimeError(f"seed proposal dropped {SEED_RETRIES} times")
            failed = [a.error for a in results if a.error is not None]
            if failed:
                errors.append(f"{type(failed[0]).__name__}: {failed[0]}")
                raise RuntimeError(f"seed proposal refused: {errors[-1]}")
            written += len(indexes)

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(proposer)
    seconds = time.monotonic() - t0
    return {
        "executions": written,
        "seconds": round(seconds, 3),
        "per_s": round(written / seconds, 1) if seconds else None,
        "batch": batch,
        "concurrency": concurrency,
        "proposals_retried": retries["leader_changes"],
    }


def die_with_parent(stdin_watch: bool) -> None:
    """Exit at once when the process that started this one is gone (a daemon thread
    polls the parent pid every PARENT_POLL seconds: PR_SET_PDEATHSIG would fire when the
    parent's *thread* that started us ends, and Trio starts processes from worker
    threads). With ``stdin_watch``, also exit when stdin closes."""
    parent = os.getppid()

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(3)

    threading.Thread(target=watch_parent, daemon=True, name="watch-parent").start()
    if stdin_watch:

        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(3)

        threading.Thread(target=watch_stdin, daemon=True, name="death-pipe").start()


def _flag(args: Sequence[str], name: str) -> str | None:
    """The value of ``name`` in a command line (``--flag value`` or ``--flag=value``)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, serve_args = argv[:split], argv[split + 1 :]
    else:
        own, serve_args = [], argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--fire-log", metavar="FILE", help="append one line per noop run (auto: <data dir>.fires)"
    )
    parser.add_argument("--node-tag", action="store_true", help="add the tag node=<node name>")
    parser.add_argument("--death-pipe", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(own)
    die_with_parent(args.death_pipe)
    if args.fire_log == "auto":
        data_dir = _flag(serve_args, "--data-dir")
        if data_dir is None:
            parser.error("--fire-log auto needs --data-dir among the serve flags")
        args.fire_log = str(Path(data_dir).absolute()) + ".fires"
    if args.node_tag:
        name = _flag(serve_args, "--node-name")
        if name is None:
            parser.error("--node-tag needs --node-name among the serve flags")
        serve_args = [*serve_args, "--tag", f"node={name}"]

    import trickle.engine._engine as engine_module
    from trickle.cli.serve import serve

    engine_module.Engine = make_engine_class(FireLog(args.fire_log))  # type: ignore[misc]
    serve.main(args=serve_args, prog_name="trickle serve")


if __name__ == "__main__":
    main()
