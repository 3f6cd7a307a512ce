"""Who may act, and proof that a request came from the dashboard's own page.

Reading is open to whoever reaches the dashboard (it binds to loopback when served alone); when an ``auth``
hook is configured, every API request needs it to name a user. Actions (pause, resume, run now, unschedule)
are off unless enabled, and then each one needs:

* a token (header :data:`TOKEN_HEADER`, compared in constant time) or, with an ``auth`` hook, a user the hook
  names plus the header :data:`CSRF_HEADER`. A custom header cannot be sent cross-site without a CORS
  preflight, which the dashboard never answers;
* no ``Origin`` other than the dashboard's own (or one listed in ``allowed_origins``), and no
  ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``;
* a JSON body (``Content-Type: application/json``).
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request

from pyncette.errors import ConfigurationError
from pyncette.redaction import register_secret

#: The header carrying the action token.
TOKEN_HEADER = "X-Pyncette-Token"  # noqa: S105 - a header name
#: The header the page sends with every action when an ``auth`` hook decides who the user is.
CSRF_HEADER = "X-Pyncette-Dashboard"
#: The shortest token accepted.
MIN_TOKEN = 16

#: ``auth(request) -> user or None`` (may be async): who makes the request, ``None`` when nobody known.
AuthHook = Callable[[Request], str | Awaitable[str | None] | None]


class Refused(Exception):
    """A request the security rules refuse: 401 (who are you), 403 (not allowed) or 415 (not JSON)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Guard:
    """Applies the rules above to one dashboard's requests."""

    def __init__(
        self,
        *,
        actions: bool,
        token: str | None,
        auth: AuthHook | None,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        if token is not None:
            if not isinstance(token, str) or len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
                raise ConfigurationError(
                    f"invalid dashboard token: must be at least {MIN_TOKEN} printable characters without spaces"
                )
            register_secret(token)  # never in a log line or a message
        if auth is not None and not callable(auth):
            raise ConfigurationError(f"invalid auth {auth!r}: must be a callable taking the request")
        if actions and token is None and auth is None:
            raise ConfigurationError(
                "dashboard actions need a token (e.g. $PYNCETTE_DASHBOARD_TOKEN) or an auth hook; "
                "without either the dashboard is read-only"
            )
        self.actions = actions
        self._token = token
        self._auth = auth
        self._origins = {origin.rstrip("/").lower() for origin in allowed_origins}

    @property
    def mode(self) -> str | None:
        """How actions are authorized: ``"token"``, ``"hook"`` or ``None`` (read-only)."""
        if not self.actions:
            return None
        return "token" if self._token is not None else "hook"

    async def user(self, request: Request) -> str | None:
        """Who the ``auth`` hook says makes the request (``None`` without a hook or when it names nobody)."""
        if self._auth is None:
            return None
        found: object = self._auth(request)
        if inspect.isawaitable(found):
            found = await found
        return None if found is None else str(found)

    async def check_read(self, request: Request) -> str | None:
        """Refuse a read the ``auth`` hook does not allow; returns the user."""
        user = await self.user(request)
        if self._auth is not None and user is None:
            raise Refused(401, "unauthenticated", "not signed in: the host application's auth hook named no user")
        return user

    async def check_action(self, request: Request) -> str:
        """Refuse an action that breaks a rule; returns who acts, for the log and the pause's ``by``."""
        if not self.actions:
            raise Refused(403, "read_only", "this dashboard is read-only (actions are not enabled)")
        self._check_site(request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Refused(415, "not_json", f"invalid Content-Type {content_type!r}: actions take application/json")
        client = request.client.host if request.client else "unknown"
        user = await self.user(request)
        if self._token is not None:
            given = request.headers.get(TOKEN_HEADER)
            if not given:
                raise Refused(401, "token_missing", f"actions need the dashboard token in the {TOKEN_HEADER} header")
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                raise Refused(403, "token_wrong", f"the {TOKEN_HEADER} header does not carry the dashboard token")
            return f"{user or 'token holder'} ({client})"
        if request.headers.get(CSRF_HEADER) is None:
            raise Refused(403, "csrf", f"actions need the {CSRF_HEADER} header (sent by the dashboard page)")
        if user is None:
            raise Refused(401, "unauthenticated", "not signed in: the host application's auth hook named no user")
        return f"{user} ({client})"

    def _check_site(self, request: Request) -> None:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site.lower() not in ("same-origin", "none"):
            raise Refused(403, "cross_site", f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = request.headers.get("origin")
        if origin is None:
            return
        origin = origin.rstrip("/").lower()
        # Host and port must match the request's own; the scheme may differ behind a TLS-terminating proxy.
        host = request.headers.get("host", "").lower()
        if origin.partition("://")[2] != host and origin not in self._origins:
            raise Refused(403, "cross_origin", f"cross-origin request refused (Origin: {origin[:80]})")


__all__ = ["CSRF_HEADER", "TOKEN_HEADER", "AuthHook", "Guard", "Refused"]
