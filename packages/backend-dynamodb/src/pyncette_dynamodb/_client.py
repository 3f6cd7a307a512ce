"""The aiobotocore client: creation, retries, error translation and the connection-cutting test hook."""

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
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, PartialCredentialsError

from pyncette.abc import map_exceptions
from pyncette.errors import BackendError, ConfigurationError
from pyncette.redaction import get_logger, redact

from ._codec import Item
from ._options import Config

logger = get_logger(__name__)

#: Every exception the driver stack can raise, translated to BackendError at the boundary.
DRIVER_ERRORS: dict[type[BaseException], type[Exception]] = {
    ClientError: BackendError,
    BotoCoreError: BackendError,
    aiohttp.ClientError: BackendError,
    OSError: BackendError,
    asyncio.TimeoutError: BackendError,
}

CONDITION_FAILED = "ConditionalCheckFailedException"
#: DynamoDB refuses the request itself (an item over 400 KB, a type mismatch): retrying cannot help.
INVALID = "ValidationException"

#: Error codes worth another try once botocore's own retries are used up (throttling and server-side hiccups).
#: Connection errors and timeouts are not among them: botocore already retried those, and retrying again
#: would only make a dead or hung endpoint take longer to report.
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

#: Extra attempts, with jittered exponential backoff, after botocore gave up on a retryable error code.
EXTRA_ATTEMPTS = 2
BACKOFF_BASE = 0.2

#: Loggers of the driver stack that may print request headers (the session token, the access key id) at DEBUG.
_DRIVER_LOGGERS = ("botocore", "aiobotocore")


class InvalidRequest(ConfigurationError):
    """DynamoDB refused a request as invalid (``ValidationException``): a value it cannot store."""


def host_and_port(url: str) -> str:
    """``host:port`` of an endpoint URL."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def error_code(exc: BaseException | None) -> str:
    """The AWS error code of a client error, e.g. ``ConditionalCheckFailedException`` ("" for anything else)."""
    if not isinstance(exc, ClientError):
        return ""
    return str(exc.response.get("Error", {}).get("Code", ""))


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

    def __init__(self, client: Any, config: Config) -> None:
        self.raw = client
        self.config = config
        #: ``host:port`` the client talks to, for messages (never credentials).
        self.server = host_and_port(str(client.meta.endpoint_url))

    def redact(self, text: str) -> str:
        """``text`` with every secret masked (the options' credentials included)."""
        return redact(text, self.config.secrets)

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
        label = f"dynamodb {what} ({self.server})"
        with map_exceptions(DRIVER_ERRORS, label):
            attempt = 0
            while True:
                try:
                    response: dict[str, Any] = await method(**params)
                except ClientError as exc:
                    code = error_code(exc)
                    if conditional and code == CONDITION_FAILED:
                        return Outcome(False, exc.response.get("Item"), attempt > 0 or _was_retried(exc.response))
                    if code == INVALID:
                        raise InvalidRequest(self.redact(f"{label} refused: {exc}")) from exc
                    if code not in RETRYABLE_CODES or attempt >= EXTRA_ATTEMPTS:
                        raise
                    failure: Exception = exc
                else:
                    if conditional:
                        return Outcome(True, response.get("Attributes"), attempt > 0 or _was_retried(response))
                    return Outcome(True, response, attempt > 0)
                attempt += 1
                delay = random.uniform(0, BACKOFF_BASE * 4**attempt)
                logger.debug("dynamodb %s: %s; retrying in %.2fs", what, failure, delay)
                await asyncio.sleep(delay)

    def kill_connections(self) -> int:
        """Abort every open HTTP connection of this client, idle or in flight; return how many.

        In-flight requests fail as after a network failure (botocore then retries them on a new
        connection); idle ones are dropped from the pool. Reaches into aiobotocore's HTTP session
        and aiohttp's connector, so it raises :class:`NotImplementedError` when those change shape.
        """
        http = getattr(getattr(self.raw, "_endpoint", None), "http_session", None)
        sessions = getattr(http, "_sessions", None)
        if not isinstance(sessions, dict):
            raise NotImplementedError(
                f"cannot reach the HTTP connections of {type(http).__name__} (aiobotocore's aiohttp session expected)"
            )
        cut = 0
        for session in list(sessions.values()):
            connector = getattr(session, "connector", None)
            idle = getattr(connector, "_conns", None)
            busy = getattr(connector, "_acquired", None)
            if not isinstance(idle, dict) or not isinstance(busy, set):
                raise NotImplementedError(f"unknown aiohttp connector layout ({type(connector).__name__})")
            protocols = [protocol for pooled in idle.values() for protocol, _ in pooled] + list(busy)
            for protocol in protocols:
                transport = getattr(protocol, "transport", None)
                if transport is not None and not transport.is_closing():
                    transport.abort()
                    cut += 1
        return cut


def _redact_driver_logs() -> None:
    """Pass the driver stack's log records through the redacting filter (botocore logs headers at DEBUG)."""
    for name in list(logging.root.manager.loggerDict):
        if name.split(".", 1)[0] in _DRIVER_LOGGERS:
            get_logger(name)


@contextlib.asynccontextmanager
async def connect(config: Config) -> AsyncIterator[Client]:
    """Create the aiobotocore client; no request is sent yet.

    Credentials are the options' when given, otherwise botocore's ambient chain.
    """
    aio_config = AioConfig(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        max_pool_connections=config.max_pool_connections,
        # botocore's "max_attempts" counts retries only; "total_max_attempts" includes the first attempt.
        retries={"mode": config.retry_mode, "total_max_attempts": config.max_attempts},
        # The requests are built by this package, not by users; the server validates them anyway.
        parameter_validation=False,
    )
    region = config.region_name
    session = get_session()
    if region is None and config.endpoint is not None and not session.get_config_variable("region"):
        # Local emulators ignore the region, but request signing needs one.
        region = "us-east-1"
    credentials: dict[str, str] = {}
    if config.access_key_id is not None and config.secret_access_key is not None:
        credentials = {"aws_access_key_id": config.access_key_id, "aws_secret_access_key": config.secret_access_key}
        if config.session_token is not None:
            credentials["aws_session_token"] = config.session_token
    where = host_and_port(config.endpoint) if config.endpoint else f"region {region}"
    async with contextlib.AsyncExitStack() as stack:
        with map_exceptions(DRIVER_ERRORS, f"dynamodb client setup ({where})"):
            try:
                raw = await stack.enter_async_context(
                    session.create_client(
                        "dynamodb", region_name=region, endpoint_url=config.endpoint, config=aio_config, **credentials
                    )
                )
            except NoRegionError:
                raise ConfigurationError(
                    "no AWS region: set dynamodb_region_name (e.g. 'eu-west-1'), "
                    "AWS_DEFAULT_REGION or a region in the shared AWS config"
                ) from None
        _redact_driver_logs()
        yield Client(raw, config)


#: Error codes meaning the credentials were rejected: the user must fix them.
_AUTH_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException", "MissingAuthenticationToken"}
)


def credentials_error(exc: BaseException, config: Config) -> ConfigurationError | None:
    """A clear ConfigurationError when ``exc`` (or its cause) says AWS credentials are missing or refused."""
    cause = exc.__cause__ if isinstance(exc, BackendError) else exc
    source = (
        "the dynamodb_aws_* options"
        if config.explicit_credentials
        else "the ambient chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, "
        "container or instance metadata)"
    )
    if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
        message = f"no usable AWS credentials for DynamoDB: they come from {source}; {cause}"
    elif error_code(cause) in _AUTH_CODES:
        message = f"DynamoDB refused the AWS credentials from {source}, or their permissions: {cause}"
    else:
        return None
    return ConfigurationError(redact(message, config.secrets))
