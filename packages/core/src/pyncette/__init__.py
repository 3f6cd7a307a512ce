"""Pyncette: reliable, distributed cron and delayed-task scheduling for async Python."""

from importlib.metadata import PackageNotFoundError, version

from .app import Pyncette
from .clock import sleep
from .model import Context, ExecutionMode, FailureMode, ListTasksResponse, TaskState
from .runtime import PyncetteContext
from .task import Task

try:
    __version__ = version("pyncette")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = [
    "Context",
    "ExecutionMode",
    "FailureMode",
    "ListTasksResponse",
    "Pyncette",
    "PyncetteContext",
    "Task",
    "TaskState",
    "__version__",
    "sleep",
]
