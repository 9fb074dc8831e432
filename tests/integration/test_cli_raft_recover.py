"""`trickle raft recover` on real data dirs: a 3-server cluster over TCP on 127.0.0.1 writes a
job and stops; one survivor is recovered offline and then leads alone with the job. Also
what recover refuses: a running server (its lock), a dir without raft.db, a damaged file,
a name the configuration does not hold."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio
from click.testing import CliRunner, Result

from trickle import Engine, EngineConfig, Job
from trickle.cli.main import cli
from trickle.testing.engines import EngineGroup

NAMES = ("a", "b", "c")
WAIT = 30  # seconds: elections and replication are far quicker; this only bounds a hang


async def invoke(args: Sequence[str]) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(runner.invoke, cli, list(args), env={}, catch_exceptions=False)
    )


def recover(data_dir: Path, *args: str) -> list[str]:
    return ["raft", "recover", "--data-dir", str(data_dir), *args]


def shell_job(name: str) -> Job:
    return Job(
        name=name, schedule="@every 1h", executor="shell", executor_config={"command": "true"}
    )


async def leads(engine: Engine) -> None:
    """Return once ``engine`` leads (polled: the Engine has no leadership event)."""
    while True:
        if engine.is_leader():
            return
        await trio.sleep(0.02)


class Servers(EngineGroup):
    """Three servers with a Raft listener on port 0 each; peers learn the bound addresses."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path) -> None:
        super().__init__(nursery)
        self.tmp_path = tmp_path

    async def start(self, name: str) -> None:
        engine = Engine(
            EngineConfig(
                data_dir=self.tmp_path / name,
                node_name=name,
                raft_bind="127.0.0.1:0",
                peers={n: "127.0.0.1:1" for n in NAMES},  # replaced once bound
            )
        )
        await self.run(name, engine)
        addresses = {}
        for other, running in self.engines.items():
            if running.raft_address is not None:
                host, port = running.raft_address
                addresses[other] = f"{host}:{port}"
        for other, running in self.engines.items():
            running.update_peers({n: a for n, a in addresses.items() if n != other})

    async def stop_all(self) -> None:
        for name in NAMES:
            await self.stop(name)


async def test_a_recovered_survivor_leads_alone_with_the_clusters_jobs(tmp_path: Path) -> None:
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            servers = Servers(nursery, tmp_path)
            for name in NAMES:
                await servers.start(name)
            leader = await servers.leader()
            await leader.put_job(shell_job("nightly"))
            for engine in servers.engines.values():  # a linearizable read on each
                assert (await engine.get_job("nightly")).name == "nightly"

            # a running server's data dir is locked: recover refuses and changes nothing
            result = await invoke(recover(tmp_path / "a", "--node-name", "a"))
            assert result.exit_code == 1
            assert result.stderr == (
                f"error: {tmp_path / 'a' / 'raft.db'} is in use: the server is running; stop "
                "it first (recovery rewrites the stored configuration of a stopped server)\n"
            )
            await servers.stop_all()
            nursery.cancel_scope.cancel()

    # b and c are lost for good; a survives. First look (--dry-run changes nothing).
    result = await invoke(recover(tmp_path / "a", "--node-name", "a", "--dry-run"))
    assert result.exit_code == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.startswith("a: last entry ")
    assert "voters=(a,b,c) -> voters=(a): 2 membership entries at " in first
    assert second == "dry run: nothing was changed"
    again = await invoke(recover(tmp_path / "a", "--node-name", "a", "--dry-run"))
    assert again.stdout == result.stdout

    # a wrong name or voter is refused, naming the stored configuration
    result = await invoke(recover(tmp_path / "a", "--node-name", "z"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: z is not a member of the stored configuration")
    result = await invoke(recover(tmp_path / "a", "--node-name", "a", "--voters", "a,z"))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: z not in the stored configuration")

    result = await invoke(recover(tmp_path / "a", "--node-name", "a"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == first + "\n"
    result = await invoke(recover(tmp_path / "a", "--node-name", "a"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith(
        "the stored configuration is already voters=(a): nothing to recover\n"
    )

    # started alone, a leads at once, holds the job and commits new writes
    alone = Engine(EngineConfig(data_dir=tmp_path / "a", node_name="a", raft_bind="127.0.0.1:0"))
    with trio.fail_after(WAIT):
        async with alone:
            await leads(alone)
            assert (await alone.get_job("nightly")).schedule == "@every 1h"
            await alone.put_job(shell_job("after-recovery"))
            jobs, _ = await alone.list_jobs()
            names = {job.name for job in jobs}
            assert names == {"nightly", "after-recovery"}


async def test_recover_refuses_a_dir_without_raft_state(tmp_path: Path) -> None:
    result = await invoke(recover(tmp_path / "missing", "--node-name", "a"))
    assert result.exit_code == 1
    assert result.stderr == f"error: data dir {tmp_path / 'missing'} does not exist\n"
    (tmp_path / "empty").mkdir()
    result = await invoke(recover(tmp_path / "empty", "--node-name", "a"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'empty' / 'raft.db'} does not exist")
    assert not (tmp_path / "empty" / "raft.db").exists()  # nothing was created


async def test_recover_refuses_a_damaged_raft_db(tmp_path: Path) -> None:
    (tmp_path / "raft.db").write_bytes(b"this is not SQLite" * 512)
    result = await invoke(recover(tmp_path, "--node-name", "a"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {tmp_path / 'raft.db'} is not a readable SQLite")


async def test_recover_without_a_node_name_is_a_usage_error(tmp_path: Path) -> None:
    result = await invoke(recover(tmp_path))
    assert result.exit_code == 2
    assert "Missing option '--node-name'" in result.stderr
    result = await invoke(recover(tmp_path, "--node-name", "a", "--voters", ","))
    assert result.exit_code == 2
    assert "expected node names separated by commas" in result.stderr
