"""Bad input and bad configuration: the same early error on every backend, and never a secret in a message.

Instance names, schedules and task options are validated by the core before anything reaches storage,
so the same input gives the same :class:`~pyncette.errors.ConfigurationError` whatever the backend;
these tests prove it per backend (and that nothing was written). Connection settings are validated
by each backend's option schema; a bad connection must fail with a
:class:`~pyncette.errors.ConfigurationError` or :class:`~pyncette.errors.BackendError` whose text,
traceback and log lines carry none of the secrets it was given.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import anyio
import pytest

from pyncette import Context, Pyncette
from pyncette.errors import BackendError, ConfigurationError
from pyncette.options import Url

from .base import ConformanceBase
from .behaviour import START, AppFactory
from .harness import BackendUnderTest

#: Secrets planted in each place a connection setting can carry one.
SECRETS = {
    "userinfo": "Sx-userinfo-91f3a7",
    "query-password": "Sx-query-44a1c9",
    "query-token": "Sx-token-7c2e55",
    "option": "Sx-option-d05b12",
}

#: (id, schedule_task keyword arguments, instance name, pattern of the expected message)
BAD_INPUT: list[tuple[str, dict[str, Any], str, str]] = [
    ("empty-name", {"interval": timedelta(seconds=5)}, "", r"invalid instance name ''"),
    ("nul-in-name", {"interval": timedelta(seconds=5)}, "a\x00b", r"invalid instance name 'a\\x00b'"),
    ("surrogate-in-name", {"interval": timedelta(seconds=5)}, "a\ud800b", r"invalid instance name 'a\\ud800b'"),
    ("name-too-long", {"interval": timedelta(seconds=5)}, "x" * 201, r"invalid instance name 'x{201}'"),
    (
        "execute-at-after-9999",
        {"execute_at": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))},
        "late",
        r"invalid execute_at .*: .*after 9999-12-31",
    ),
    ("huge-interval", {"interval": timedelta(days=3_000_000)}, "huge", r"invalid interval .*after 9999-12-31"),
    ("reserved-name-argument", {"interval": timedelta(seconds=5), "name": "other"}, "r1", r"'name' is reserved"),
    ("reserved-func-argument", {"interval": timedelta(seconds=5), "func": print}, "r2", r"'func' is reserved"),
    ("no-schedule", {}, "none", r"exactly one of schedule=, interval= or execute_at= is required"),
    ("bad-cron", {"schedule": "61 * * * *"}, "cron", r"invalid cron expression '61 \* \* \* \*'"),
    ("not-json", {"interval": timedelta(seconds=5), "payload": object()}, "nj", r"must be JSON-serializable"),
]


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, not listening, for the duration: connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _with_secrets(url: str, port: int) -> str:
    """``url`` pointed at 127.0.0.1:``port``, with a password and secret query parameters planted in it."""
    parts = urlsplit(url)
    query = urlencode({"password": SECRETS["query-password"], "token": SECRETS["query-token"]})
    netloc = f"pyncette:{SECRETS['userinfo']}@127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(q for q in (parts.query, query) if q), ""))


class ValidationSuite(ConformanceBase):
    """The same errors for the same bad input everywhere; secrets never echoed."""

    @pytest.mark.parametrize(("case", "options", "instance", "message"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
    async def test_bad_instance_input_is_refused_alike(
        self, apps: AppFactory, case: str, options: dict[str, Any], instance: str, message: str
    ) -> None:
        app = apps.app()
        ran: list[str] = []

        @app.dynamic_task()
        async def job(context: Context) -> None:
            ran.append(context.task.name)

        async with apps.run(app) as ctx:
            with pytest.raises(ConfigurationError, match=message):
                await ctx.schedule_task(job, instance, **options)
            with pytest.raises(ConfigurationError, match=message):
                await ctx.schedule_tasks(job, {"fine": {"execute_at": START}, instance: options})
            assert (await ctx.list_tasks(job)).tasks == []  # nothing was written, not even the good one
            await ctx.schedule_task(job, "fine", execute_at=START)
            await apps.clock.advance(timedelta(seconds=1))
        assert ran == ["fine"]

    async def test_isolating_options_refuse_unsafe_names(self, pyncette_backend: BackendUnderTest) -> None:
        isolating = [name for name, option in pyncette_backend.backend.options.items() if option.isolates]
        if not isolating:
            pytest.skip("backend declares no isolating option")
        for key in isolating:
            app = Pyncette(
                repository_factory=pyncette_backend.backend,
                **{**pyncette_backend.isolated_options(), key: "bad name; DROP TABLE x"},
            )
            with pytest.raises(ConfigurationError, match=f"invalid {key} 'bad name; DROP TABLE x': expected"):
                async with app.create():
                    pass

    async def test_unknown_option_is_refused(self, pyncette_backend: BackendUnderTest) -> None:
        name = pyncette_backend.backend.name
        bogus: dict[str, Any] = {f"{name}_no_such_option": 1}
        with pytest.raises(ConfigurationError, match=rf"unknown {name} option\(s\) {name}_no_such_option; allowed: "):
            Pyncette(repository_factory=pyncette_backend.backend, **bogus).resolve_backend()

    async def test_secrets_never_appear_in_connection_errors(
        self, pyncette_backend: BackendUnderTest, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Secrets go into every place the schema allows: a URL's password and query string, and every option
        declared secret. The connection must fail (nothing listens), and no secret may show."""
        backend = pyncette_backend.backend
        options = pyncette_backend.isolated_options()
        planted: list[str] = []
        with closed_port() as port:
            for name, option in backend.options.items():
                if isinstance(option.kind, Url):
                    options[name] = _with_secrets(str(options.get(name) or option.default or "x://h"), port)
                    planted += [SECRETS["userinfo"], SECRETS["query-password"], SECRETS["query-token"]]
                elif option.secret:
                    options[name] = SECRETS["option"]
                    planted.append(SECRETS["option"])
                elif name == f"{backend.name}_host":
                    options[name] = "127.0.0.1"
                elif name == f"{backend.name}_port":
                    options[name] = port
            if not planted:
                pytest.skip("backend declares no URL and no secret option")
            caplog.set_level(logging.DEBUG)
            failure: BaseException | None = None
            try:
                with anyio.fail_after(60):
                    async with Pyncette(repository_factory=backend, **options).create():
                        pass
            except (ConfigurationError, BackendError) as exc:
                failure = exc
        assert failure is not None, "opening storage on a closed port succeeded"
        shown = "".join(traceback.format_exception(failure)) + repr(failure) + caplog.text
        leaked = sorted({secret for secret in planted if secret in shown})
        assert not leaked, f"secret(s) {leaked} shown in: {shown[-3000:]}"
