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


@contextlib.contextmanager
def running(startup_timeout: float = 30.0) -> Iterator[str]:
    """Run this server in a subprocess on a free loopback port; yield its URL once it answers.

    Raises :class:`RuntimeError` naming the reason when it does not start.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        process = subprocess.Popen(
            [sys.executable, __file__, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise RuntimeError(f"cannot start the moto server: {exc}") from exc
    try:
        deadline = time.monotonic() + startup_timeout
        while not answers(url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"the moto server exited with status {process.returncode} (is moto[server] installed?)"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the moto server did not answer on {url} within {startup_timeout:.0f}s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
