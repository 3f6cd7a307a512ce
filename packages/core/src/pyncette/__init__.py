"""Pyncette: reliable, distributed cron and delayed-task scheduling for async Python."""

from importlib.metadata import PackageNotFoundError, version

from .app import Pyncette
from .clock import sleep
from .model import Context, HistoryEntry, ListTasksResponse, Orphan, Pause, TaskDescription, TaskState
from .modes import ExecutionMode, FailureMode
from .policies import Retry
from .runtime import PyncetteContext
from .task import DynamicTask, Instance, StaticTask, Task

try:
    __version__ = version("pyncette")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0+unknown"

__all__ = [
    "Context",
    "DynamicTask",
    "ExecutionMode",
    "FailureMode",
    "HistoryEntry",
    "Instance",
    "ListTasksResponse",
    "Orphan",
    "Pause",
    "Pyncette",
    "PyncetteContext",
    "Retry",
    "StaticTask",
    "Task",
    "TaskDescription",
    "TaskState",
    "__version__",
    "sleep",
]
