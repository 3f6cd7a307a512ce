"""Option names, defaults and validation for the DynamoDB backend."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyncette.errors import ConfigurationError

DEFAULT_TABLE_NAME = "pyncette"
DEFAULT_PARTITION_PREFIX = "pyncette"

OPTIONS: dict[str, str] = {
    "dynamodb_region_name": "AWS region, e.g. 'eu-west-1' (default: the ambient AWS configuration)",
    "dynamodb_table_name": f"table name: letters, digits, underscores, 3-255 long (default {DEFAULT_TABLE_NAME!r})",
    "dynamodb_endpoint": "endpoint URL for local emulators and VPC endpoints, e.g. 'http://localhost:8000'",
    "dynamodb_partition_prefix": (
        "prefix of every partition key, to share one table between apps: "
        f"letters, digits, underscores (default {DEFAULT_PARTITION_PREFIX!r})"
    ),
    "dynamodb_skip_table_create": "True: never create the table; a missing table is an error (default False)",
    "dynamodb_connect_timeout": "seconds to wait for a TCP/TLS connection (default 5)",
    "dynamodb_read_timeout": "seconds to wait for a response (default 10)",
    "dynamodb_retry_mode": "botocore retry mode: 'standard' (default) or 'adaptive' (client-side rate limiting)",
    "dynamodb_max_attempts": "botocore attempts per request, first included (default 3); throttling gets 2 more rounds",
    "dynamodb_max_pool_connections": "HTTP connections kept open, bounds per-batch concurrency (default 100)",
}

_TABLE_NAME = re.compile(r"[A-Za-z0-9_]{3,255}")
_PREFIX = re.compile(r"[A-Za-z0-9_]{1,64}")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
_RETRY_MODES = ("standard", "adaptive")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Validated options of one repository."""

    table_name: str = DEFAULT_TABLE_NAME
    partition_prefix: str = DEFAULT_PARTITION_PREFIX
    region_name: str | None = None
    endpoint: str | None = None
    skip_table_create: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    retry_mode: str = "standard"
    max_attempts: int = 3
    max_pool_connections: int = 100


def _string(options: Mapping[str, Any], key: str, pattern: re.Pattern[str], allowed: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigurationError(f"invalid {key} {value!r}: allowed are {allowed}")
    return value


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"invalid {key} {value!r}: a number of seconds is required") from None
    if not low < number <= high:
        raise ConfigurationError(f"invalid {key} {value!r}: must be greater than {low:g} and at most {high:g}")
    return number


def _integer(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"invalid {key} {value!r}: an integer is required") from None
    if not low <= number <= high:
        raise ConfigurationError(f"invalid {key} {value!r}: must be between {low} and {high}")
    return number


def _boolean(options: Mapping[str, Any], key: str) -> bool:
    value = options.get(key)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigurationError(f"invalid {key} {value!r}: True or False is required")


def _endpoint(options: Mapping[str, Any]) -> str | None:
    value = options.get("dynamodb_endpoint")
    if value is None:
        return None
    # Messages never show a URL's user-info part: it could carry credentials.
    problem = "an http:// or https:// URL with a host is required"
    if not isinstance(value, str):
        raise ConfigurationError(f"invalid dynamodb_endpoint (a {type(value).__name__}): {problem}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigurationError(f"invalid dynamodb_endpoint: {problem} and a valid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"invalid dynamodb_endpoint {_redacted(value)!r}: {problem}")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            "invalid dynamodb_endpoint: credentials in the URL are not used; "
            "AWS credentials come from the environment, shared config or instance metadata"
        )
    return value


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def parse_settings(options: Mapping[str, Any]) -> Settings:
    """Validate already-selected ``dynamodb_*`` options (``None`` means the default).

    Raises :class:`ConfigurationError` naming the bad option and what is allowed.
    """
    letters = "letters, digits and underscores"
    retry_mode = options.get("dynamodb_retry_mode")
    if retry_mode is None:
        retry_mode = "standard"
    if retry_mode not in _RETRY_MODES:
        raise ConfigurationError(f"invalid dynamodb_retry_mode {retry_mode!r}: allowed are {', '.join(_RETRY_MODES)}")
    return Settings(
        table_name=_string(options, "dynamodb_table_name", _TABLE_NAME, f"{letters}, 3 to 255 characters")
        or DEFAULT_TABLE_NAME,
        partition_prefix=_string(options, "dynamodb_partition_prefix", _PREFIX, f"{letters}, 1 to 64 characters")
        or DEFAULT_PARTITION_PREFIX,
        region_name=_string(options, "dynamodb_region_name", _REGION, "an AWS region name such as 'eu-west-1'"),
        endpoint=_endpoint(options),
        skip_table_create=_boolean(options, "dynamodb_skip_table_create"),
        connect_timeout=_number(options, "dynamodb_connect_timeout", 5.0, 0, 300),
        read_timeout=_number(options, "dynamodb_read_timeout", 10.0, 0, 3600),
        retry_mode=retry_mode,
        max_attempts=_integer(options, "dynamodb_max_attempts", 3, 1, 20),
        max_pool_connections=_integer(options, "dynamodb_max_pool_connections", 100, 1, 1000),
    )
