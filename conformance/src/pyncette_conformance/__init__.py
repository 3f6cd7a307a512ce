"""The Pyncette backend conformance suite.

Subclass the suite classes in a backend's test module and override the
``pyncette_backend`` fixture (see :class:`BackendUnderTest`), or run everything
against an installed backend with::

    pytest --pyargs pyncette_conformance --pyncette-backend NAME
"""

from .base import ConformanceBase, requires
from .behaviour import BehaviourSuite
from .control import ControlContract, ControlSuite
from .coordination import CoordinationSuite, IsolationSuite, PersistenceSuite
from .faults import FaultPlan, FaultSuite, FaultyRepository
from .harness import BackendUnderTest
from .notifications import NotificationSuite
from .policies import PolicySuite
from .recovery import RecoverySuite, run_script_until_interrupted
from .repository import RepositoryContract
from .validation import ValidationSuite

#: Every standard suite, for ``class TestMine(MyMixin, suite)`` loops or explicit subclasses.
ALL_SUITES = (
    RepositoryContract,
    BehaviourSuite,
    PolicySuite,
    ControlContract,
    ControlSuite,
    NotificationSuite,
    PersistenceSuite,
    IsolationSuite,
    CoordinationSuite,
    RecoverySuite,
    ValidationSuite,
    FaultSuite,
)

__all__ = [
    "ALL_SUITES",
    "BackendUnderTest",
    "BehaviourSuite",
    "ConformanceBase",
    "ControlContract",
    "ControlSuite",
    "CoordinationSuite",
    "FaultPlan",
    "FaultSuite",
    "FaultyRepository",
    "IsolationSuite",
    "NotificationSuite",
    "PersistenceSuite",
    "PolicySuite",
    "RecoverySuite",
    "RepositoryContract",
    "ValidationSuite",
    "requires",
    "run_script_until_interrupted",
]
