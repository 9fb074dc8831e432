"""A node killed while a shell job ran stops that job's processes when it starts again."""

from __future__ import annotations

import json
import subprocess

import trio

from trickle import Engine, EngineConfig, EventKind, Job
from trickle.engine.ledger import ProcessLedger


def spawn_session_sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_reap_kills_a_listed_group_and_spares_a_reused_pid(tmp_path):
    ledger = ProcessLedger(tmp_path)
    orphan = spawn_session_sleeper()
    stranger = spawn_session_sleeper()
    try:
        trio.run(ledger.record, "1-n", orphan.pid)
        # same pid, other start time: the pid was reused by an unrelated process
        (tmp_path / "2-n.json").write_text(json.dumps({"pid": stranger.pid, "create_time": 1.0}))
        assert ledger.reap() == ["1-n"]
        assert orphan.wait(timeout=10) == -9
        assert stranger.poll() is None
        assert list(tmp_path.iterdir()) == []
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()


def test_an_in_memory_ledger_records_nothing():
    assert ProcessLedger(None).reap() == []


async def test_engine_start_kills_the_processes_a_killed_node_left_running(tmp_path):
    data = tmp_path / "data"
    # What a node killed mid-run leaves: the job's group running, listed in the ledger.
    orphan = spawn_session_sleeper()
    try:
        await ProcessLedger(data / "processes").record("1-node", orphan.pid)
        async with Engine(EngineConfig(data_dir=data, node_name="node")):
            pass
        # killed during the engine's start: the wait returns at once
        assert await trio.to_thread.run_sync(orphan.wait, 10) == -9
    finally:
        orphan.kill()
        orphan.wait()


async def test_a_shell_run_is_listed_while_it_runs_and_forgotten_after(tmp_path):
    data = tmp_path / "data"
    async with Engine(EngineConfig(data_dir=data, node_name="node")) as engine:
        await engine.put_job(
            Job(
                name="s",
                schedule="@manually",
                executor="shell",
                executor_config={"command": "echo hi; sleep 0.5", "shell": "true"},
            )
        )
        with engine.subscribe(
            kinds=[EventKind.EXECUTION_OUTPUT, EventKind.EXECUTION_FINISHED]
        ) as sub:
            await engine.run_job("s")
            first = await sub.receive()
            assert first.kind == EventKind.EXECUTION_OUTPUT
            assert [p.name for p in (data / "processes").iterdir()] == [
                f"{first.execution.id}.json"
            ]
            while (await sub.receive()).kind != EventKind.EXECUTION_FINISHED:
                pass
        assert list((data / "processes").iterdir()) == []
