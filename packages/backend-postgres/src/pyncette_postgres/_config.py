"""Option parsing and validation for the PostgreSQL backend."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyncette.errors import ConfigurationError

DEFAULT_TABLE_NAME = "pyncette_tasks"
DEFAULT_APPLICATION_NAME = "pyncette"
DEFAULT_POOL_MIN_SIZE = 1
DEFAULT_POOL_MAX_SIZE = 10
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_COMMAND_TIMEOUT = 30.0

#: PostgreSQL truncates identifiers longer than 63 bytes; refuse them instead.
TABLE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_APPLICATION_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,63}")
_SCHEMES = ("postgres", "postgresql")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

OPTIONS: dict[str, str] = {
    "postgres_url": "connection URL, postgres://user[:password]@host[:port]/database[?sslmode=...] (required)",
    "postgres_table_name": f"table name: letters, digits, underscores, at most 63 (default {DEFAULT_TABLE_NAME!r})",
    "postgres_skip_table_create": "do not create the table and index on startup; it must exist (default False)",
    "postgres_pool_min_size": f"connections opened at startup and kept idle (default {DEFAULT_POOL_MIN_SIZE})",
    "postgres_pool_max_size": f"maximum connections in the pool (default {DEFAULT_POOL_MAX_SIZE})",
    "postgres_connect_timeout": f"seconds to wait for a new connection (default {DEFAULT_CONNECT_TIMEOUT:g})",
    "postgres_command_timeout": f"seconds one statement may take (default {DEFAULT_COMMAND_TIMEOUT:g})",
    "postgres_application_name": f"application_name of the connections (default {DEFAULT_APPLICATION_NAME!r})",
}


@dataclass(frozen=True)
class Settings:
    """Validated options of one repository."""

    url: str
    table_name: str
    skip_table_create: bool
    pool_min_size: int
    pool_max_size: int
    connect_timeout: float
    command_timeout: float
    application_name: str

    @property
    def server(self) -> str:
        """``host:port`` of the server, for messages (never includes credentials)."""
        return describe_server(self.url)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        return parts._replace(netloc=f"{user}:***@{hosts}").geturl()
    return url


def describe_server(url: str) -> str:
    """``host:port`` (or several, comma-separated) that ``url`` points at."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2] or query.get("host", ["localhost"])[0]
    default_port = query.get("port", ["5432"])[0]
    described = []
    for host in hosts.split(","):
        # "[::1]" and "host" have no port; "[::1]:5433" and "host:5433" do.
        has_port = host.rsplit("]", 1)[-1].count(":") == 1 if host.startswith("[") else ":" in host
        described.append(host if has_port else f"{host}:{default_port}")
    return ",".join(described)


def _url(value: Any) -> str:
    if value is None:
        raise ConfigurationError("postgres_url is required, e.g. postgres://postgres@localhost:5432/pyncette")
    if not isinstance(value, str) or urlsplit(value).scheme not in _SCHEMES:
        shown = redact(value) if isinstance(value, str) else repr(value)
        raise ConfigurationError(f"postgres_url must be a postgres:// or postgresql:// URL, got {shown}")
    return value


def validate_table_name(value: Any) -> str:
    """Return ``value`` if it is a safe table name, else raise :class:`ConfigurationError`."""
    if not isinstance(value, str) or not TABLE_NAME_PATTERN.fullmatch(value):
        raise ConfigurationError(
            f"postgres_table_name must be 1-63 letters, digits or underscores, not starting with a digit; got {value!r}"
        )
    return value


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{name} must be a boolean (True/False), got {value!r}")


def _int(name: str, value: Any, minimum: int) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    if number is None or number < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _seconds(name: str, value: Any) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return number


def parse_settings(options: Mapping[str, Any]) -> Settings:
    """Validate the backend's options (already filtered to ``postgres_*``)."""
    url = _url(options.get("postgres_url"))
    table_name = validate_table_name(options.get("postgres_table_name", DEFAULT_TABLE_NAME))
    skip = _bool("postgres_skip_table_create", options.get("postgres_skip_table_create", False))
    min_size = _int("postgres_pool_min_size", options.get("postgres_pool_min_size", DEFAULT_POOL_MIN_SIZE), 0)
    max_size = _int("postgres_pool_max_size", options.get("postgres_pool_max_size", DEFAULT_POOL_MAX_SIZE), 1)
    if min_size > max_size:
        raise ConfigurationError(
            f"postgres_pool_min_size ({min_size}) must not exceed postgres_pool_max_size ({max_size})"
        )
    timeout = _seconds("postgres_connect_timeout", options.get("postgres_connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    command_timeout = _seconds(
        "postgres_command_timeout", options.get("postgres_command_timeout", DEFAULT_COMMAND_TIMEOUT)
    )
    app_name = options.get("postgres_application_name", DEFAULT_APPLICATION_NAME)
    if not isinstance(app_name, str) or not _APPLICATION_NAME_PATTERN.fullmatch(app_name):
        raise ConfigurationError(
            f"postgres_application_name must be 1-63 letters, digits or '_.:-' characters, got {app_name!r}"
        )
    return Settings(
        url=url,
        table_name=table_name,
        skip_table_create=skip,
        pool_min_size=min_size,
        pool_max_size=max_size,
        connect_timeout=timeout,
        command_timeout=command_timeout,
        application_name=app_name,
    )
