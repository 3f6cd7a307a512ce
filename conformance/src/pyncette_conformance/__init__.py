"""The Pyncette backend conformance suite.

Subclass the classes below in a backend's test module and override the
``pyncette_backend`` fixture, or run everything against an installed backend
with ``pytest --pyargs pyncette_conformance --pyncette-backend NAME``.
"""

from .base import ConformanceBase, requires
from .harness import BackendUnderTest
from .repository import RepositoryContract

__all__ = [
    "BackendUnderTest",
    "ConformanceBase",
    "RepositoryContract",
    "requires",
]
