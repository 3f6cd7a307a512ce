"""Pyncette 1.x import path of the PostgreSQL backend, which lives in the ``pyncette-postgres`` distribution.

``from pyncette.postgres import postgres_repository`` keeps working; without the package installed
the import fails with the command that installs it (``pip install "pyncette[postgres]"`` for a release).
"""

from ._compat import import_backend_package

_package = import_backend_package("pyncette_postgres", "postgres")

postgres_repository = _package.postgres_repository
backend = _package.backend

__all__ = ["backend", "postgres_repository"]
