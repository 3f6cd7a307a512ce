"""MySQL / MariaDB storage backend for Pyncette: ``Pyncette(backend="mysql", mysql_host=..., ...)``."""

from __future__ import annotations

from ._backend import MySQLBackend, backend, mysql_repository
from ._repository import MySQLRepository

__all__ = ["MySQLBackend", "MySQLRepository", "backend", "mysql_repository"]
