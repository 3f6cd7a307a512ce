"""Run moto's server (same arguments as ``python -m moto.server``), handling one request at a time.

moto serves requests on parallel threads without holding a lock between a
write's condition check and the write itself, so two concurrent conditional
UpdateItem calls on one item can both succeed (observed: two claims of one
record, both HTTP 200, no retries). Real DynamoDB applies each conditional
write atomically; serializing requests restores that guarantee, which the
repository's correctness (and the conformance suite) depends on.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_lock = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__


def _one_at_a_time(self: DomainDispatcherApplication, environ: Any, start_response: Any) -> Any:
    with _lock:
        return _dispatch(self, environ, start_response)


DomainDispatcherApplication.__call__ = _one_at_a_time  # type: ignore[method-assign]

if __name__ == "__main__":
    server.main(sys.argv[1:])
