"""Pyncette 1.x import path of the MySQL / MariaDB backend, which lives in the ``pyncette-mysql`` distribution.

``from pyncette.mysql import mysql_repository`` keeps working; without the package installed
the import fails with the command that installs it (``pip install "pyncette[mysql]"`` for a release).
"""

from ._compat import import_backend_package

_package = import_backend_package("pyncette_mysql", "mysql")

mysql_repository = _package.mysql_repository
backend = _package.backend

__all__ = ["backend", "mysql_repository"]
