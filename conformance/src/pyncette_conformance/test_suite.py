"""Concrete test classes collected by ``pytest --pyargs pyncette_conformance``."""

from pyncette_conformance.behaviour import BehaviourSuite
from pyncette_conformance.coordination import CoordinationSuite, IsolationSuite, PersistenceSuite
from pyncette_conformance.repository import RepositoryContract


class TestRepository(RepositoryContract):
    """Repository-level contract against the backend chosen on the command line."""


class TestBehaviour(BehaviourSuite):
    """Scheduling semantics against the backend chosen on the command line."""


class TestPersistence(PersistenceSuite):
    """State survives reopening."""


class TestIsolation(IsolationSuite):
    """Namespaces never mix."""


class TestCoordination(CoordinationSuite):
    """Several instances never double-run or lose work."""
