"""The executors a node knows by name: the built-ins ``shell`` and ``http``, plus registered ones."""

from __future__ import annotations

import re
from collections.abc import Mapping

from trickle.engine.executors.base import Executor, PythonExecutorFn
from trickle.engine.executors.http import HttpExecutor
from trickle.engine.executors.python import ConfigValidator, PythonExecutor
from trickle.engine.executors.shell import ShellExecutor
from trickle.errors import ValidationError

NAME_RE = re.compile(r"[a-z0-9_-]+")  # executor and processor names


def check_name(name: object, *, kind: str) -> str:
    """Return ``name`` if it is a valid executor/processor name, else raise ``ValueError``."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use lowercase letters, digits, '_' and '-'"
        )
    return name


class ExecutorRegistry:
    """Name -> executor. Built-ins: ``shell`` and ``http`` (unless ``builtins=False``).

    Names are non-empty ``[a-z0-9_-]``; registering a name that exists (a built-in
    included) raises ``ValueError``. Not thread-safe: use it from the Trio thread.
    """

    def __init__(self, *, builtins: bool = True) -> None:
        self._executors: dict[str, Executor] = {}
        if builtins:
            self.register("shell", ShellExecutor())
            self.register("http", HttpExecutor())

    def register(self, name: str, executor: Executor) -> None:
        """Add ``executor`` under ``name`` (ValueError: bad or taken name, or not an executor)."""
        check_name(name, kind="executor")
        if name in self._executors:
            raise ValueError(f"an executor named {name!r} is already registered")
        if not callable(getattr(executor, "execute", None)) or not callable(
            getattr(executor, "validate", None)
        ):
            raise ValueError(f"executor {name!r} must have validate(config) and async execute(ctx)")
        self._executors[name] = executor

    def register_python(
        self, name: str, fn: PythonExecutorFn, *, validate: ConfigValidator | None = None
    ) -> None:
        """Register an ``async def fn(ctx)`` as executor ``name`` (see ``PythonExecutor``)."""
        check_name(name, kind="executor")
        self.register(name, PythonExecutor(name, fn, validate=validate))

    def get(self, name: str) -> Executor:
        """The executor called ``name``; ``ValidationError(field="executor")`` if unknown."""
        executor = self._executors.get(name)
        if executor is None:
            known = ", ".join(self.names())
            if not name:
                raise ValidationError(
                    f"executor is required; known executors: {known}", field="executor"
                )
            raise ValidationError(
                f"unknown executor {name!r}; known executors: {known}", field="executor"
            )
        return executor

    def __contains__(self, name: object) -> bool:
        return name in self._executors

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._executors)

    def validate(self, executor: str, config: Mapping[str, str]) -> None:
        """Check a job's executor and executor_config; raises ``ValidationError`` naming the
        field (``executor`` or ``executor_config.<key>``)."""
        impl = self.get(executor)
        for key, value in config.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValidationError(
                    f"executor_config values must be strings; {key!r} is {type(value).__name__}",
                    field=f"executor_config.{key}",
                )
        impl.validate(config)
