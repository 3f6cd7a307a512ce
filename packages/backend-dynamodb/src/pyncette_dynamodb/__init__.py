"""Amazon DynamoDB storage backend for Pyncette (``dynamodb``).

Usage::

    app = Pyncette(
        repository_factory=dynamodb_repository,
        dynamodb_region_name="eu-west-1",
        dynamodb_table_name="pyncette",
    )

Credentials come from the ambient AWS chain (environment, shared config, container or instance metadata),
unless the secret options ``dynamodb_aws_access_key_id`` and ``dynamodb_aws_secret_access_key`` (and
``dynamodb_aws_session_token``) give them.
"""

from ._backend import DynamoDBBackend, backend
from ._repository import DynamoDBRepository

#: Pyncette 1.x name of the factory.
dynamodb_repository = backend

__all__ = ["DynamoDBBackend", "DynamoDBRepository", "backend", "dynamodb_repository"]
