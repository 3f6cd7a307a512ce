"""PostgreSQL storage backend for Pyncette (``postgres``, driver asyncpg).

Select it by name (``backend="postgres"``) or, as in Pyncette 1.x, pass
``repository_factory=postgres_repository`` with ``postgres_url=...``.
"""

from ._backend import PostgresBackend, backend
from ._repository import PostgresRepository

#: Pyncette 1.x name of the factory.
postgres_repository = backend

__all__ = ["PostgresBackend", "PostgresRepository", "backend", "postgres_repository"]
