"""Concrete test classes collected by ``pytest --pyargs pyncette_conformance``."""

from pyncette_conformance.behaviour import BehaviourSuite
from pyncette_conformance.control import ControlContract, ControlSuite
from pyncette_conformance.coordination import CoordinationSuite, IsolationSuite, PersistenceSuite
from pyncette_conformance.faults import FaultSuite
from pyncette_conformance.notifications import NotificationSuite
from pyncette_conformance.policies import PolicySuite
from pyncette_conformance.recovery import RecoverySuite
from pyncette_conformance.repository import RepositoryContract
from pyncette_conformance.validation import ValidationSuite


class TestRepository(RepositoryContract):
    """Repository-level contract against the backend chosen on the command line."""


class TestBehaviour(BehaviourSuite):
    """Scheduling semantics against the backend chosen on the command line."""


class TestControlContract(ControlContract):
    """The control-plane repository methods (skipped unless the backend declares ``control``)."""


class TestControl(ControlSuite):
    """Pause, resume, run now and prune through the API (skipped unless the backend declares ``control``)."""


class TestNotifications(NotificationSuite):
    """Wake-ups pushed between apps (skipped unless the backend declares ``notifications``)."""


class TestPersistence(PersistenceSuite):
    """State survives reopening."""


class TestIsolation(IsolationSuite):
    """Namespaces never mix."""


class TestCoordination(CoordinationSuite):
    """Several instances never double-run or lose work."""


class TestRecovery(RecoverySuite):
    """Runs stay exactly once while the storage connections are cut (needs the kill_connections hook)."""


class TestValidation(ValidationSuite):
    """Bad input gives the same early error everywhere; no secret in any connection error."""


class TestFaults(FaultSuite):
    """Lost answers and failed calls lose and double nothing."""


class TestPolicies(PolicySuite):
    """Retries, timeouts, catch-up, overlap and jitter."""
