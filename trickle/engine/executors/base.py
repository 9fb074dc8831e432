"""The executor and processor contracts, and the output buffer every executor writes to.

An executor runs one attempt of a job on this node. It must never block the event loop: a
process is awaited, a socket is async, anything blocking goes through ``trio.to_thread``.

Contract of ``Executor.execute``:
  * writes the run's output to ``ctx.output`` as it is produced (chunks reach the live feed);
  * returns an ``ExecutorResult``; it does not raise for a failure of the *job* (a non-zero
    exit, an HTTP 500, a timeout): those are ``success=False`` with the reason in ``error``;
  * on cancellation it stops the work it started (kills the process group) and re-raises.

``Executor.validate(config)`` checks an ``executor_config`` when a job is stored and raises
``ValidationError(field="executor_config.<key>")``: bad jobs are refused at create time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from trickle.engine.model import Execution, Job

if TYPE_CHECKING:
    from trickle.engine.ledger import ProcessLedger

DEFAULT_OUTPUT_LIMIT = 256_000  # bytes of output kept per execution (the last ones), as Dkron


class OutputBuffer:
    """Keeps the last ``limit`` bytes written; forwards every chunk to ``on_chunk``.

    ``on_chunk`` must not block (it is called synchronously from ``write``).
    """

    def __init__(
        self,
        limit: int = DEFAULT_OUTPUT_LIMIT,
        *,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._on_chunk = on_chunk
        self.total_bytes = 0

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not data:
            return
        self.total_bytes += len(data)
        self._buf += data
        if len(self._buf) > self._limit:
            del self._buf[: len(self._buf) - self._limit]
        if self._on_chunk is not None:
            self._on_chunk(data)

    @property
    def truncated(self) -> bool:
        return self.total_bytes > len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def text(self) -> str:
        """The kept tail as text. When the head was cut, a multi-byte character split at
        the start is dropped; any other invalid byte becomes U+FFFD."""
        data = bytes(self._buf)
        if self.truncated:
            start = 0
            while start < min(3, len(data)) and (data[start] & 0xC0) == 0x80:
                start += 1  # UTF-8 continuation bytes of a character cut off
            data = data[start:]
        return data.decode("utf-8", errors="replace")


@attrs.frozen(kw_only=True)
class ExecutionContext:
    """What an executor gets: the job as of the fire, the execution record, its output."""

    job: Job
    execution: Execution
    output: OutputBuffer
    # Where an executor that starts a process group records it (``await
    # processes.record(execution.id, pid)`` / ``forget``), so that a node killed while it
    # ran can stop the group when it starts again. None: nothing to record.
    processes: ProcessLedger | None = None

    @property
    def config(self) -> Mapping[str, str]:
        return self.job.executor_config


@attrs.frozen(kw_only=True)
class ExecutorResult:
    success: bool
    exit_code: int | None = None  # process exit code (shell) or HTTP status (http)
    error: str = ""  # why it failed, appended to the output


class Executor(Protocol):
    name: str

    def validate(self, config: Mapping[str, str]) -> None: ...

    async def execute(self, ctx: ExecutionContext) -> ExecutorResult: ...


# A registered Python executor: an async callable taking the context. Returning None or True
# is success, False is failure, an ExecutorResult is taken as is; raising is a failure whose
# message is appended to the output.
PythonExecutorFn = Callable[[ExecutionContext], Awaitable["ExecutorResult | bool | None"]]


@attrs.frozen(kw_only=True)
class ProcessorContext:
    """What a processor gets: the finished execution (output included) and its config."""

    job: Job
    execution: Execution
    config: Mapping[str, str]  # the job's processors[<name>], plus "reporting_node"


# A processor returns the output to store (Dkron: the placeholder when forward is false).
class Processor(Protocol):
    name: str

    async def process(self, ctx: ProcessorContext) -> str: ...


PythonProcessorFn = Callable[[ProcessorContext], Awaitable[str | None]]


# --- helpers shared by executors and processors (config values are strings, as in Dkron) ---

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_go_bool(value: str, *, default: bool = False) -> bool:
    """Go's ``strconv.ParseBool`` (``1 t T TRUE true True`` / ``0 f F FALSE false False``).

    '' (or only spaces) gives ``default``. Anything else raises ``ValueError``.
    """
    text = value.strip()
    if not text:
        return default
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f"invalid boolean {value!r}: use true or false")


_CODE_ITEM = re.compile(r"([0-9]{1,9})(?:\s*-\s*([0-9]{1,9}))?")


@attrs.frozen
class CodeSet:
    """A set of integer codes written as ``"0,1,10-20"``: single codes and inclusive ranges.

    ``text`` keeps the spelling the user wrote (for messages).
    """

    ranges: tuple[tuple[int, int], ...]
    text: str = ""

    def __contains__(self, code: object) -> bool:
        return isinstance(code, int) and any(lo <= code <= hi for lo, hi in self.ranges)


def parse_codes(text: str, *, what: str = "code") -> CodeSet:
    """Parse a comma list of codes and ranges (``"0"``, ``"200,206"``, ``"0,1,10-20"``).

    Spaces around items are ignored, empty items (a trailing comma) too. A range is
    ``lo-hi`` with ``lo <= hi``. Codes are non-negative integers (at most 9 digits). Raises ``ValueError``
    naming the bad item; an empty list is an error too (callers treat '' as "not set").
    """
    ranges: list[tuple[int, int]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        match = _CODE_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(
                f"invalid {what} {item!r} in {text!r}: use numbers and ranges like 0,1,10-20"
            )
        lo = int(match[1])
        hi = int(match[2]) if match[2] is not None else lo
        if lo > hi:
            raise ValueError(f"invalid {what} range {item!r} in {text!r}: start is above end")
        ranges.append((lo, hi))
    if not ranges:
        raise ValueError(f"no {what}s in {text!r}")
    return CodeSet(tuple(ranges), text.strip())
