"""The aiobotocore client: creation, retries and error translation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from pyncette.abc import map_exceptions
from pyncette.errors import BackendError, ConfigurationError

from ._codec import Item
from ._options import Settings

logger = logging.getLogger(__name__)

#: Every exception the driver stack can raise, translated to BackendError at the boundary.
DRIVER_ERRORS: dict[type[BaseException], type[Exception]] = {
    ClientError: BackendError,
    BotoCoreError: BackendError,
    aiohttp.ClientError: BackendError,
    OSError: BackendError,
    asyncio.TimeoutError: BackendError,
}

CONDITION_FAILED = "ConditionalCheckFailedException"

#: Error codes worth another try once botocore's own retries are used up.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
        "TransactionConflictException",
    }
)

#: Extra attempts, with jittered exponential backoff, after botocore gave up on a retryable error.
EXTRA_ATTEMPTS = 2
BACKOFF_BASE = 0.2


def host_and_port(url: str) -> str:
    """``host:port`` of an endpoint URL."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def error_code(exc: ClientError) -> str:
    """The AWS error code of a client error, e.g. ``ConditionalCheckFailedException``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ClientError):
        return error_code(exc) in RETRYABLE_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError, aiohttp.ClientError, OSError, asyncio.TimeoutError))


def _was_retried(response: dict[str, Any]) -> bool:
    return bool(response.get("ResponseMetadata", {}).get("RetryAttempts", 0))


@dataclass(frozen=True)
class Outcome:
    """The result of a conditional write.

    ``attributes`` are the ReturnValues of a successful write, or the item as it
    was when the condition failed (``None`` when there was no item). ``retried``
    is set when the request was sent more than once: an earlier attempt may have
    been applied, so a failed condition can be the echo of our own write.
    """

    ok: bool
    attributes: Item | None
    retried: bool


class Client:
    """The calls the repository makes, each retried on throttling and translated to Pyncette errors."""

    def __init__(self, client: Any, settings: Settings) -> None:
        self.raw = client
        self.settings = settings
        #: ``host:port`` the client talks to, for messages (never credentials).
        self.server = host_and_port(str(client.meta.endpoint_url))

    async def call(self, operation: str, what: str, **params: Any) -> dict[str, Any]:
        """Run one API call (``operation`` is the snake_case method name) and return its response."""
        outcome = await self._attempts(operation, what, params, conditional=False)
        assert outcome.attributes is not None
        return outcome.attributes

    async def write(self, operation: str, what: str, **params: Any) -> Outcome:
        """Run one conditional write; a failed condition is an :class:`Outcome`, not an error."""
        return await self._attempts(operation, what, params, conditional=True)

    async def _attempts(self, operation: str, what: str, params: dict[str, Any], *, conditional: bool) -> Outcome:
        method = getattr(self.raw, operation)
        with map_exceptions(DRIVER_ERRORS, f"dynamodb {what} ({self.server})"):
            attempt = 0
            while True:
                try:
                    response: dict[str, Any] = await method(**params)
                except ClientError as exc:
                    if conditional and error_code(exc) == CONDITION_FAILED:
                        return Outcome(False, exc.response.get("Item"), attempt > 0 or _was_retried(exc.response))
                    if not _retryable(exc) or attempt >= EXTRA_ATTEMPTS:
                        raise
                    failure: Exception = exc
                except Exception as exc:
                    if not _retryable(exc) or attempt >= EXTRA_ATTEMPTS:
                        raise
                    failure = exc
                else:
                    if conditional:
                        return Outcome(True, response.get("Attributes"), attempt > 0 or _was_retried(response))
                    return Outcome(True, response, attempt > 0)
                attempt += 1
                delay = random.uniform(0, BACKOFF_BASE * 4**attempt)
                logger.debug("dynamodb %s: %s; retrying in %.2fs", what, failure, delay)
                await asyncio.sleep(delay)


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Client]:
    """Create the aiobotocore client (credentials from the ambient chain); no request is sent yet."""
    config = AioConfig(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_pool_connections=settings.max_pool_connections,
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        # The requests are built by this package, not by users; the server validates them anyway.
        parameter_validation=False,
    )
    region = settings.region_name
    session = get_session()
    if region is None and settings.endpoint is not None and not session.get_config_variable("region"):
        # Local emulators ignore the region, but request signing needs one.
        region = "us-east-1"
    where = host_and_port(settings.endpoint) if settings.endpoint else f"region {region}"
    async with contextlib.AsyncExitStack() as stack:
        with map_exceptions(DRIVER_ERRORS, f"dynamodb client setup ({where})"):
            try:
                raw = await stack.enter_async_context(
                    session.create_client("dynamodb", region_name=region, endpoint_url=settings.endpoint, config=config)
                )
            except NoRegionError:
                raise ConfigurationError(
                    "no AWS region: set dynamodb_region_name (e.g. 'eu-west-1'), "
                    "AWS_DEFAULT_REGION or a region in the shared AWS config"
                ) from None
        yield Client(raw, settings)


#: Error codes meaning the credentials were rejected: the user must fix them.
_AUTH_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException", "MissingAuthenticationToken"}
)


def credentials_error(exc: BaseException) -> ConfigurationError | None:
    """A clear ConfigurationError when ``exc`` (or its cause) says AWS credentials are missing or refused."""
    cause = exc.__cause__ if isinstance(exc, BackendError) else exc
    if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
        return ConfigurationError(
            "no usable AWS credentials for DynamoDB: they come from the ambient chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, container or instance metadata); "
            f"{cause}"
        )
    if isinstance(cause, ClientError) and error_code(cause) in _AUTH_CODES:
        return ConfigurationError(f"DynamoDB refused the ambient AWS credentials or their permissions: {cause}")
    return None
