"""Executors (shell, http, python) and the registry that names them; see ``base`` for the contract."""

from trickle.engine.executors.base import (
    DEFAULT_OUTPUT_LIMIT,
    CodeSet,
    ExecutionContext,
    Executor,
    ExecutorResult,
    OutputBuffer,
    Processor,
    ProcessorContext,
    PythonExecutorFn,
    PythonProcessorFn,
    parse_codes,
    parse_go_bool,
)
from trickle.engine.executors.http import HttpExecutor
from trickle.engine.executors.python import PythonExecutor
from trickle.engine.executors.registry import ExecutorRegistry
from trickle.engine.executors.shell import ShellExecutor

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "CodeSet",
    "ExecutionContext",
    "Executor",
    "ExecutorRegistry",
    "ExecutorResult",
    "HttpExecutor",
    "OutputBuffer",
    "Processor",
    "ProcessorContext",
    "PythonExecutor",
    "PythonExecutorFn",
    "PythonProcessorFn",
    "ShellExecutor",
    "parse_codes",
    "parse_go_bool",
]
