"""The options of the PostgreSQL backend."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyncette.errors import ConfigurationError
from pyncette.options import Boolean, Identifier, Integer, Option, Options, Seconds, Settings, Url, port_of

DEFAULT_TABLE_NAME = "pyncette_tasks"

#: PostgreSQL truncates identifiers longer than 63 bytes; refuse them instead.
TABLE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _check(settings: Settings) -> None:
    low, high = settings["postgres_pool_min_size"], settings["postgres_pool_max_size"]
    if low > high:
        raise ConfigurationError(f"postgres_pool_min_size ({low}) must not exceed postgres_pool_max_size ({high})")


OPTIONS = Options(
    Option(
        "postgres_url",
        Url("postgres", "postgresql"),
        "connection URL: postgres:// or postgresql://, then user, password, host(s), port, database, parameters",
        required=True,
    ),
    Option(
        "postgres_table_name",
        Identifier(TABLE_NAME_PATTERN.pattern, "1-63 letters, digits or underscores, not starting with a digit"),
        "table of the app's tasks; apps sharing a database use different tables",
        default=DEFAULT_TABLE_NAME,
        isolates=True,
    ),
    Option(
        "postgres_skip_table_create",
        Boolean(),
        "do not create the table and its index on start-up; they must exist",
        default=False,
    ),
    Option(
        "postgres_pool_min_size",
        Integer(0),
        "connections opened at start-up (at least one, which checks the table); the pool keeps what it opens",
        default=1,
    ),
    Option(
        "postgres_pool_max_size",
        Integer(1),
        "most connections one repository holds",
        default=10,
    ),
    Option(
        "postgres_connect_timeout",
        Seconds(),
        "seconds to wait for a new connection (TCP, TLS and authentication)",
        default=5.0,
    ),
    Option(
        "postgres_command_timeout",
        Seconds(),
        "seconds one statement may take",
        default=30.0,
    ),
    Option(
        "postgres_application_name",
        Identifier(r"[A-Za-z0-9_.:-]{1,63}", "1-63 letters, digits or the characters _ . : -"),
        "application_name of the connections, as shown in pg_stat_activity",
        default="pyncette",
    ),
    check=_check,
)


def connect_arguments(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``asyncpg.connect`` (and ``create_pool``) for these settings."""
    return {
        "dsn": settings["postgres_url"],
        "timeout": settings["postgres_connect_timeout"],
        "command_timeout": settings["postgres_command_timeout"],
        "server_settings": {"application_name": settings["postgres_application_name"]},
    }


def describe_server(url: str) -> str:
    """``host:port`` (or several, comma-separated) that ``url`` points at, for messages; never credentials."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    hosts = parts.netloc.rpartition("@")[2] or query.get("host", ["localhost"])[0]
    default_port = query.get("port", ["5432"])[0]
    described = []
    for host in hosts.split(","):
        try:
            has_port = port_of(host) is not None
        except ValueError:
            has_port = True  # shown as given
        described.append(host if has_port else f"{host}:{default_port}")
    return ",".join(described)
