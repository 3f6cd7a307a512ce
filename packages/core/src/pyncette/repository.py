"""Pyncette 1.x's ``pyncette.repository`` names, mapped to Pyncette 2's storage contract.

Pyncette 2's :class:`~pyncette.abc.Repository` has other methods than 1.x's (batched claims and
commits instead of per-task polls): a 1.x repository implementation must be rewritten against it (see
"Writing a backend" in the documentation). Code that only names these types keeps importing them.
"""

from __future__ import annotations

from .abc import Lease, Repository
from .app import RepositoryFactory
from .model import ContinuationToken, ListTasksResponse, PollResponse, QueryResponse, TaskState
from .task import Task

__all__ = [
    "ContinuationToken",
    "Lease",
    "ListTasksResponse",
    "PollResponse",
    "QueryResponse",
    "Repository",
    "RepositoryFactory",
    "Task",
    "TaskState",
]
