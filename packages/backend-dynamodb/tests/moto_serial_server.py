"""Run moto's server (same arguments as ``python -m moto.server``), handling one request at a time.

moto serves requests on parallel threads without holding a lock between a
write's condition check and the write itself, so two concurrent conditional
UpdateItem calls on one item can both succeed (observed: two claims of one
record, both HTTP 200, no retries). Real DynamoDB applies each conditional
write atomically; serializing requests restores that guarantee, which the
repository's correctness (and the conformance suite) depends on.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


def answers(url: str) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoProcess:
    """This server as a child process on one loopback port, which it keeps across restarts."""

    def __init__(self, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers; :class:`RuntimeError` naming the reason if it does not."""
        try:
            self.process = subprocess.Popen(
                [sys.executable, __file__, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise RuntimeError(f"cannot start the moto server: {exc}") from exc
        deadline = time.monotonic() + self.startup_timeout
        while not answers(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the moto server exited with status {self.process.returncode} (is moto[server] installed?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the moto server did not answer on {self.url} within {self.startup_timeout:.0f}s")
            time.sleep(0.1)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the server process (``SIGSTOP``/``SIGCONT`` to hang and resume it)."""
        assert self.process is not None and self.process.poll() is None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """``SIGKILL`` the server and reap it; everything it stored is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Terminate the server (killing it if it does not exit)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@contextlib.contextmanager
def running(startup_timeout: float = 30.0) -> Iterator[str]:
    """Run this server in a subprocess on a free loopback port; yield its URL once it answers.

    Raises :class:`RuntimeError` naming the reason when it does not start.
    """
    server = MotoProcess(startup_timeout=startup_timeout)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _serve_one_request_at_a_time(argv: list[str]) -> None:
    from moto import server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    lock = threading.Lock()
    dispatch = DomainDispatcherApplication.__call__

    def one_at_a_time(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
        with lock:
            return dispatch(self, environ, start_response)

    DomainDispatcherApplication.__call__ = one_at_a_time  # type: ignore[method-assign]
    server.main(argv)


if __name__ == "__main__":
    _serve_one_request_at_a_time(sys.argv[1:])
