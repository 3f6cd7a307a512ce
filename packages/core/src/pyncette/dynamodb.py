"""Pyncette 1.x import path of the Amazon DynamoDB backend, which lives in the ``pyncette-dynamodb`` distribution.

``from pyncette.dynamodb import dynamodb_repository`` keeps working; without the package installed
the import fails with the command that installs it (``pip install "pyncette[dynamodb]"`` for a release).
"""

from ._compat import import_backend_package

_package = import_backend_package("pyncette_dynamodb", "dynamodb")

dynamodb_repository = _package.dynamodb_repository
backend = _package.backend

__all__ = ["backend", "dynamodb_repository"]
