"""Options (the typed schema) and secrets: no password or secret parameter in any message, log line or traceback."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Boolean, Identifier, Integer, Seconds, Url
from pyncette_postgres import backend

pytestmark = pytest.mark.anyio

SECRET_1 = "hunter2-pw-Zq81"
SECRET_2 = "query-pw-Xk42"
SECRET_3 = "ssl-key-pass-Wm7"
SECRETS = (SECRET_1, SECRET_2, SECRET_3)


def full_text(exc: BaseException) -> str:
    """The message and the whole traceback text as Python would print it (causes included)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of every logger, DEBUG and up."""
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret!r} leaked into: {text}"


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert_no_secret(formatter.format(record))


# --- the schema ------------------------------------------------------------------------------------


def test_options_schema() -> None:
    options = backend.options
    assert list(options) == [
        "postgres_url",
        "postgres_table_name",
        "postgres_skip_table_create",
        "postgres_pool_min_size",
        "postgres_pool_max_size",
        "postgres_connect_timeout",
        "postgres_command_timeout",
        "postgres_application_name",
    ]
    url = options["postgres_url"]
    assert isinstance(url.kind, Url) and url.required and url.default is None
    table = options["postgres_table_name"]
    assert isinstance(table.kind, Identifier) and table.isolates and table.default == "pyncette_tasks"
    assert [name for name, option in options.items() if option.isolates] == ["postgres_table_name"]
    assert isinstance(options["postgres_skip_table_create"].kind, Boolean)
    assert options["postgres_skip_table_create"].default is False
    assert (
        isinstance(options["postgres_pool_min_size"].kind, Integer) and options["postgres_pool_min_size"].default == 1
    )
    assert (
        isinstance(options["postgres_pool_max_size"].kind, Integer) and options["postgres_pool_max_size"].default == 10
    )
    assert isinstance(options["postgres_connect_timeout"].kind, Seconds)
    assert options["postgres_connect_timeout"].default == 5.0
    assert isinstance(options["postgres_command_timeout"].kind, Seconds)
    assert options["postgres_command_timeout"].default == 30.0
    assert isinstance(options["postgres_application_name"].kind, Identifier)
    assert options["postgres_application_name"].default == "pyncette"
    assert not any(option.secret for option in options.values())  # the URL's password is found by the Url kind


def test_defaults_are_filled_in() -> None:
    settings = backend.settings({"postgres_url": "postgresql://u@h/db"})
    assert dict(settings) == {
        "postgres_url": "postgresql://u@h/db",
        "postgres_table_name": "pyncette_tasks",
        "postgres_skip_table_create": False,
        "postgres_pool_min_size": 1,
        "postgres_pool_max_size": 10,
        "postgres_connect_timeout": 5.0,
        "postgres_command_timeout": 30.0,
        "postgres_application_name": "pyncette",
    }


def test_options_as_text_and_python_values() -> None:
    settings = backend.settings(
        {
            "postgres_url": "postgres://u@h/db",
            "postgres_skip_table_create": "yes",
            "postgres_pool_min_size": "0",
            "postgres_pool_max_size": "4",
            "postgres_connect_timeout": "1.5",
            "postgres_command_timeout": timedelta(minutes=1),
            "postgres_table_name": "A" * 63,
            "postgres_application_name": "my-app:worker.1",
        }
    )
    assert settings["postgres_skip_table_create"] is True
    assert (settings["postgres_pool_min_size"], settings["postgres_pool_max_size"]) == (0, 4)
    assert (settings["postgres_connect_timeout"], settings["postgres_command_timeout"]) == (1.5, 60.0)


def test_options_from_the_environment() -> None:
    found = backend.options.from_environment({"PYNCETTE_POSTGRES_POOL_MAX_SIZE": "3", "PYNCETTE_OTHER": "x"})
    assert found == {"postgres_pool_max_size": "3"}
    assert backend.settings({"postgres_url": "postgres://u@h/db", **found})["postgres_pool_max_size"] == 3


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@h1:5432,h2:5433/db",  # several hosts, as asyncpg accepts them
        "postgresql://u@h1,h2/db",
        "postgresql://u@[::1]:5432,[::2]/db",
        "postgresql://u@/db?host=/run/postgresql&port=5433",
        "postgresql://u@h1,h2/db?port=5432,5433",
    ],
)
def test_urls_asyncpg_understands_are_accepted(url: str) -> None:
    assert backend.settings({"postgres_url": url})["postgres_url"] == url


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "missing option postgres_url"),
        ({"postgres_url": "mysql://root@localhost/x"}, "invalid postgres_url 'mysql://root@localhost/x'"),
        ({"postgres_url": 42}, "invalid postgres_url 42"),
        ({"postgres_url": ""}, "invalid postgres_url ''"),
        ({"postgres_url": "postgresql://u@host:notaport/db"}, "invalid postgres_url"),
        ({"postgres_url": "postgresql://u@host:99999/db"}, "invalid postgres_url"),
        ({"postgres_url": "postgresql://u@h1:5432,h2:x/db"}, "invalid postgres_url"),
        ({"postgres_url": "postgresql://u@h/db?port=abc"}, "invalid postgres_url"),
        ({"postgres_table_name": "bad-name"}, "invalid postgres_table_name 'bad-name'"),
        ({"postgres_table_name": 'x"; DROP TABLE y; --'}, "DROP TABLE"),
        ({"postgres_table_name": "1starts_with_digit"}, "'1starts_with_digit'"),
        ({"postgres_table_name": "a" * 64}, "a" * 64),
        ({"postgres_table_name": ""}, "invalid postgres_table_name ''"),
        ({"postgres_table_name": "schema.table"}, "'schema.table'"),
        ({"postgres_skip_table_create": "maybe"}, "invalid postgres_skip_table_create 'maybe'"),
        ({"postgres_skip_table_create": 1}, "invalid postgres_skip_table_create 1"),
        ({"postgres_pool_min_size": -1}, "invalid postgres_pool_min_size -1"),
        ({"postgres_pool_max_size": 0}, "invalid postgres_pool_max_size 0"),
        ({"postgres_pool_max_size": "many"}, "'many'"),
        ({"postgres_pool_max_size": True}, "invalid postgres_pool_max_size True"),
        ({"postgres_pool_min_size": 5, "postgres_pool_max_size": 2}, "postgres_pool_min_size (5)"),
        ({"postgres_connect_timeout": 0}, "invalid postgres_connect_timeout 0"),
        ({"postgres_connect_timeout": "soon"}, "'soon'"),
        ({"postgres_connect_timeout": float("nan")}, "nan"),
        ({"postgres_command_timeout": -5}, "invalid postgres_command_timeout -5"),
        ({"postgres_application_name": "has space"}, "invalid postgres_application_name 'has space'"),
        ({"postgres_colour": "blue"}, "postgres_colour"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], expected: str) -> None:
    full = {"postgres_url": "postgres://u@localhost/db", **options} if options else {}
    with pytest.raises(ConfigurationError) as info:
        backend.settings(full)
    assert expected in str(info.value)


# --- secrets in bad URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET_1}@host:notaport/db",  # the reported case: asyncpg's raw ValueError
        f"postgresql://u@host:notaport/db?password={SECRET_2}",
        f"postgresql://u@host:notaport/db?sslpassword={SECRET_3}&password={SECRET_2}",
        f"mysql://u:{SECRET_1}@h/db?password={SECRET_2}",
        f"postgresql://u:{SECRET_1}@h1:5432,h2:nope/db?password={SECRET_2}",
        f"postgresql://u:{SECRET_1}@h/db?port=abc&password={SECRET_2}",
        f"postgresql://u:{SECRET_1}@host:123456/db",
    ],
)
def test_bad_url_errors_hide_every_secret(url: str, all_logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({"postgres_url": url})
    assert "postgres_url" in str(info.value)
    assert_no_secret(full_text(info.value))
    assert_logs_clean(all_logs)


def test_a_bad_other_option_does_not_show_the_url_either() -> None:
    with pytest.raises(ConfigurationError) as info:
        backend.settings({"postgres_url": f"postgresql://u@h/db?password={SECRET_2}", "postgres_pool_max_size": -3})
    assert_no_secret(full_text(info.value))


def test_settings_know_the_url_secrets() -> None:
    settings = backend.settings({"postgres_url": f"postgresql://u:{SECRET_1}@h/db?password={SECRET_2}"})
    assert SECRET_1 in settings.secrets and SECRET_2 in settings.secrets
    assert settings.redact(f"echo {SECRET_1} {SECRET_2}") == "echo *** ***"


# --- secrets when connecting -----------------------------------------------------------------------


async def open_and_close(url: str, **options: Any) -> None:
    async with backend.open(backend.settings({"postgres_url": url, "postgres_connect_timeout": 2, **options})):
        pass


async def test_unreachable_server_hides_secrets(all_logs: pytest.LogCaptureFixture) -> None:
    url = f"postgres://someone:{SECRET_1}@127.0.0.1:1/db?password={SECRET_2}&sslpassword={SECRET_3}"
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        await open_and_close(url)
    assert time.monotonic() - started < 5
    assert "127.0.0.1:1" in str(info.value)
    assert "postgres_connect_timeout" in str(info.value)
    assert_no_secret(full_text(info.value))
    with pytest.raises(BackendError) as info:
        await backend.purge(backend.settings({"postgres_url": url, "postgres_connect_timeout": 1}))
    assert_no_secret(full_text(info.value))
    assert_logs_clean(all_logs)


async def test_unknown_database_is_a_configuration_error_without_secrets(
    postgres_url: str, all_logs: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(postgres_url)
    # Trust authentication ignores the password, so the server gets as far as the database name.
    netloc = f"{parts.username}:{SECRET_1}@{parts.hostname}:{parts.port or 5432}"
    url = parts._replace(netloc=netloc, path="/no_such_database_here", query=f"password={SECRET_2}").geturl()
    with pytest.raises(ConfigurationError) as info:
        await open_and_close(url)
    assert "no_such_database_here" in str(info.value)
    assert "postgres_url" in str(info.value)
    assert_no_secret(full_text(info.value))
    assert_logs_clean(all_logs)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("sslmode=bogus", "sslmode"),  # refused by asyncpg before connecting
        ("no_such_setting_xyz=1", "no_such_setting_xyz"),  # passed on as a server setting, refused by the server
    ],
)
async def test_url_parameters_refused_when_connecting_are_configuration_errors(
    postgres_url: str, query: str, expected: str, all_logs: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(postgres_url)
    url = parts._replace(query=f"{query}&password={SECRET_2}").geturl()
    with pytest.raises(ConfigurationError) as info:
        await open_and_close(url)
    assert expected in str(info.value)
    assert "postgres_url" in str(info.value)
    assert_no_secret(full_text(info.value))
    assert_logs_clean(all_logs)


@pytest.fixture
async def echoing_server() -> AsyncIterator[int]:
    """A fake PostgreSQL server that asks for the password in clear text and refuses it, quoting it.

    Some proxies and poolers echo what they were sent; the backend must not pass that on.
    """
    handlers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(writer)
        try:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code == 80877103:  # SSLRequest: no TLS here; the startup message follows
                writer.write(b"N")
                length, code = struct.unpack("!ii", await reader.readexactly(8))
            await reader.readexactly(length - 8)
            writer.write(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            await writer.drain()
            _kind, length = struct.unpack("!ci", await reader.readexactly(5))
            password = (await reader.readexactly(length - 4)).rstrip(b"\0")
            fields = b"SFATAL\0VFATAL\0C28P01\0M" + b"password " + password + b" is wrong for user\0\0"
            writer.write(b"E" + struct.pack("!i", len(fields) + 4) + fields)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in handlers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("where", ["userinfo", "query"])
async def test_server_echoing_the_password_is_redacted(
    echoing_server: int, where: str, all_logs: pytest.LogCaptureFixture
) -> None:
    if where == "userinfo":
        url = f"postgresql://u:{SECRET_1}@127.0.0.1:{echoing_server}/db?sslmode=disable"
        secret = SECRET_1
    else:
        url = f"postgresql://u@127.0.0.1:{echoing_server}/db?sslmode=disable&password={SECRET_2}"
        secret = SECRET_2
    with pytest.raises(ConfigurationError) as info:
        await open_and_close(url)
    message = str(info.value)
    assert "password *** is wrong" in message  # the server's answer, masked
    assert secret not in full_text(info.value)
    assert_logs_clean(all_logs)


async def test_silent_server_times_out_within_the_connect_timeout_without_secrets() -> None:
    # A server that accepts TCP connections but never answers: only the timeout can end the wait.
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(BackendError) as info:
            async with backend.open(
                backend.settings(
                    {
                        "postgres_url": f"postgres://u:{SECRET_1}@127.0.0.1:{port}/db?password={SECRET_2}",
                        "postgres_connect_timeout": 1,
                    }
                )
            ):
                pass
        assert 0.9 < time.monotonic() - started < 4
        assert f"127.0.0.1:{port}" in str(info.value)
        assert_no_secret(full_text(info.value))
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_1x_factory_call_validates_and_hides_secrets() -> None:
    from pyncette_postgres import postgres_repository

    with pytest.raises(ConfigurationError) as info:
        postgres_repository(
            postgres_url=f"postgresql://u:{SECRET_1}@h:bad/db", postgres_table_name="t_" + uuid.uuid4().hex
        )
    assert_no_secret(full_text(info.value))
