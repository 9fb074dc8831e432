"""Processors: post-process a finished execution's output (Dkron's ``log`` and ``files``,
plus registered Python processors) before the record is stored.

A job's ``processors`` maps a processor name to its config (strings), e.g.
``{"files": {"log_dir": "/var/log/jobs", "forward": "true"}, "log": {}}``. They run in the
order of that mapping (Dkron's order is random), each receiving the output the previous one
left. Every config gets ``reporting_node`` (the node running the processors) added.

``forward`` (a Go bool string, default false) is Dkron's: the built-ins keep the output in
the stored record only when it is true; otherwise the stored output is replaced by a
placeholder saying where the output went. Python processors get ``forward`` in their config
and decide for themselves.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import attrs
import trio

from trickle.engine.executors.base import (
    Processor,
    ProcessorContext,
    PythonProcessorFn,
    parse_go_bool,
)
from trickle.engine.executors.registry import check_name
from trickle.engine.model import Execution, Job
from trickle.errors import ValidationError

logger = logging.getLogger(__name__)
output_logger = logging.getLogger("trickle.processors.log")  # where the `log` processor writes

LOG_PLACEHOLDER = "Output in trickle log"
PROCESSOR_TIMEOUT = 60.0  # seconds one processor may take before it is abandoned
DEFAULT_LOG_DIR = "/var/log/trickle"  # the `files` processor's default log_dir
DIR_MODE = 0o750  # directories the `files` processor creates
FILE_MODE = 0o640  # files it writes (the output may hold secrets)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def _forward(config: Mapping[str, str]) -> bool:
    return parse_go_bool(config.get("forward", ""))


def _check_forward(name: str, config: Mapping[str, str]) -> None:
    try:
        _forward(config)
    except ValueError as exc:
        raise ValidationError(
            f"processor {name}: forward: {exc}", field=f"processors.{name}.forward"
        ) from None


class LogProcessor:
    """Dkron's ``log``: the output between BEGIN/END lines, as one record of the logger
    ``trickle.processors.log`` (INFO on success, ERROR on failure).
    Placeholder: ``Output in trickle log``."""

    name = "log"

    def validate(self, config: Mapping[str, str]) -> None:
        _check_forward(self.name, config)

    async def process(self, ctx: ProcessorContext) -> str:
        execution = ctx.execution
        text = (
            f"----- BEGIN OUTPUT job={execution.job_name} execution={execution.id} -----\n"
            f"{execution.output}\n"
            "----- END OUTPUT -----"
        )
        output_logger.log(logging.INFO if execution.success else logging.ERROR, "%s", text)
        return execution.output if _forward(ctx.config) else LOG_PLACEHOLDER


def _path_component(text: str) -> str:
    """``text`` made safe as one file name: no separators, no leading dot."""
    safe = _UNSAFE.sub("_", text) or "_"
    return "_" + safe if safe.startswith(".") else safe


def files_path(log_dir: str | os.PathLike[str], job_name: str, execution_id: str) -> Path:
    """Where the ``files`` processor writes: ``<log_dir>/<job>/<execution id>.log``."""
    return Path(log_dir) / _path_component(job_name) / f"{_path_component(execution_id)}.log"


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as file:
        file.write(text)


class FilesProcessor:
    """Dkron's ``files``: writes the output to ``<log_dir>/<job>/<execution id>.log``
    (``log_dir`` default ``/var/log/trickle``, created as needed). Placeholder: the path."""

    name = "files"

    def validate(self, config: Mapping[str, str]) -> None:
        _check_forward(self.name, config)
        log_dir = config.get("log_dir", "")
        if log_dir and not os.path.isabs(log_dir):
            raise ValidationError(
                f"processor files: log_dir {log_dir!r} must be an absolute path",
                field="processors.files.log_dir",
            )

    async def process(self, ctx: ProcessorContext) -> str:
        forward = _forward(ctx.config)
        log_dir = ctx.config.get("log_dir") or DEFAULT_LOG_DIR
        path = files_path(log_dir, ctx.execution.job_name, ctx.execution.id)
        try:
            await trio.to_thread.run_sync(_write_file, path, ctx.execution.output)
        except OSError as exc:
            raise OSError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return ctx.execution.output if forward else str(path)


class PythonProcessor:
    """Runs ``fn(ctx)``: it returns the new output, or None to leave it unchanged."""

    def __init__(self, name: str, fn: PythonProcessorFn) -> None:
        if not callable(fn):
            raise TypeError(f"python processor {name!r}: {fn!r} is not callable")
        self.name = name
        self.fn = fn

    async def process(self, ctx: ProcessorContext) -> str:
        result = await self.fn(ctx)
        if result is None:
            return ctx.execution.output
        if not isinstance(result, str):
            raise TypeError(
                f"python processor {self.name!r} returned {type(result).__name__}; "
                "expected the new output (str) or None"
            )
        return result

    def __repr__(self) -> str:
        return f"PythonProcessor({self.name!r}, {self.fn!r})"


class ProcessorRegistry:
    """Name -> processor. Built-ins: ``log`` and ``files`` (unless ``builtins=False``).

    Names are non-empty ``[a-z0-9_-]``; registering a taken name raises ``ValueError``.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._processors: dict[str, Processor] = {}
        if builtins:
            self.register("log", LogProcessor())
            self.register("files", FilesProcessor())

    def register(self, name: str, processor: Processor) -> None:
        """Add ``processor`` (``async process(ctx) -> str``; an optional
        ``validate(config)`` is called at job save time)."""
        check_name(name, kind="processor")
        if name in self._processors:
            raise ValueError(f"a processor named {name!r} is already registered")
        if not callable(getattr(processor, "process", None)):
            raise ValueError(f"processor {name!r} must have async process(ctx)")
        self._processors[name] = processor

    def register_python(self, name: str, fn: PythonProcessorFn) -> None:
        """Register ``async def fn(ctx) -> str | None`` as processor ``name``."""
        check_name(name, kind="processor")
        self.register(name, PythonProcessor(name, fn))

    def get(self, name: str) -> Processor | None:
        return self._processors.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._processors

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._processors)

    def validate(self, processors: Mapping[str, Mapping[str, str]]) -> None:
        """Check a job's ``processors``; raises ``ValidationError`` with field
        ``processors`` (unknown name, listing the known ones) or
        ``processors.<name>.<key>``."""
        if not isinstance(processors, Mapping):
            raise ValidationError("processors must be an object", field="processors")
        for name, config in processors.items():
            processor = self._processors.get(name)
            if processor is None:
                raise ValidationError(
                    f"unknown processor {name!r}; known processors: {', '.join(self.names())}",
                    field="processors",
                )
            if not isinstance(config, Mapping):
                raise ValidationError(
                    f"processor {name}: config must be an object of strings",
                    field=f"processors.{name}",
                )
            for key, value in config.items():
                if not isinstance(value, str):
                    raise ValidationError(
                        f"processor {name}: {key} must be a string, not {type(value).__name__}",
                        field=f"processors.{name}.{key}",
                    )
            _check_forward(name, config)
            validate = getattr(processor, "validate", None)
            if callable(validate):
                validate(config)


def _append_line(output: str, line: str) -> str:
    if output and not output.endswith("\n"):
        output += "\n"
    return output + line


async def run_processors(
    registry: ProcessorRegistry, job: Job, execution: Execution, *, node_name: str
) -> str:
    """Apply ``job.processors`` in mapping order to the finished ``execution``; return
    the output to store.

    Each processor sees the output the previous one returned and its config plus
    ``reporting_node=node_name``. An unknown processor (unregistered since the job was
    saved) is logged and skipped, as Dkron. A processor that raises, or takes longer than
    ``PROCESSOR_TIMEOUT`` seconds, is logged and its error appended to the output; the
    other processors still run and the result is never lost (a hung processor cannot leave
    the execution "running"). Cancellation propagates.
    """
    output = execution.output
    for name, config in job.processors.items():
        processor = registry.get(name)
        if processor is None:
            logger.warning("job %s: unknown processor %r skipped", job.name, name)
            continue
        ctx = ProcessorContext(
            job=job,
            execution=attrs.evolve(execution, output=output),
            config={**config, "reporting_node": node_name},
        )
        try:
            with trio.fail_after(PROCESSOR_TIMEOUT):
                result = await processor.process(ctx)
            if not isinstance(result, str):
                raise TypeError(
                    f"returned {type(result).__name__}; a processor must return the output (str)"
                )
            output = result
        except trio.TooSlowError:
            logger.warning(
                "job %s execution %s: processor %r timed out", job.name, execution.id, name
            )
            output = _append_line(
                output, f"processor {name} failed: timed out after {PROCESSOR_TIMEOUT:g}s"
            )
        except Exception as exc:
            logger.warning(
                "job %s execution %s: processor %r failed",
                job.name,
                execution.id,
                name,
                exc_info=True,
            )
            message = str(exc)
            output = _append_line(
                output,
                f"processor {name} failed: {type(exc).__name__}"
                + (f": {message}" if message else ""),
            )
    return output
