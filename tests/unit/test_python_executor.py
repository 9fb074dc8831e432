"""Python executors: what a registered async callable's result or exception becomes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trio

from trickle.engine.executors.base import ExecutionContext, ExecutorResult, OutputBuffer
from trickle.engine.executors.python import PythonExecutor
from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.model import Execution, ExecutionId, Job


def _ctx(config: dict[str, str] | None = None) -> ExecutionContext:
    job = Job(name="report", executor="py", executor_config=config or {})
    execution = Execution(
        id=ExecutionId("1-node"),
        job_name="report",
        node_name="node",
        group=1,
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    return ExecutionContext(job=job, execution=execution, output=OutputBuffer())


@pytest.mark.parametrize("value", [None, True])
async def test_none_or_true_is_success(value):
    async def fn(ctx):
        return value

    assert await PythonExecutor("py", fn).execute(_ctx()) == ExecutorResult(success=True)


async def test_false_is_failure():
    async def fn(ctx):
        return False

    result = await PythonExecutor("py", fn).execute(_ctx())
    assert not result.success
    assert result.error == "python executor 'py' returned False"


async def test_an_executor_result_is_taken_as_is():
    expected = ExecutorResult(success=False, exit_code=7, error="seven")

    async def fn(ctx):
        return expected

    assert await PythonExecutor("py", fn).execute(_ctx()) is expected


async def test_an_exception_is_a_failure_with_its_type_and_message():
    async def fn(ctx):
        raise ValueError("bad input file")

    result = await PythonExecutor("py", fn).execute(_ctx())
    assert result == ExecutorResult(success=False, error="ValueError: bad input file")


async def test_an_exception_without_message_gives_its_type():
    async def fn(ctx):
        raise KeyError()

    result = await PythonExecutor("py", fn).execute(_ctx())
    assert result.error == "KeyError"


async def test_an_unexpected_return_value_is_a_failure_saying_so():
    async def fn(ctx):
        return 0

    result = await PythonExecutor("py", fn).execute(_ctx())
    assert not result.success
    assert "returned int 0; expected None, a bool or an ExecutorResult" in result.error


async def test_the_callable_writes_output_and_reads_its_config():
    async def fn(ctx):
        ctx.output.write(f"hello {ctx.config['who']}\n")

    ctx = _ctx({"who": "world"})
    await PythonExecutor("py", fn).execute(ctx)
    assert ctx.output.text() == "hello world\n"


async def test_cancellation_propagates_and_is_not_a_result():
    started = trio.Event()
    finished: list[ExecutorResult] = []

    async def fn(ctx):
        started.set()
        await trio.sleep_forever()

    async def run():
        finished.append(await PythonExecutor("py", fn).execute(_ctx()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert finished == []


async def test_a_registered_callable_runs_through_the_registry():
    calls: list[str] = []

    async def fn(ctx):
        calls.append(ctx.job.name)

    registry = ExecutorRegistry()
    registry.register_python("py", fn)
    result = await registry.get("py").execute(_ctx())
    assert result.success
    assert calls == ["report"]


def test_a_non_callable_is_refused():
    with pytest.raises(TypeError, match="is not callable"):
        PythonExecutor("py", "not a function")  # type: ignore[arg-type]
