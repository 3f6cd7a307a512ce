"""Private MariaDB servers: one killed with SIGKILL and restarted while an app works through its tasks,
one serving TLS with a self-signed certificate.

Each test starts a throwaway server (:class:`~pyncette_conformance.servers.MariaDBServer`: its own data
directory, a free loopback port) and never touches the shared server. Without the MariaDB server binaries
they are skipped locally (and fail under ``CI=true``).
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NoReturn

import aiomysql
import anyio
import pytest

from pyncette import Context, Pyncette, PyncetteContext, Task
from pyncette.abc import RegisterMode
from pyncette.errors import BackendError, ConfigurationError
from pyncette_conformance.servers import MariaDBServer, ServerUnavailable
from pyncette_mysql import MySQLRepository, backend

pytestmark = [pytest.mark.anyio, pytest.mark.realtime]

USER = "pyncette"
#: Not ASCII on purpose: the login only works when the password is sent as UTF-8.
PASSWORD = "S3cr3t-pw-ünïcødé-€"
LEASE = timedelta(seconds=10)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def private_server(server_args: list[str]) -> AsyncIterator[MariaDBServer]:
    """A private server (see :class:`~pyncette_conformance.servers.MariaDBServer`) with database ``test``
    and the user ``pyncette``; deleted after the test."""
    try:
        instance = MariaDBServer(extra=server_args)
    except ServerUnavailable as exc:
        _unavailable(f"no private MariaDB server possible: {exc}")
    try:
        try:
            await anyio.to_thread.run_sync(instance.start)
        except RuntimeError as exc:
            _unavailable(f"cannot start a private mariadbd: {exc}")
        conn = await aiomysql.connect(host="127.0.0.1", port=instance.port, user="root", autocommit=True)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (USER, PASSWORD))
                await cursor.execute(f"GRANT ALL ON test.* TO {USER}@'%'")
        finally:
            conn.close()
        yield instance
    finally:
        await anyio.to_thread.run_sync(instance.cleanup)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await anyio.sleep(0.01)


async def stored(ctx: PyncetteContext, template: Task) -> int:
    count, token = 0, None
    while True:
        page = await ctx.list_tasks(template, limit=1000, continuation_token=token)
        count += len(page.tasks)
        token = page.continuation_token
        if token is None:
            return count


async def test_app_survives_a_killed_and_restarted_server(
    private_server: MariaDBServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    total = 1500
    ran: Counter[str] = Counter()
    ticks: list[datetime] = []
    app = Pyncette(
        repository_factory=backend,
        poll_interval=timedelta(seconds=0.2),
        mysql_host="127.0.0.1",
        mysql_port=private_server.port,
        mysql_user=USER,
        mysql_password=PASSWORD,
        mysql_database="test",
        mysql_connect_timeout=2,
        mysql_command_timeout=5,
    )

    @app.dynamic_task(lease_duration=LEASE)
    async def job(context: Context) -> None:
        await anyio.sleep(0.002)
        ran[context.task.name] += 1

    @app.task(interval=timedelta(seconds=0.5), lease_duration=LEASE)
    async def ticker(context: Context) -> None:
        ticks.append(context.scheduled_at)

    names = [f"i{n}" for n in range(total)]
    async with app.create() as ctx:
        due = datetime.now(timezone.utc) - timedelta(seconds=1)
        await ctx.schedule_tasks(job, {name: {"execute_at": due} for name in names})
        async with anyio.create_task_group() as tg:
            await tg.start(ctx.run)
            await wait_for(lambda: sum(ran.values()) >= total // 10, 20, "the first runs")
            private_server.kill()
            killed_at, done_at_kill = time.monotonic(), sum(ran.values())
            with pytest.raises(BackendError):
                await ctx.list_tasks(job, limit=1)  # the server is really gone
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(private_server.start)
            restarted_at, ticks_before = time.monotonic(), len(ticks)
            await wait_for(lambda: len(ran) == total, 30, "every instance to run")
            deadline = time.monotonic() + LEASE.total_seconds() * 2
            while (left := await stored(ctx, job)) and time.monotonic() < deadline:
                await anyio.sleep(0.2)
            await wait_for(lambda: len(ticks) > ticks_before, 10, "the static task to run after the restart")
            await anyio.sleep(0.5)  # room for a doubled run to show up
            ctx.shutdown()

    assert 0 < done_at_kill < total, "the kill did not happen mid-run"
    assert left == 0, f"{left} instance(s) still stored after all ran"
    doubled = {name: n for name, n in ran.items() if n != 1}
    assert not doubled, f"{len(doubled)} instance(s) ran more than once: {list(doubled.items())[:10]}"
    assert set(ran) == set(names)
    assert len(ticks) == len(set(ticks)), "the static task ran twice for one schedule"
    records = [r for r in caplog.records if r.name.startswith("pyncette")]
    failures = [r.getMessage() for r in records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert failures, "the outage went unnoticed"
    assert all("retrying" in message for message in failures), failures
    assert len(failures) < 40, f"{len(failures)} warnings for one outage"
    assert not [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert not [r.getMessage() for r in records if r.exc_info], "tracebacks were logged"
    assert PASSWORD not in caplog.text
    assert restarted_at - killed_at < 15


# --- TLS -------------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, in PEM files."""
    crypto = pytest.importorskip("cryptography", reason="needs the cryptography package to make a certificate")
    del crypto
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyncette test server")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    return _self_signed(tmp_path)[0]


@pytest.fixture
def server_args(request: pytest.FixtureRequest) -> list[str]:
    """Extra ``mariadbd`` arguments: TLS with a self-signed certificate for tests that ask for ``certificate``."""
    if "certificate" not in request.fixturenames:
        return []
    cert_file: Path = request.getfixturevalue("certificate")
    return [f"--ssl-cert={cert_file}", f"--ssl-key={cert_file.with_name('key.pem')}"]


async def test_tls(private_server: MariaDBServer, certificate: Path) -> None:
    """TLS is used when asked for; a certificate the client does not trust is a ConfigurationError."""
    options = {
        "mysql_host": "127.0.0.1",
        "mysql_port": private_server.port,
        "mysql_user": USER,
        "mysql_password": PASSWORD,
        "mysql_database": "test",
    }
    with pytest.raises(
        ConfigurationError, match="certificate failed verification: self-signed certificate; check mysql_ssl"
    ) as info:
        async with backend.open(backend.settings({**options, "mysql_ssl": "true"})):
            pass
    assert PASSWORD not in str(info.value)
    trusted = ssl.create_default_context(cafile=str(certificate))
    async with backend.open(backend.settings({**options, "mysql_ssl": trusted})) as repository:
        assert isinstance(repository, MySQLRepository)
        assert await repository.register([], now=datetime.now(timezone.utc), mode=RegisterMode.CREATE) == []
        async with repository._pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            ((_, cipher),) = await cursor.fetchall()
        assert cipher  # the pool's connections are encrypted too
