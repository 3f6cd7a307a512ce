"""Private throwaway servers for fault injection: Redis, PostgreSQL, MariaDB and moto (DynamoDB).

Each :class:`PrivateServer` runs one server process of its own on a free ``127.0.0.1`` port, with its
data in a directory of its own (a fresh temporary one unless given), so that a test or the chaos matrix
may kill it without disturbing anyone else's server:

* :meth:`~PrivateServer.start` starts it (initialising the data directory the first time) and waits
  until it answers; a restart uses the same port and the same data;
* :meth:`~PrivateServer.kill` is a crash: ``SIGKILL``, no shutdown;
* :meth:`~PrivateServer.stop` is a graceful shutdown; :meth:`~PrivateServer.cleanup` stops it and deletes
  the temporary directory. A ``with`` block starts and cleans up; so does interpreter exit, for any
  server still running then.

The programs come from the host: ``redis-server``, PostgreSQL's ``initdb``/``postgres``/``pg_isready``
(under ``/usr/lib/postgresql/*/bin`` or on ``PATH``; as root they run as the ``postgres`` OS user through
``setpriv``), ``mariadb-install-db``/``mariadbd``, and moto's server for DynamoDB. When one is missing,
:class:`ServerUnavailable` says which.

``python -m pyncette_conformance.servers moto [moto.server arguments]`` runs moto's server handling one
request at a time (what :class:`MotoServer` starts); see :func:`serve_moto_one_request_at_a_time`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

#: How long a start waits for the server to answer, by default.
STARTUP_TIMEOUT = 30.0
#: How long a graceful stop waits before killing.
STOP_TIMEOUT = 15.0

_live: set[PrivateServer] = set()

S = TypeVar("S", bound="PrivateServer")


class ServerUnavailable(RuntimeError):
    """The programs a private server needs are missing (tests skip on it, or fail under ``CI=true``)."""


def free_port(*, companion_offset: int = 0) -> int:
    """A loopback port nobody listens on right now (and, with ``companion_offset``, that port plus it too)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if not companion_offset:
            return port
        if port + companion_offset > 65535:
            continue
        with socket.socket() as companion:
            try:
                companion.bind(("127.0.0.1", port + companion_offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _program(*candidates: str) -> str | None:
    """The first candidate found on ``PATH`` (or given as an executable absolute path)."""
    for candidate in candidates:
        if os.path.isabs(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
        elif found := shutil.which(candidate):
            return found
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie holds nothing; whoever inherited it reaps it


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (read from /proc; empty where there is none)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name is in parentheses and may contain spaces: split after the last ')'.
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(Path(stat).parent.name))
    return found


class PrivateServer(ABC):
    """One server process of our own on a loopback port, with its data in a directory of its own.

    Args:
        directory: where the data and the log live; a fresh temporary directory (deleted by
            :meth:`cleanup`) when not given.
        port: the port; a free one when not given (and another free one should the first start lose
            it to someone else).
        startup_timeout: how long :meth:`start` waits for the server to answer.
    """

    #: A short name for messages and temporary directories.
    kind: ClassVar[str]

    def __init__(
        self, directory: Path | None = None, *, port: int | None = None, startup_timeout: float = STARTUP_TIMEOUT
    ) -> None:
        self._owns_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix=f"pyncette-{self.kind}-")) if directory is None else directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fixed_port = port is not None
        self.port = port if port is not None else self._pick_port()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._started_once = False

    # -- what each kind provides ----------------------------------------------------------------------

    def _pick_port(self) -> int:
        return free_port()

    def prepare(self) -> None:  # noqa: B027 - most kinds have nothing to prepare
        """Initialise the data directory; called once, before the first start."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def ready(self) -> bool:
        """Whether the server answers requests now."""

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def log(self) -> Path:
        """The file the server's output goes to."""
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        """Start the server (the same port and data as before, on a restart) and wait until it answers.

        Raises :class:`ServerUnavailable` when its programs are missing and :class:`RuntimeError` (with the
        end of its log) when it does not come up within ``startup_timeout``.
        """
        if self.running:
            raise RuntimeError(f"the private {self.kind} server on port {self.port} is already running")
        if not self._prepared:
            self.prepare()
            self._prepared = True
        for _attempt in range(3):
            if self._launch():
                self._started_once = True
                return
            if self._started_once or self._fixed_port:
                break
            self.port = self._pick_port()  # someone took the port between picking and binding it
        raise RuntimeError(
            f"the private {self.kind} server did not come up on port {self.port}; its log ends with:\n{self.log_tail()}"
        )

    def _launch(self) -> bool:
        _live.add(self)
        with self.log.open("ab") as log:
            # A session of its own: a Ctrl-C meant for the parent reaches the server only through cleanup.
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout
        while self.process.poll() is None:
            if self.ready():
                return True
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.kill()
        return False

    def kill(self) -> None:
        """``SIGKILL``, as a crash: no shutdown, no flushing beyond what the server had already done."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        children = _children(process.pid)
        process.kill()
        process.wait(STOP_TIMEOUT)
        self._reap(children)

    def _reap(self, children: Sequence[int]) -> None:
        """Wait until the server's own child processes are gone too (killing them after a while)."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in children:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        """Kill the server if it runs, then start it again on the same port with the same data."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Shut the server down gracefully (killing it if that takes longer than a few seconds)."""
        process = self.process
        if process is None or process.poll() is not None:
            self.process = None
            return
        children = _children(process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a stopped (hung on purpose) server cannot shut down
            process.send_signal(self._stop_signal())
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        self.process = None
        self._reap(children)

    def cleanup(self) -> None:
        """Stop the server and delete its temporary directory."""
        try:
            self.stop()
        finally:
            _live.discard(self)
            if self._owns_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<private {self.kind} server on 127.0.0.1:{self.port}, {state}>"


@atexit.register
def _cleanup_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.cleanup()


# --- Redis ---------------------------------------------------------------------------------------------


class RedisServer(PrivateServer):
    """``redis-server`` with the append-only file on (unless ``appendonly=False``), so that everything it
    acknowledged survives a kill and a restart. ``extra`` arguments are appended (e.g. cluster mode)."""

    kind = "redis"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        appendonly: bool = True,
        extra: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        binary = _program("redis-server")
        if binary is None:
            raise ServerUnavailable("redis-server not found on PATH (needed for a private Redis server)")
        self.binary = binary
        self.appendonly = appendonly
        self.extra = list(extra)
        super().__init__(directory, port=port, startup_timeout=startup_timeout)

    def _pick_port(self) -> int:
        return free_port(companion_offset=10000)  # a cluster node also listens on port + 10000

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *self.extra,
        ]

    def ready(self) -> bool:
        # PING answers "-LOADING" while the append-only file is replayed: only +PONG means ready.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False


# --- PostgreSQL ----------------------------------------------------------------------------------------


def _postgres_bindir() -> Path:
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if versions:
        return Path(versions[-1]).parent
    on_path = _program("initdb")
    if on_path is not None:
        return Path(on_path).parent
    raise ServerUnavailable("no PostgreSQL server programs (initdb, postgres) in /usr/lib/postgresql/*/bin or on PATH")


def _as_postgres_user() -> tuple[list[str], pwd.struct_passwd | None]:
    """How to run the server programs: directly, or (as root, which they refuse) as ``postgres`` via setpriv."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable("running as root and there is no 'postgres' OS user to run PostgreSQL as") from None
    setpriv = _program("setpriv")
    if setpriv is None:
        # setpriv execs the server itself, so the process we kill is the postmaster (runuser would stay between).
        raise ServerUnavailable("running as root and setpriv is missing: cannot run PostgreSQL as 'postgres'")
    return [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"], user


class PostgresServer(PrivateServer):
    """A PostgreSQL cluster of its own (``initdb``, trust authentication, user ``postgres``).

    ``fsync`` is off: a killed *server* loses nothing it acknowledged (its writes are in the OS's page
    cache), only an operating system crash would. ``settings`` override server parameters. The
    directory must be reachable by the ``postgres`` user when running as root: leave it to the default.
    """

    kind = "postgres"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        settings: dict[str, str] | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.bindir = _postgres_bindir()
        self.run_as, self._user = _as_postgres_user()
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "100",
            **(settings or {}),
        }
        super().__init__(directory, port=port, startup_timeout=startup_timeout)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def prepare(self) -> None:
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
        done = subprocess.run(
            [*self.run_as, *initdb, "-E", "UTF8", "--locale=C", "--no-sync"],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")

    def command(self) -> list[str]:
        command = [*self.run_as, str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def ready(self) -> bool:
        probe = [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        return subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0

    def _stop_signal(self) -> int:
        return signal.SIGINT  # "fast" shutdown: no waiting for clients to disconnect


# --- MariaDB -------------------------------------------------------------------------------------------


class MariaDBServer(PrivateServer):
    """A ``mariadbd`` of its own (``mariadb-install-db``; ``root`` without a password on 127.0.0.1).

    ``databases`` are created at every start if missing (through ``--init-file``); ``extra`` arguments
    are appended (e.g. TLS certificates).
    """

    kind = "mariadb"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        databases: Sequence[str] = ("test",),
        extra: Sequence[str] = (),
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        install = _program("mariadb-install-db", "mysql_install_db")
        server = _program("mariadbd", "/usr/sbin/mariadbd", "/usr/libexec/mariadbd", "mysqld", "/usr/sbin/mysqld")
        if install is None or server is None:
            raise ServerUnavailable("mariadb-install-db or mariadbd not found (needed for a private MariaDB server)")
        self.install, self.server = install, server
        self.databases = list(databases)
        self.extra = list(extra)
        # mariadbd refuses to run as root unless told to.
        self._as_root = ["--user=root"] if os.geteuid() == 0 else []
        super().__init__(directory, port=port, startup_timeout=startup_timeout)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def prepare(self) -> None:
        done = subprocess.run(
            [
                self.install,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._as_root,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
        statements = [f"CREATE DATABASE IF NOT EXISTS `{name}`;" for name in self.databases]
        (self.directory / "init.sql").write_text("\n".join(statements) + "\n")

    def command(self) -> list[str]:
        return [
            self.server,
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.directory / 'mysqld.sock'}",
            f"--pid-file={self.directory / 'mysqld.pid'}",
            f"--log-error={self.log}",
            f"--init-file={self.directory / 'init.sql'}",
            "--innodb-buffer-pool-size=16M",
            "--max-connections=100",
            *self._as_root,
            *self.extra,
        ]

    def ready(self) -> bool:
        # The server greets every new connection first: protocol version 10 means it accepts logins
        # (an error packet, 0xff, does not).
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                greeting = connection.recv(5)
        except OSError:
            return False
        return len(greeting) == 5 and greeting[4] == 10


# --- moto (DynamoDB) -----------------------------------------------------------------------------------


class MotoServer(PrivateServer):
    """moto's server (DynamoDB and the rest of AWS, in memory), handling one request at a time.

    It keeps nothing across a restart: after :meth:`kill` and :meth:`start` every table is gone.
    """

    kind = "moto"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pyncette_conformance.servers", "moto", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        return answers(self.url)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server (``SIGSTOP``/``SIGCONT`` to hang and resume it)."""
        assert self.process is not None and self.process.poll() is None, "the moto server is not running"
        self.process.send_signal(signum)


def serve_moto_one_request_at_a_time(argv: list[str]) -> None:
    """Run moto's server (arguments as for ``python -m moto.server``), handling one request at a time.

    moto serves requests on parallel threads without holding a lock between a write's condition check
    and the write itself, so two concurrent conditional UpdateItem calls on one item can both succeed
    (observed: two claims of one record, both HTTP 200). Real DynamoDB applies each conditional write
    atomically; serializing requests restores that guarantee, which the DynamoDB backend relies on.
    """
    from moto import server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    lock = threading.Lock()
    dispatch = DomainDispatcherApplication.__call__

    def one_at_a_time(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
        with lock:
            return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = one_at_a_time  # type: ignore[method-assign]
    server.main(argv)


__all__ = [
    "MariaDBServer",
    "MotoServer",
    "PostgresServer",
    "PrivateServer",
    "RedisServer",
    "ServerUnavailable",
    "answers",
    "free_port",
    "serve_moto_one_request_at_a_time",
]


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "moto":
        sys.exit("usage: python -m pyncette_conformance.servers moto [moto.server arguments]")
    serve_moto_one_request_at_a_time(sys.argv[2:])
