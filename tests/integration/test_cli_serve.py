"""`trickle serve` failing fast, in-process: a taken port, a data dir that cannot be written.

The command runs with CliRunner in a worker thread (its own trio.run); signals are only
watched on the main thread, so these tests stop nothing by signal: the node must not start.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import trio
from click.testing import CliRunner, Result

from trickle.cli.main import cli


async def serve(*args: str) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        partial(runner.invoke, cli, ["serve", "--server", *args], env={}, catch_exceptions=False)
    )


async def test_taken_port_fails_fast_with_exit_code_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(30):
            result = await serve(
                "--http-addr", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")
            )
    assert result.exit_code == 1
    assert result.stdout == ""  # no ready line
    assert f"error: cannot listen on 127.0.0.1:{port}: the address is already in use" in (
        result.stderr
    )


async def test_data_dir_that_cannot_be_created_fails_fast(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = await serve("--http-addr", "127.0.0.1:0", "--data-dir", str(blocker / "data"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"error: data dir {blocker / 'data'} is not writable: Not a directory" in (result.stderr)


async def test_data_dir_that_is_a_file_fails_fast(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = await serve("--http-addr", "127.0.0.1:0", "--data-dir", str(blocker))
    assert result.exit_code == 1
    assert f"error: data dir {blocker} exists and is not a directory" in result.stderr


async def test_address_of_another_host_fails_fast(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never an address of this machine.
    result = await serve("--http-addr", "192.0.2.1:8080", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert "error: cannot listen on 192.0.2.1:8080: the address is not available" in (result.stderr)
    assert not (tmp_path / "d").exists()  # checked before the store is touched
