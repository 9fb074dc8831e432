"""`trickle watch` as a real process against a real `trickle serve --server` process: the
lines of a shell job's run as it prints them, --json frames, a refused filter, no server,
the close (1001) a watcher sees when the server gets SIGTERM, its reconnection to the
restarted server, and Ctrl-C.

Every process is killed at the end of its test if it is still running. Waiting is on lines
the processes print, under a guard deadline; never on a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and shell")

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30  # seconds a test waits for a line before failing (a guard, never a sleep)
NODE = "feed-e2e"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TRICKLE_")}


@attrs.define
class Lines:
    """The lines of one pipe of a process, read as they come."""

    stream: trio.abc.ReceiveStream
    buffer: bytearray = attrs.field(factory=bytearray)
    seen: list[str] = attrs.field(factory=list)

    async def next(self) -> str:
        with trio.fail_after(WAIT):
            while b"\n" not in self.buffer:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"the pipe closed; lines so far: {self.seen}")
                self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        text = line.decode("utf-8")
        self.seen.append(text)
        return text

    async def until(self, match: Callable[[str], bool]) -> str:
        while True:
            line = await self.next()
            if match(line):
                return line


@attrs.define
class Proc:
    process: trio.Process
    stdout: Lines
    stderr: Lines

    async def exit_code(self) -> int:
        with trio.fail_after(WAIT):
            return await self.process.wait()


@asynccontextmanager
async def _process(*args: str) -> AsyncIterator[Proc]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trickle", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        yield Proc(process, Lines(process.stdout), Lines(process.stderr))
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()
            await process.stderr.aclose()


@asynccontextmanager
async def server(data_dir: Path, http_addr: str = "127.0.0.1:0") -> AsyncIterator[tuple[Proc, str]]:
    """A `trickle serve --server` process and its HTTP address, once ready."""
    args = ["serve", "--server", "--http-addr", http_addr, "--data-dir", str(data_dir)]
    async with _process(*args, "--node-name", NODE) as proc:
        ready: dict[str, Any] = json.loads(await proc.stdout.next())
        yield proc, str(ready["http"])


@asynccontextmanager
async def watcher(address: str, *args: str) -> AsyncIterator[Proc]:
    """A `trickle watch` process, once connected (its stderr said so)."""
    async with _process("watch", "--address", address, *args) as proc:
        line = await proc.stderr.next()
        assert line.startswith(f"watch: watching {NODE} at {address}"), line
        yield proc


async def _put_and_run(address: str, name: str, command: str) -> None:
    job = {
        "name": name,
        "schedule": "@every 1h",
        "executor": "shell",
        "executor_config": {"command": command, "shell": "true"},
    }
    async with httpx.AsyncClient(base_url=address) as client:
        r = await client.post("/v1/jobs", json=job)
        assert r.status_code == 201, r.text
        r = await client.post(f"/v1/jobs/{name}/run")
        assert r.status_code == 200, r.text


async def test_watch_tails_a_shell_job_line_by_line_and_ctrl_c_exits_0(tmp_path: Path) -> None:
    async with server(tmp_path / "data") as (_, address), watcher(address, "counting") as w:
        await _put_and_run(address, "counting", "echo 1; sleep 0.3; echo 2; sleep 0.3; printf 3")
        started = await w.stdout.until(lambda line: "counting: started" in line)
        assert started.endswith("]") and f"on {NODE} (manual)" in started
        assert await w.stdout.next() == "counting | 1"
        assert await w.stdout.next() == "counting | 2"
        assert await w.stdout.next() == "counting | 3"  # no newline: shown at the finish
        finished = await w.stdout.next()
        assert f"counting: succeeded on {NODE} in " in finished
        assert finished.endswith("(exit 0)")
        w.process.send_signal(signal.SIGINT)
        assert await w.exit_code() == 0


async def test_watch_json_prints_each_frame_as_one_json_line_and_a_bad_kind_exits_1(
    tmp_path: Path,
) -> None:
    async with server(tmp_path / "data") as (_, address):
        async with watcher(address, "--json", "--kinds", "job_created,execution_output") as w:
            hello = json.loads(await w.stdout.next())
            assert (hello["type"], hello["node"]) == ("hello", NODE)
            await _put_and_run(address, "multi", "printf 'a\\nb\\n'")
            created = json.loads(await w.stdout.next())
            assert (created["type"], created["job"]["name"]) == ("job_created", "multi")
            chunks = ""
            while chunks != "a\nb\n":
                frame = json.loads(await w.stdout.next())
                assert frame["type"] == "execution_output" and frame["seq"] > created["seq"]
                chunks += frame["chunk"]
            w.process.send_signal(signal.SIGINT)
            assert await w.exit_code() == 0
        async with _process("watch", "--address", address, "--kinds", "nope") as refused:
            assert await refused.exit_code() == 1
            line = await refused.stderr.next()
            assert line.startswith("error: 400 kinds: unknown event kind 'nope'"), line


async def test_watch_without_a_server_exits_1(tmp_path: Path) -> None:
    with trio.socket.socket() as sock:  # a port nothing listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _process("watch", "--address", f"127.0.0.1:{port}") as w:
        assert await w.exit_code() == 1
        line = await w.stderr.next()
        assert line.startswith(f"error: cannot watch trickle at http://127.0.0.1:{port}"), line


async def test_sigterm_closes_the_feed_with_1001_and_watch_reconnects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with server(data) as (first, address):
        async with watcher(address) as w:
            first.process.send_signal(signal.SIGTERM)
            line = await w.stderr.next()
            assert line.startswith(
                "watch: the server closed the feed (1001 GOING_AWAY: server stopping); "
                "reconnecting in "
            ), line
            assert await first.exit_code() == 0
            host_port = address.removeprefix("http://")
            async with server(data, host_port) as (_, again):
                assert again == address
                await w.stderr.until(lambda line: line.startswith("watch: reconnected to"))
                await _put_and_run(address, "after", "echo back")
                assert await w.stdout.until(lambda line: line.startswith("after |")) == (
                    "after | back"
                )
            w.process.send_signal(signal.SIGINT)
            assert await w.exit_code() == 0
