"""Pyncette 1.x import path of the Redis backend, which lives in the ``pyncette-redis`` distribution.

``from pyncette.redis import redis_repository`` keeps working; without the package installed
the import fails with the command that installs it (``pip install "pyncette[redis]"`` for a release).
"""

from ._compat import import_backend_package

_package = import_backend_package("pyncette_redis", "redis")

redis_repository = _package.redis_repository
backend = _package.backend

__all__ = ["backend", "redis_repository"]
