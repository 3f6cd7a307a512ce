"""How a run is guarded (:class:`ExecutionMode`) and what a failed run does with its lease (:class:`FailureMode`)."""

from __future__ import annotations

from enum import Enum


class ExecutionMode(Enum):
    """How a run is guarded against running twice or not at all."""

    #: Lease the run, commit after success: a crash means a retry (default).
    AT_LEAST_ONCE = 0
    #: Schedule the next run before the body starts; failures are only logged.
    AT_MOST_ONCE = 1


class FailureMode(Enum):
    """What an AT_LEAST_ONCE run that raised does with its lease."""

    #: Keep the lease until it expires, then retry (default).
    NONE = 0
    #: Release the lease at once: retried on the next tick.
    UNLOCK = 1
    #: Treat the failure as success and schedule the next run.
    COMMIT = 2


__all__ = ["ExecutionMode", "FailureMode"]
