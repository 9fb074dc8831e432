"""The ``shell`` executor: runs a command as a child process, Dkron-compatible.

``executor_config`` keys (all strings, as in Dkron; see docs/executors.md):

    command        required; split with POSIX shell quoting and exec'd directly, or given to
                   ``/bin/sh -c`` when ``shell`` is true
    shell          Go bool ("true"/"false"/"1"/...), default false
    env            comma-separated ``K=V`` pairs added to the node's environment;
                   ``ENV_JOB_NAME=<job>`` is always added (and wins)
    cwd            working directory
    su             ``user`` or ``user:group`` (needs trickle to run as root)
    timeout        Go duration ("30s", "1h30m"); "0" or unset: no timeout. On expiry the
                   whole process group gets SIGKILL and the run fails
    mem_limit      bytes, or a number with a 1024-based unit (B, K/KB, M/MB, G/GB, T/TB);
                   RSS of the process tree is polled every second, SIGKILL when above
    payload        base64 data written to the process's stdin
    success_codes  trickle's: exit codes that count as success ("0,1,10-20"), default "0"

The process runs in a new session (its own process group), so a timeout, a memory kill or a
cancellation kills everything it started that stayed in the group. stdout and stderr are
one pipe, read chunk by chunk into ``ctx.output`` as they are produced.
"""

from __future__ import annotations

import base64
import binascii
import grp
import logging
import os
import pwd
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping
from typing import Any

import attrs
import psutil
import trio

from trickle.engine.durations import format_duration, parse_go_duration
from trickle.engine.executors.base import (
    CodeSet,
    ExecutionContext,
    ExecutorResult,
    OutputBuffer,
    parse_codes,
    parse_go_bool,
)
from trickle.errors import ValidationError

logger = logging.getLogger(__name__)

SHELL = "/bin/sh"  # the shell used when executor_config.shell is true
READ_CHUNK = 65_536  # bytes read from the output pipe at a time
MEM_POLL_INTERVAL = 1.0  # seconds between two RSS measurements (mem_limit), as Dkron
DRAIN_GRACE = 1.0  # seconds to wait for the pipe to close once the command has exited
DEFAULT_SUCCESS_CODES = "0"

_MEM_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1024**4,
    "TIB": 1024**4,
}
_MEM_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")
_SU_RE = re.compile(r"[^:\s]+(?::[^:\s]+)?")


class _ConfigError(Exception):
    """A bad executor_config value: ``field`` is the key, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_mem_limit(text: str) -> int:
    """``mem_limit`` -> bytes: ``"1048576"``, ``"512M"``, ``"1.5GB"`` (1024-based units
    B, K/KB, M/MB, G/GB, T/TB, case-insensitive; KiB/MiB/GiB/TiB accepted too).
    Raises ``ValueError`` naming what is wrong; the limit must be at least one byte."""
    match = _MEM_RE.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid memory limit {text!r}: use bytes or a number with a unit "
            "B, KB, MB, GB, TB (e.g. 512MB)"
        )
    unit = match[2].upper()
    if unit not in _MEM_UNITS:
        raise ValueError(
            f"invalid memory limit {text!r}: unknown unit {match[2]!r} (use B, KB, MB, GB, TB)"
        )
    limit = int(float(match[1]) * _MEM_UNITS[unit])
    if limit < 1:
        raise ValueError(f"invalid memory limit {text!r}: must be at least 1 byte")
    return limit


def _parse_env(text: str) -> list[tuple[str, str]]:
    pairs = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"invalid env entry {item!r}: use comma-separated KEY=VALUE pairs")
        if "\0" in item:
            raise ValueError(f"invalid env entry {item!r}: contains a NUL byte")
        pairs.append((key, value))
    return pairs


def _parse_payload(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"payload is not valid base64: {exc}") from None


@attrs.frozen
class _Plan:
    """Everything ``execute`` needs, parsed from the config."""

    command: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    su: str
    timeout: float
    mem_limit: int
    payload: bytes | None
    success_codes: CodeSet


def _plan(config: Mapping[str, str], job_name: str) -> _Plan:
    """Parse a config; raises ``_ConfigError`` on the first bad key."""

    def get(key: str) -> str:
        value = config.get(key, "")
        if not isinstance(value, str):
            raise _ConfigError(key, f"{key} must be a string, not {type(value).__name__}")
        return value

    command = get("command")
    try:
        use_shell = parse_go_bool(get("shell"))
    except ValueError as exc:
        raise _ConfigError("shell", f"shell: {exc}") from None
    if not command.strip():
        raise _ConfigError("command", "shell: Command missing")
    if use_shell:
        argv = [SHELL, "-c", command]
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise _ConfigError(
                "command", f"shell: cannot parse command {command!r}: {exc}"
            ) from None
        if not argv:
            raise _ConfigError("command", "shell: Command missing")
    if "\0" in command:
        raise _ConfigError("command", "shell: command contains a NUL byte")

    env = dict(os.environ)
    try:
        env.update(_parse_env(get("env")))
    except ValueError as exc:
        raise _ConfigError("env", f"shell: {exc}") from None
    env["ENV_JOB_NAME"] = job_name

    su = get("su").strip()
    if su and _SU_RE.fullmatch(su) is None:
        raise _ConfigError("su", f"shell: invalid su {su!r}: use user or user:group")

    timeout = 0.0
    if get("timeout").strip():
        try:
            timeout = parse_go_duration(get("timeout").strip())
        except ValueError as exc:
            raise _ConfigError("timeout", f"shell: timeout: {exc}") from None
        if timeout < 0:
            raise _ConfigError("timeout", f"shell: timeout {get('timeout')!r} is negative")

    mem_limit = 0
    if get("mem_limit").strip():
        try:
            mem_limit = parse_mem_limit(get("mem_limit"))
        except ValueError as exc:
            raise _ConfigError("mem_limit", f"shell: mem_limit: {exc}") from None

    payload = None
    if get("payload"):
        try:
            payload = _parse_payload(get("payload"))
        except ValueError as exc:
            raise _ConfigError("payload", f"shell: {exc}") from None

    try:
        codes = parse_codes(get("success_codes") or DEFAULT_SUCCESS_CODES, what="exit code")
    except ValueError as exc:
        raise _ConfigError("success_codes", f"shell: success_codes: {exc}") from None

    return _Plan(
        command=command,
        argv=argv,
        env=env,
        cwd=get("cwd") or None,
        su=su,
        timeout=timeout,
        mem_limit=mem_limit,
        payload=payload,
        success_codes=codes,
    )


def _credentials(su: str) -> dict[str, Any]:
    """``user[:group]`` -> Popen options (blocking: NSS lookups; run in a thread).

    The group defaults to the user's primary group; supplementary groups are the user's own
    (never the parent's). Raises ``ValueError`` for an unknown user or group.
    """
    user, _, group = su.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"shell: su: unknown user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"shell: su: unknown group {group!r}") from None
    return {
        "user": entry.pw_uid,
        "group": gid,
        "extra_groups": os.getgrouplist(entry.pw_name, gid),
    }


def _tree_rss(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, in bytes (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def _kill_group(process: trio.Process) -> None:
    """SIGKILL the process's whole group (it leads its own session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - the group is ours; defensive
        if process.returncode is None:
            process.kill()


def _describe_exit(code: int) -> str:
    """Go's ``ExitError`` text: ``exit status 2`` or ``signal: killed``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.strsignal(-code) or f"signal {-code}"
    except ValueError:
        name = f"signal {-code}"
    return f"signal: {name.lower()}"


def _describe_start_error(exc: OSError, plan: _Plan) -> str:
    reason = exc.strerror or str(exc)
    if plan.cwd is not None and exc.filename == plan.cwd:
        return f"shell: cannot change to cwd {plan.cwd!r}: {reason}"
    return f"shell: cannot run {plan.argv[0]!r}: {reason}"


async def _feed_stdin(stream: trio.abc.SendStream, payload: bytes) -> None:
    try:
        if payload:
            await stream.send_all(payload)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the command exited or closed stdin without reading everything: fine
    finally:
        await stream.aclose()


async def _pump_output(process: trio.Process, output: OutputBuffer) -> None:
    """Copy the merged stdout/stderr pipe to ``output`` until the command has exited and
    the pipe is closed; a pipe kept open by a background child is abandoned
    ``DRAIN_GRACE`` seconds after the command exited."""
    assert process.stdout is not None
    stdout = process.stdout
    eof = trio.Event()

    async def read() -> None:
        while chunk := await stdout.receive_some(READ_CHUNK):
            output.write(bytes(chunk))
        eof.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await process.wait()
        with trio.move_on_after(DRAIN_GRACE):
            await eof.wait()
        nursery.cancel_scope.cancel()


@attrs.define(eq=False)
class _Kill:
    reason: str = ""


class ShellExecutor:
    """Runs ``executor_config.command`` on this node. See the module docstring."""

    name = "shell"

    def validate(self, config: Mapping[str, str]) -> None:
        """Raise ``ValidationError(field="executor_config.<key>")`` for a bad config."""
        try:
            _plan(config, "")
        except _ConfigError as exc:
            message = str(exc).removeprefix("shell: ")
            raise ValidationError(message, field=f"executor_config.{exc.field}") from None

    async def execute(self, ctx: ExecutionContext) -> ExecutorResult:
        try:
            plan = _plan(ctx.config, ctx.job.name)
        except _ConfigError as exc:
            return ExecutorResult(success=False, error=str(exc))

        options: dict[str, Any] = {}
        if plan.su:
            if os.geteuid() != 0:
                return ExecutorResult(
                    success=False,
                    error=f"shell: su {plan.su!r} needs trickle to run as root "
                    f"(it runs as uid {os.geteuid()})",
                )
            try:
                options = await trio.to_thread.run_sync(_credentials, plan.su)
            except ValueError as exc:
                return ExecutorResult(success=False, error=str(exc))

        try:
            process = await trio.lowlevel.open_process(
                plan.argv,
                stdin=subprocess.PIPE if plan.payload is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=plan.cwd,
                env=plan.env,
                start_new_session=True,
                **options,
            )
        except OSError as exc:
            return ExecutorResult(success=False, error=_describe_start_error(exc, plan))
        logger.debug("job %s: started pid %d: %s", ctx.job.name, process.pid, plan.argv)
        ledger = ctx.processes
        if ledger is not None:
            await ledger.record(ctx.execution.id, process.pid)

        kill = _Kill()

        async def watch_timeout() -> None:
            await trio.sleep(plan.timeout)
            if process.returncode is None:
                kill.reason = (
                    f"shell: Job '{plan.command}' execution time exceeding defined timeout "
                    f"{format_duration(plan.timeout)}. Job was killed"
                )
                _kill_group(process)

        async def watch_memory() -> None:
            while True:
                await trio.sleep(MEM_POLL_INTERVAL)
                rss = await trio.to_thread.run_sync(_tree_rss, process.pid)
                if rss > plan.mem_limit and process.returncode is None:
                    kill.reason = (
                        f"shell: Job '{plan.command}' memory usage {rss} bytes exceeding "
                        f"defined limit {plan.mem_limit} bytes. Job was killed"
                    )
                    _kill_group(process)
                    return

        try:
            async with trio.open_nursery() as nursery:
                if plan.payload is not None:
                    assert process.stdin is not None
                    nursery.start_soon(_feed_stdin, process.stdin, plan.payload)
                if plan.timeout > 0:
                    nursery.start_soon(watch_timeout)
                if plan.mem_limit:
                    nursery.start_soon(watch_memory)
                await _pump_output(process, ctx.output)
                nursery.cancel_scope.cancel()
        except BaseException:
            # cancelled (or broken): nothing we started may outlive the run
            _kill_group(process)
            with trio.CancelScope(shield=True):
                await process.wait()
            raise
        finally:
            with trio.CancelScope(shield=True):
                for stream in (process.stdin, process.stdout):
                    if stream is not None:
                        await stream.aclose()
                if ledger is not None:
                    await ledger.forget(ctx.execution.id)

        code = process.returncode
        assert code is not None
        if kill.reason:
            return ExecutorResult(success=False, exit_code=code, error=kill.reason)
        if code in plan.success_codes:
            return ExecutorResult(success=True, exit_code=code)
        return ExecutorResult(success=False, exit_code=code, error=_describe_exit(code))
