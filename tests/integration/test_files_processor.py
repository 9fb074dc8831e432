"""The files processor writing real files."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

from trickle.engine.model import Execution, ExecutionId, Job
from trickle.engine.processors import ProcessorRegistry, run_processors


def _job(config: dict[str, str]) -> Job:
    return Job(name="backup", executor="shell", processors={"files": config})


def _execution(output: str) -> Execution:
    return Execution(
        id=ExecutionId("1700000000000000000-node1"),
        job_name="backup",
        node_name="node1",
        group=1,
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
        success=True,
        output=output,
    )


async def test_writes_the_output_to_log_dir_job_execution_log_and_stores_the_path(tmp_path):
    log_dir = tmp_path / "logs"  # does not exist yet: created
    stored = await run_processors(
        ProcessorRegistry(),
        _job({"log_dir": str(log_dir)}),
        _execution("héllo\n"),
        node_name="server-1",
    )
    path = log_dir / "backup" / "1700000000000000000-node1.log"
    assert stored == str(path)
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0  # not world-readable


async def test_forward_true_writes_the_file_and_keeps_the_output(tmp_path):
    stored = await run_processors(
        ProcessorRegistry(),
        _job({"log_dir": str(tmp_path), "forward": "true"}),
        _execution("kept"),
        node_name="server-1",
    )
    assert stored == "kept"
    assert (tmp_path / "backup" / "1700000000000000000-node1.log").read_text() == "kept"


async def test_a_write_failure_is_appended_to_the_output_which_is_kept(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # log_dir below a regular file cannot be created, even as root
    stored = await run_processors(
        ProcessorRegistry(),
        _job({"log_dir": str(blocker / "logs")}),
        _execution("result"),
        node_name="server-1",
    )
    assert stored.startswith("result\nprocessor files failed: OSError: cannot write ")
    assert str(blocker / "logs" / "backup") in stored
