"""Concrete test classes collected by ``pytest --pyargs pyncette_conformance``."""

from pyncette_conformance.repository import RepositoryContract


class TestRepository(RepositoryContract):
    """Repository-level contract against the backend chosen on the command line."""
