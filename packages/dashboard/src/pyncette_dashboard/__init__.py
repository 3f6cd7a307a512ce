"""Pyncette's web dashboard: see and manage the tasks of a Pyncette app in a browser.

``dashboard(app)`` is an ASGI application (Starlette): mount it into an existing one
(``host.mount("/pyncette", dashboard(app))``) or serve it with ``pyncette dashboard MODULE:APP``. It is
read-only unless built with ``actions=True`` and a token or an ``auth`` hook.
"""

from __future__ import annotations

from ._app import Dashboard, dashboard
from ._security import CSRF_HEADER, TOKEN_HEADER, AuthHook
from ._serve import DEFAULT_HOST, DEFAULT_PORT, bind, parse_bind, run, serve_alongside
from ._words import cron_words, duration_words

#: The environment variable ``pyncette dashboard`` and ``pyncette run --dashboard`` read the token from.
TOKEN_ENV = "PYNCETTE_DASHBOARD_TOKEN"  # noqa: S105 - a variable name

__all__ = [
    "CSRF_HEADER",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "TOKEN_ENV",
    "TOKEN_HEADER",
    "AuthHook",
    "Dashboard",
    "bind",
    "cron_words",
    "dashboard",
    "duration_words",
    "parse_bind",
    "run",
    "serve_alongside",
]
