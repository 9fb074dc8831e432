"""The runner: executes dispatched runs on this node, within its concurrency limits.

A submitted run waits in a FIFO queue until both the node-wide limit and its executor's
limit have room (runs are never dropped), then its executor runs, its output streams to
``on_output`` chunk by chunk, its processors run, and the result is handed to ``report``.
"""

from __future__ import annotations

import codecs
import heapq
import logging
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import datetime

import attrs
import trio

from trickle.engine.clock import Clock
from trickle.engine.commands import RunFinished
from trickle.engine.executors.base import ExecutionContext, ExecutorResult, OutputBuffer
from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.ledger import ProcessLedger
from trickle.engine.model import BusyExecution, Execution, Job
from trickle.engine.processors import ProcessorRegistry, run_processors
from trickle.errors import TrickleError

# turns a run launched early lets the others have while one launched with it is due before
START_ORDER_TURNS = 8
logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class _Active:
    job: Job
    execution: Execution
    output: OutputBuffer
    queued: bool = True
    started_running: datetime | None = None
    start_at: datetime | None = None  # launched early: the executor starts at this instant
    in_starting: bool = False  # start_at is in Runner._starting


class Runner:
    def __init__(
        self,
        *,
        node_name: str,
        executors: ExecutorRegistry,
        processors: ProcessorRegistry,
        clock: Clock,
        output_limit: int,
        max_concurrent: int,
        executor_limits: dict[str, int],
        on_output: Callable[[Execution, str], None],
        processes: ProcessLedger | None = None,
        on_start: Callable[[Execution, datetime], None],
        report: Callable[[RunFinished], Awaitable[None]],
    ) -> None:
        self._node_name = node_name
        self._executors = executors
        self._processors = processors
        self._clock = clock
        self._output_limit = output_limit
        self._overall = trio.CapacityLimiter(max_concurrent) if max_concurrent > 0 else None
        self._limits = dict(executor_limits)
        self._limiters: dict[str, trio.CapacityLimiter] = {}
        self._on_output = on_output
        self._processes = processes
        self._on_start = on_start
        self._report = report
        self._active: dict[str, _Active] = {}
        self._nursery: trio.Nursery | None = None
        self._idle = trio.Event()
        # start_at of the runs launched early that have not begun to spin (a heap: see
        # _start_at)
        self._starting: list[datetime] = []
        self._idle.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    @property
    def accepting(self) -> bool:
        """False once the runner stops (its nursery is gone)."""
        return self._nursery is not None

    def submit(self, job: Job, execution: Execution, *, start_at: datetime | None = None) -> None:
        """Queue ``execution`` of ``job`` (the job as of the fire). Never blocks.
        ``start_at``: the run was launched a moment before its instant (the engine's
        ``launch_spin``); its executor starts at that instant, not before."""
        if self._nursery is None:
            raise RuntimeError("the runner is not running")
        active = _Active(
            job=job,
            execution=execution,
            output=OutputBuffer(self._output_limit),
            start_at=start_at,
        )
        self._active[execution.id] = active
        if start_at is not None:
            heapq.heappush(self._starting, start_at)
            active.in_starting = True
        if self._idle.is_set():
            self._idle = trio.Event()
        self._nursery.start_soon(self._run_one, active, name=f"run {execution.id}")

    def busy(self) -> list[BusyExecution]:
        return [
            BusyExecution(execution=a.execution, queued=a.queued, output_tail=_tail(a.output))
            for a in sorted(self._active.values(), key=lambda a: a.execution.started_at)
        ]

    @property
    def running_count(self) -> int:
        return sum(1 for a in self._active.values() if not a.queued)

    @property
    def queued_count(self) -> int:
        return sum(1 for a in self._active.values() if a.queued)

    def is_active(self, execution_id: str) -> bool:
        return execution_id in self._active

    def _limiter(self, executor: str) -> trio.CapacityLimiter | None:
        limit = self._limits.get(executor, 0)
        if limit <= 0:
            return None
        limiter = self._limiters.get(executor)
        if limiter is None:
            limiter = self._limiters[executor] = trio.CapacityLimiter(limit)
        return limiter

    async def _run_one(self, active: _Active) -> None:
        ex, job = active.execution, active.job
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def on_chunk(data: bytes) -> None:
            text = decoder.decode(data)
            if text:
                self._on_output(ex, text)

        active.output = OutputBuffer(self._output_limit, on_chunk=on_chunk)
        try:
            async with AsyncExitStack() as stack:
                for limiter in (self._limiter(job.executor), self._overall):
                    if limiter is not None:
                        if limiter.available_tokens < 1:  # it waits its turn: it must not
                            self._starting_done(active)  # hold back the runs launched with it
                        await stack.enter_async_context(limiter)
                if active.start_at is not None:
                    await self._start_at(active)
                active.queued = False
                active.started_running = self._clock.now()
                self._on_start(ex, active.started_running)
                result = await self._execute(active)
            output = active.output.text()
            if result.error:
                output += ("\n" if output and not output.endswith("\n") else "") + result.error
            final = attrs.evolve(
                ex,
                output=output,
                success=result.success,
                exit_code=result.exit_code,
                finished_at=self._clock.now(),
            )
            output = await self._process(job, final)
            await self._report(
                RunFinished(
                    job_name=ex.job_name,
                    execution_id=ex.id,
                    finished_at=final.finished_at or self._clock.now(),
                    success=result.success,
                    output=output,
                    exit_code=result.exit_code,
                )
            )
        except TrickleError as exc:  # the engine closed under us: the next start cleans up
            logger.warning("could not report execution %s: %s", ex.id, exc)
        finally:
            self._starting_done(active)
            self._active.pop(ex.id, None)
            if not self._active:
                self._idle.set()

    async def _start_at(self, active: _Active) -> None:
        """Wait for the run's ``start_at`` (it was launched a moment early): spinning on a
        clock that can (the system clock: no wake-up to wait for), else sleeping.

        Runs launched together (a burst of instants within the spin) take their turns in
        Trio's order, which is not theirs: a run spinning to a later instant held an
        earlier one back for the difference. So a run lets the others go first while one
        launched with it is due earlier and its own instant has not come. A run already
        late goes at once: a turn is a whole round of the loop (other runs finishing and
        reporting among it), and waiting one made the tail longer (p99 0.20-0.57 ms
        against 0.17-0.41 in six alternated benchmark runs) for an order among late runs.
        A run that waits on a concurrency limit has left ``_starting``; START_ORDER_TURNS
        bounds the wait all the same."""
        when = active.start_at
        assert when is not None
        spin = getattr(self._clock, "spin_until", None)
        if spin is not None:
            starting = self._starting
            turns = 0
            while (
                starting
                and starting[0] < when
                and turns < START_ORDER_TURNS
                and self._clock.now() < when
            ):
                turns += 1
                await trio.lowlevel.checkpoint()
        self._starting_done(active)
        if spin is not None:
            spin(when)
        if self._clock.now() < when:
            await self._clock.sleep_until(when)

    def _starting_done(self, active: _Active) -> None:
        if active.in_starting and active.start_at is not None:
            active.in_starting = False
            self._starting.remove(active.start_at)  # a few entries at most
            heapq.heapify(self._starting)

    async def wait_idle(self) -> None:
        """Return once no execution is running or queued on this node."""
        await self._idle.wait()

    async def _execute(self, active: _Active) -> ExecutorResult:
        ctx = ExecutionContext(
            job=active.job,
            execution=active.execution,
            output=active.output,
            processes=self._processes,
        )
        try:
            executor = self._executors.get(active.job.executor)
            result = await executor.execute(ctx)
        except TrickleError as exc:
            return ExecutorResult(success=False, error=f"trickle: {exc.message}")
        except Exception as exc:  # an executor bug must not take the node down
            logger.exception("executor %s crashed on %s", active.job.executor, active.execution.id)
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return ExecutorResult(success=False, error=f"trickle: executor crashed: {tb}")
        if not isinstance(result, ExecutorResult):
            return ExecutorResult(success=False, error="trickle: executor returned no result")
        return result

    async def _process(self, job: Job, execution: Execution) -> str:
        if not job.processors:
            return execution.output
        try:
            return await run_processors(self._processors, job, execution, node_name=self._node_name)
        except Exception:
            logger.exception("processors of %s failed on %s", job.name, execution.id)
            return execution.output


def _tail(buffer: OutputBuffer, size: int = 4096) -> str:
    data = buffer.getvalue()[-size:]
    return data.decode("utf-8", errors="ignore")
