"""Python executors: an adapter that runs a registered ``async def`` callable as a job."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from trickle.engine.executors.base import ExecutionContext, ExecutorResult, PythonExecutorFn

logger = logging.getLogger(__name__)

ConfigValidator = Callable[[Mapping[str, str]], None]


class PythonExecutor:
    """Runs ``fn(ctx)`` for each execution.

    The callable's result: ``None`` or ``True`` is a success, ``False`` a failure, an
    ``ExecutorResult`` is taken as is. An exception is a failure whose ``<ExcType>: message``
    becomes the error (the traceback goes to the log); anything else returned is a failure
    saying what was returned. Cancellation is never swallowed: it propagates.

    ``validate`` (optional) checks an ``executor_config`` at job save time and raises
    ``trickle.ValidationError(field="executor_config.<key>")``; without it every config is
    accepted.
    """

    def __init__(
        self, name: str, fn: PythonExecutorFn, *, validate: ConfigValidator | None = None
    ) -> None:
        if not callable(fn):
            raise TypeError(f"python executor {name!r}: {fn!r} is not callable")
        self.name = name
        self.fn = fn
        self._validate = validate

    def validate(self, config: Mapping[str, str]) -> None:
        if self._validate is not None:
            self._validate(config)

    async def execute(self, ctx: ExecutionContext) -> ExecutorResult:
        try:
            result = await self.fn(ctx)
        except Exception as exc:
            logger.warning(
                "python executor %r failed for job %s", self.name, ctx.job.name, exc_info=True
            )
            message = str(exc)
            error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            return ExecutorResult(success=False, error=error)
        if result is None or result is True:
            return ExecutorResult(success=True)
        if result is False:
            return ExecutorResult(
                success=False, error=f"python executor {self.name!r} returned False"
            )
        if isinstance(result, ExecutorResult):
            return result
        return ExecutorResult(
            success=False,
            error=f"python executor {self.name!r} returned {type(result).__name__} "
            f"{result!r:.200}; expected None, a bool or an ExecutorResult",
        )

    def __repr__(self) -> str:
        return f"PythonExecutor({self.name!r}, {self.fn!r})"
