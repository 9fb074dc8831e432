"""The shell executor running real processes."""

from __future__ import annotations

import base64
import os
import pwd
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import psutil
import pytest
import trio

from trickle.engine.executors.base import ExecutionContext, ExecutorResult, OutputBuffer
from trickle.engine.executors.shell import ShellExecutor
from trickle.engine.model import Execution, ExecutionId, Job

PY = sys.executable


def _ctx(
    config: dict[str, str],
    *,
    limit: int = 256_000,
    on_chunk: Callable[[bytes], None] | None = None,
) -> ExecutionContext:
    job = Job(name="nightly-backup", executor="shell", executor_config=config)
    execution = Execution(
        id=ExecutionId("1-node"),
        job_name=job.name,
        node_name="node",
        group=1,
        started_at=datetime.now(UTC),
    )
    return ExecutionContext(
        job=job, execution=execution, output=OutputBuffer(limit, on_chunk=on_chunk)
    )


async def _run(config: dict[str, str], **kwargs) -> tuple[ExecutorResult, str]:
    ctx = _ctx(config, **kwargs)
    result = await ShellExecutor().execute(ctx)
    return result, ctx.output.text()


async def _assert_gone(pid: int) -> None:
    """The process is dead (a zombie waiting for its reaper counts as dead)."""
    with trio.fail_after(10):
        while True:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            await trio.sleep(0.01)


async def test_exit_zero_is_success_with_output_and_exit_code():
    result, output = await _run({"command": "echo hello world"})
    assert result == ExecutorResult(success=True, exit_code=0, error="")
    assert output == "hello world\n"


async def test_non_zero_exit_is_a_failure_recording_the_exit_code():
    result, output = await _run({"command": "sh -c 'echo partial; exit 3'"})
    assert result == ExecutorResult(success=False, exit_code=3, error="exit status 3")
    assert output == "partial\n"


async def test_success_codes_make_other_exit_codes_successes():
    result, _ = await _run({"command": "sh -c 'exit 12'", "success_codes": "0,1,10-20"})
    assert result == ExecutorResult(success=True, exit_code=12)
    result, _ = await _run({"command": "sh -c 'exit 0'", "success_codes": "1,10-20"})
    assert result == ExecutorResult(success=False, exit_code=0, error="exit status 0")


async def test_death_by_signal_is_a_failure_with_a_negative_exit_code():
    result, _ = await _run({"command": "kill -TERM $$", "shell": "true"})
    assert result == ExecutorResult(success=False, exit_code=-15, error="signal: terminated")


async def test_stderr_is_merged_into_the_output():
    result, output = await _run({"command": "echo out; echo err >&2", "shell": "true"})
    assert result.success
    assert output == "out\nerr\n"


async def test_without_shell_the_command_is_split_and_not_interpreted():
    result, output = await _run({"command": "echo 'a  b' $HOME |"})
    assert result.success
    assert output == "a  b $HOME |\n"


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    result, output = await _run(
        {
            "command": f"sleep 60 & echo $! > {pidfile}; echo started; wait",
            "shell": "true",
            "timeout": "1s",
        }
    )
    assert not result.success
    assert result.exit_code == -9
    command = f"sleep 60 & echo $! > {pidfile}; echo started; wait"
    assert result.error == (
        f"shell: Job '{command}' execution time exceeding defined timeout 1s. Job was killed"
    )
    assert output == "started\n"
    await _assert_gone(int(pidfile.read_text()))


async def test_payload_is_written_to_stdin():
    payload = base64.b64encode(b"line one\nline two\n").decode()
    result, output = await _run({"command": "cat", "payload": payload})
    assert result.success
    assert output == "line one\nline two\n"


async def test_a_command_that_ignores_its_payload_still_succeeds():
    payload = base64.b64encode(b"x" * 1_000_000).decode()
    result, _ = await _run({"command": "true", "payload": payload})
    assert result == ExecutorResult(success=True, exit_code=0)


async def test_invalid_payload_fails_without_running():
    result, output = await _run({"command": "cat", "payload": "%%%"})
    assert not result.success
    assert result.exit_code is None
    assert "payload is not valid base64" in result.error
    assert output == ""


async def test_env_is_added_to_the_node_environment_with_env_job_name(monkeypatch):
    monkeypatch.setenv("TRICKLE_TEST_NODE_VAR", "from-node")
    result, output = await _run(
        {
            "command": "echo $FOO/$BAR/$TRICKLE_TEST_NODE_VAR/$ENV_JOB_NAME",
            "shell": "true",
            "env": "FOO=1,BAR=a=b,ENV_JOB_NAME=spoofed",
        }
    )
    assert result.success
    assert output == "1/a=b/from-node/nightly-backup\n"


async def test_cwd_sets_the_working_directory(tmp_path):
    result, output = await _run({"command": "pwd", "cwd": str(tmp_path)})
    assert result.success
    assert output.strip() == str(tmp_path.resolve())


async def test_a_missing_cwd_is_a_failure_naming_it(tmp_path):
    missing = tmp_path / "nope"
    result, _ = await _run({"command": "pwd", "cwd": str(missing)})
    assert result == ExecutorResult(
        success=False,
        error=f"shell: cannot change to cwd '{missing}': No such file or directory",
    )


async def test_large_output_keeps_the_last_bytes():
    script = "import sys; [sys.stdout.write(f'{i:07d}\\n') for i in range(100000)]"
    ctx = _ctx({"command": f'{PY} -c "{script}"'}, limit=1000)
    result = await ShellExecutor().execute(ctx)
    assert result.success
    assert ctx.output.total_bytes == 800_000
    expected = "".join(f"{i:07d}\n" for i in range(99875, 100000))
    assert ctx.output.text() == expected


async def test_output_is_streamed_before_the_process_ends(tmp_path):
    go = tmp_path / "go"
    first_chunk = trio.Event()
    chunks: list[bytes] = []

    def on_chunk(data: bytes) -> None:
        chunks.append(data)
        first_chunk.set()

    ctx = _ctx(
        {
            "command": f"echo first; while [ ! -e {go} ]; do sleep 0.01; done; echo second",
            "shell": "true",
        },
        on_chunk=on_chunk,
    )
    results: list[ExecutorResult] = []

    async def run() -> None:
        results.append(await ShellExecutor().execute(ctx))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await first_chunk.wait()
        assert results == []  # still running
        assert b"".join(chunks) == b"first\n"
        go.touch()
    assert results[0].success
    assert b"".join(chunks) == b"first\nsecond\n"


async def test_mem_limit_kills_the_process_tree_above_the_limit():
    # the memory is held by a child of the shell: the limit counts the whole tree
    script = "b = b'x' * (200 * 1024 * 1024); import time; time.sleep(60)"
    result, _ = await _run(
        {
            "command": f'{PY} -c "{script}"; echo not reached',
            "shell": "true",
            "mem_limit": "64MB",
            "timeout": "60s",
        }
    )
    assert not result.success
    assert result.exit_code == -9
    assert "memory usage" in result.error
    assert result.error.endswith("exceeding defined limit 67108864 bytes. Job was killed")


async def test_a_process_under_its_mem_limit_is_left_alone():
    result, _ = await _run(
        {"command": f"{PY} -c 'import time; time.sleep(1.2)'", "mem_limit": "1GB"}
    )
    assert result == ExecutorResult(success=True, exit_code=0)


async def test_cancellation_kills_the_group_and_propagates(tmp_path):
    pids = tmp_path / "pids"
    started = trio.Event()
    ctx = _ctx(
        {
            "command": f"sleep 60 & echo $$ $! > {pids}; echo started; wait",
            "shell": "true",
        },
        on_chunk=lambda data: started.set(),
    )
    finished: list[ExecutorResult] = []

    async def run() -> None:
        finished.append(await ShellExecutor().execute(ctx))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await started.wait()
        nursery.cancel_scope.cancel()
    assert finished == []
    # the pid file was written before "started" was printed
    shell_pid, child_pid = map(int, pids.read_text().split())
    await _assert_gone(shell_pid)
    await _assert_gone(child_pid)


async def test_a_command_that_cannot_start_is_a_failure_with_the_os_error():
    result, _ = await _run({"command": "/no/such/program --flag"})
    assert result == ExecutorResult(
        success=False, error="shell: cannot run '/no/such/program': No such file or directory"
    )


async def test_an_empty_command_is_a_failure():
    result, _ = await _run({"command": ""})
    assert result == ExecutorResult(success=False, error="shell: Command missing")


async def test_a_background_child_holding_the_pipe_does_not_hold_the_run(tmp_path):
    pidfile = tmp_path / "bg.pid"
    result, output = await _run(
        {"command": f"sleep 30 & echo $! > {pidfile}; echo done", "shell": "true"}
    )
    try:
        assert result == ExecutorResult(success=True, exit_code=0)
        assert output == "done\n"
    finally:
        os.kill(int(pidfile.read_text()), 9)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
@pytest.mark.skipif(not _has_user("nobody"), reason="needs the user nobody")
async def test_su_runs_the_command_as_another_user_as_root():
    result, output = await _run({"command": "id -u -n", "su": "nobody"})
    assert result.success, result.error
    assert output.strip() == "nobody"


@pytest.mark.skipif(os.geteuid() != 0, reason="su needs root")
async def test_su_with_an_unknown_user_fails():
    result, _ = await _run({"command": "true", "su": "no-such-user-xyz"})
    assert result == ExecutorResult(
        success=False, error="shell: su: unknown user 'no-such-user-xyz'"
    )


async def test_su_on_a_node_not_running_as_root_fails_clearly(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # the same check whoever runs the tests
    result, _ = await _run({"command": "true", "su": "nobody"})
    assert result == ExecutorResult(
        success=False, error="shell: su 'nobody' needs trickle to run as root (it runs as uid 1000)"
    )
