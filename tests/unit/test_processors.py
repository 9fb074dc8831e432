"""Processors: the log processor, Python processors, ordering, forward, errors, validation."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from trickle.engine.executors.base import ProcessorContext
from trickle.engine.model import Execution, ExecutionId, Job
from trickle.engine.processors import (
    LOG_PLACEHOLDER,
    ProcessorRegistry,
    files_path,
    run_processors,
)
from trickle.errors import ValidationError


def _job(processors: dict[str, dict[str, str]]) -> Job:
    return Job(name="backup", executor="shell", processors=processors)


def _execution(output: str = "line 1\nline 2", *, success: bool = True) -> Execution:
    return Execution(
        id=ExecutionId("1700000000000000000-node1"),
        job_name="backup",
        node_name="node1",
        group=1,
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
        finished_at=datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC),
        success=success,
        output=output,
    )


async def _run(registry, processors, execution=None) -> str:
    return await run_processors(
        registry, _job(processors), execution or _execution(), node_name="server-1"
    )


async def test_no_processors_keep_the_output():
    assert await _run(ProcessorRegistry(), {}) == "line 1\nline 2"


async def test_log_processor_logs_begin_end_at_info_on_success(caplog):
    caplog.set_level(logging.INFO, logger="trickle.processors.log")
    stored = await _run(ProcessorRegistry(), {"log": {}})
    assert stored == LOG_PLACEHOLDER == "Output in trickle log"
    [record] = [r for r in caplog.records if r.name == "trickle.processors.log"]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "----- BEGIN OUTPUT job=backup execution=1700000000000000000-node1 -----\n"
        "line 1\nline 2\n"
        "----- END OUTPUT -----"
    )


async def test_log_processor_logs_at_error_on_failure(caplog):
    caplog.set_level(logging.INFO, logger="trickle.processors.log")
    await _run(ProcessorRegistry(), {"log": {}}, _execution("boom", success=False))
    [record] = [r for r in caplog.records if r.name == "trickle.processors.log"]
    assert record.levelno == logging.ERROR
    assert "\nboom\n" in record.getMessage()


async def test_forward_true_keeps_the_output_in_the_record():
    assert await _run(ProcessorRegistry(), {"log": {"forward": "true"}}) == "line 1\nline 2"


async def test_processors_run_in_mapping_order_each_seeing_the_previous_output():
    registry = ProcessorRegistry()
    seen: list[tuple[str, str]] = []

    def make(tag):
        async def fn(ctx: ProcessorContext):
            seen.append((tag, ctx.execution.output))
            return ctx.execution.output + tag

        return fn

    for tag in ("c", "a", "b"):
        registry.register_python(tag, make(tag))
    stored = await _run(registry, {"c": {}, "a": {}, "b": {}}, _execution("x"))
    assert seen == [("c", "x"), ("a", "xc"), ("b", "xca")]
    assert stored == "xcab"


async def test_each_config_gets_reporting_node():
    registry = ProcessorRegistry()
    configs = []

    async def fn(ctx):
        configs.append(dict(ctx.config))

    registry.register_python("spy", fn)
    await _run(registry, {"spy": {"level": "2"}})
    assert configs == [{"level": "2", "reporting_node": "server-1"}]


async def test_a_python_processor_returning_none_leaves_the_output():
    registry = ProcessorRegistry()

    async def fn(ctx):
        return None

    registry.register_python("noop", fn)
    assert await _run(registry, {"noop": {}}) == "line 1\nline 2"


async def test_a_failing_processor_appends_its_error_and_the_next_still_runs():
    registry = ProcessorRegistry()

    async def broken(ctx):
        raise RuntimeError("disk full")

    async def upper(ctx):
        return ctx.execution.output.upper()

    registry.register_python("broken", broken)
    registry.register_python("upper", upper)
    stored = await _run(registry, {"broken": {}, "upper": {}}, _execution("ok"))
    assert stored == "OK\nPROCESSOR BROKEN FAILED: RUNTIMEERROR: DISK FULL"


async def test_a_processor_returning_a_non_string_is_an_error_not_a_lost_result():
    registry = ProcessorRegistry()

    async def bad(ctx):
        return 42

    registry.register_python("bad", bad)
    stored = await _run(registry, {"bad": {}}, _execution("kept\n"))
    assert stored.startswith("kept\nprocessor bad failed: TypeError: ")
    assert "returned int" in stored


async def test_a_processor_unknown_at_run_time_is_skipped(caplog):
    stored = await _run(ProcessorRegistry(), {"syslog": {}})
    assert stored == "line 1\nline 2"
    assert "unknown processor 'syslog' skipped" in caplog.text


def test_builtin_names():
    assert ProcessorRegistry().names() == ["files", "log"]
    assert ProcessorRegistry(builtins=False).names() == []


def test_registering_a_taken_or_bad_name_is_refused():
    async def fn(ctx):
        return None

    registry = ProcessorRegistry()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_python("log", fn)
    with pytest.raises(ValueError, match="invalid processor name"):
        registry.register_python("Bad Name", fn)


def test_validate_refuses_an_unknown_processor_listing_the_known_ones():
    with pytest.raises(ValidationError) as info:
        ProcessorRegistry().validate({"syslog": {}})
    assert info.value.field == "processors"
    assert str(info.value) == "unknown processor 'syslog'; known processors: files, log"


def test_validate_checks_forward_is_a_bool_string():
    with pytest.raises(ValidationError, match="invalid boolean 'yes'") as info:
        ProcessorRegistry().validate({"log": {"forward": "yes"}})
    assert info.value.field == "processors.log.forward"


def test_validate_checks_forward_of_python_processors_too():
    async def fn(ctx):
        return None

    registry = ProcessorRegistry()
    registry.register_python("mine", fn)
    registry.validate({"mine": {"forward": "true"}})
    with pytest.raises(ValidationError):
        registry.validate({"mine": {"forward": "maybe"}})


def test_validate_refuses_non_string_values():
    with pytest.raises(ValidationError) as info:
        ProcessorRegistry().validate({"log": {"forward": True}})  # type: ignore[dict-item]
    assert info.value.field == "processors.log.forward"


def test_validate_refuses_a_relative_log_dir():
    with pytest.raises(ValidationError, match="must be an absolute path") as info:
        ProcessorRegistry().validate({"files": {"log_dir": "logs"}})
    assert info.value.field == "processors.files.log_dir"


def test_validate_accepts_good_processors():
    ProcessorRegistry().validate(
        {"files": {"log_dir": "/var/log/jobs", "forward": "false"}, "log": {}}
    )


def test_files_path_is_per_job_and_cannot_escape_log_dir():
    assert str(files_path("/logs", "backup", "17-node1")) == "/logs/backup/17-node1.log"
    path = files_path("/logs", "../etc", "1-n/../../x")
    assert str(path).startswith("/logs/")
    assert ".." not in path.relative_to("/logs").parts


async def test_a_hung_processor_is_abandoned_after_the_timeout_and_the_rest_still_run(
    autojump_clock,
):
    import trio

    async def hang(ctx: ProcessorContext) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def upper(ctx: ProcessorContext) -> str:
        return ctx.execution.output.upper()

    registry = ProcessorRegistry()
    registry.register_python("hang", hang)
    registry.register_python("upper", upper)
    output = await _run(registry, {"hang": {}, "upper": {}})
    assert output == "LINE 1\nLINE 2\nPROCESSOR HANG FAILED: TIMED OUT AFTER 60S"
