"""The dashboard as a Starlette (ASGI) application: the page, its static files and the JSON API."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pyncette import Pyncette, PyncetteContext
from pyncette.errors import BackendError, ConfigurationError, RecordDecodeError
from pyncette.redaction import get_logger, redact
from pyncette.task import DynamicTask, StaticTask

from . import _data as data
from ._data import BadValue, NotFound
from ._security import CSRF_HEADER, TOKEN_HEADER, AuthHook, Guard, Refused

logger = get_logger("pyncette.dashboard")

#: Longest pause note (the control plane's own limit).
MAX_NOTE = 500
#: Most instances per page a request may ask for.
MAX_PAGE = 500
#: Most next fire times a request may ask for.
MAX_NEXT = 100

_STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'",
}

Handler = Callable[[Request], Awaitable[Any]]


class Dashboard:
    """The dashboard of one Pyncette app, an ASGI application (mount it, or serve it with uvicorn).

    Build it with :func:`dashboard`. Served on its own, its lifespan opens the app's storage; mounted into
    another ASGI app (whose lifespan does not reach mounted apps), it opens the storage on the first request,
    unless it was given a running :class:`~pyncette.PyncetteContext` or the host enters :meth:`lifespan`.
    """

    def __init__(
        self,
        source: Pyncette | PyncetteContext,
        *,
        actions: bool = False,
        token: str | None = None,
        auth: AuthHook | None = None,
        allowed_origins: Iterable[str] = (),
        refresh_seconds: float = 5.0,
        page_size: int = 50,
        scan_limit: int = 2000,
        overview_scan: int = 500,
        title: str | None = None,
    ) -> None:
        if not isinstance(source, (Pyncette, PyncetteContext)):
            raise ConfigurationError(f"invalid dashboard source {source!r}: pass a Pyncette app or its context")
        data.check_config(page_size=page_size, scan_limit=scan_limit, overview_scan=overview_scan)
        if not isinstance(refresh_seconds, (int, float)) or refresh_seconds < 0:
            raise ConfigurationError(f"invalid refresh_seconds {refresh_seconds!r}: must be >= 0 (0: off)")
        self.guard = Guard(actions=actions, token=token, auth=auth, allowed_origins=allowed_origins)
        self.refresh_seconds = float(refresh_seconds)
        self.page_size = min(page_size, MAX_PAGE)
        self.scan_limit = scan_limit
        self.overview_scan = overview_scan
        self.title = title
        self._source = source
        self._ctx: PyncetteContext | None = source if isinstance(source, PyncetteContext) else None
        self._opening = anyio.Lock()
        self._stack: contextlib.AsyncExitStack | None = None
        get, post = ["GET"], ["POST"]
        routes = [
            Route("/", self._page, methods=get),
            Route("/static/{name}", self._static, methods=get),
            Route("/api/overview", self._api(self._overview), methods=get),
            Route("/api/problems", self._api(self._problems), methods=get),
            Route("/api/tasks/{task}", self._api(self._task), methods=get),
            Route("/api/tasks/{task}/instances", self._api(self._instances), methods=get),
            Route("/api/tasks/{task}/instance", self._api(self._instance), methods=get),
            Route("/api/tasks/{task}/pause", self._action("pause"), methods=post),
            Route("/api/tasks/{task}/resume", self._action("resume"), methods=post),
            Route("/api/tasks/{task}/run", self._action("run"), methods=post),
            Route("/api/tasks/{task}/unschedule", self._action("unschedule"), methods=post),
        ]
        self._app = Starlette(routes=routes, lifespan=self._lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    # -- the app's storage ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[PyncetteContext]:
        """Open the app's storage for the dashboard (no fixtures, no scheduling) and close it on exit."""
        if self._ctx is not None:
            yield self._ctx
            return
        assert isinstance(self._source, Pyncette)
        async with self._source.create(fixtures=False) as ctx:
            self._ctx = ctx
            try:
                yield ctx
            finally:
                self._ctx = None

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.lifespan():
            yield

    async def context(self) -> PyncetteContext:
        """The context the dashboard reads through (opened now, for good, when nothing opened it yet)."""
        if self._ctx is not None:
            return self._ctx
        async with self._opening:
            if self._ctx is None:
                assert isinstance(self._source, Pyncette)
                logger.info("Opening the app's storage for the dashboard (kept open until the process exits)")
                self._stack = contextlib.AsyncExitStack()
                self._ctx = await self._stack.enter_async_context(self._source.create(fixtures=False))
        return self._ctx

    async def aclose(self) -> None:
        """Close the storage :meth:`context` opened on a first request (nothing else is closed here)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            self._ctx = None
            await stack.aclose()

    # -- plumbing -----------------------------------------------------------------------------------------

    def _api(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                await self.guard.check_read(request)
                return _json(await handler(request))
            except Exception as exc:
                return _error(exc)

        return endpoint

    def _action(self, action: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            task_name = request.path_params["task"]
            try:
                who = await self.guard.check_action(request)
            except Refused as exc:
                logger.warning("Refused %s of %r: %s", action, task_name, exc)
                return _error(exc)
            try:
                body = await _body(request)
                result = await self._act(action, task_name, body, who)
            except Exception as exc:
                logger.warning("Failed %s of %r by %s: %s", action, task_name, who, exc)
                return _error(exc)
            target = task_name + (f"/{body['instance']}" if body.get("instance") else "")
            target += f" (prefix {body['prefix']!r})" if body.get("prefix") else ""
            logger.info(
                "Dashboard action %s on %s by %s at %s: %s",
                action,
                target,
                who,
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                json.dumps(result, default=str),
            )
            return _json(result)

        return endpoint

    async def _page(self, request: Request) -> Response:
        html = _resource("index.html")
        root = request.scope.get("root_path", "").rstrip("/")
        config = {
            "actions": self.guard.mode,
            "refreshSeconds": self.refresh_seconds,
            "pageSize": self.page_size,
            "tokenHeader": TOKEN_HEADER,
            "csrfHeader": CSRF_HEADER,
            "title": self.title,
        }
        html = html.replace("{{base}}", _attr(root + "/")).replace("{{config}}", _attr(json.dumps(config)))
        return Response(html, media_type="text/html", headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})

    async def _static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _error(NotFound("file", name, "no such static file"))
        return Response(_resource(name), media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    # -- pages ----------------------------------------------------------------------------------------------

    async def _overview(self, request: Request) -> dict[str, Any]:
        ctx = await self.context()
        now = ctx.clock.now()
        tasks = []
        for task in data.all_tasks(ctx):
            entry = data.task_info(task)
            if isinstance(task, StaticTask):
                described = await ctx.describe_task(task, next_runs=1)
                entry["paused"] = data.pause_info(described.paused) if described else None
                entry["state"] = data.state_info(described.state, now) if described else None
                entry["stored"] = described is not None
            else:
                entry["paused"] = next(
                    (data.pause_info(p) for p in await _pauses(ctx, task) if p.scope == "task"), None
                )
                entry["instances"] = await self._scan_summary(ctx, task, now)
            tasks.append(entry)
        return {
            "now": now.isoformat(),
            "app": self.title,
            "backend": data.backend_info(ctx),
            "actions": self.guard.mode,
            "scan_limit": self.overview_scan,
            "tasks": tasks,
        }

    async def _scan_summary(self, ctx: PyncetteContext, template: DynamicTask, now: datetime) -> dict[str, Any]:
        """What the first ``overview_scan`` instances of a template say: counts over those only."""
        records, following = await data.read_records(ctx, template, None, self.overview_scan)
        failing = late = undecodable = 0
        soonest: datetime | None = None
        for record in records:
            try:
                state = data.decode_record(template, record)
            except RecordDecodeError:
                undecodable += 1
                continue
            failing += data.failing(state)
            late += data.lateness(state, now) > data.LATE_AFTER.total_seconds()
            if soonest is None or state.scheduled_at < soonest:
                soonest = state.scheduled_at  # kept in the instance's own zone
        return {
            "scanned": len(records),
            "complete": following is None,
            "failing": failing,
            "late": late,
            "undecodable": undecodable,
            "soonest": data.moment(soonest, soonest.tzinfo or timezone.utc) if soonest else None,
        }

    async def _task(self, request: Request) -> dict[str, Any]:
        ctx = await self.context()
        task = data.find_task(ctx, request.path_params["task"])
        count = _int(request, "next", 10, 1, MAX_NEXT)
        now = ctx.clock.now()
        result: dict[str, Any] = {"now": now.isoformat(), "actions": self.guard.mode, "task": data.task_info(task)}
        result["pauses"] = [data.pause_info(p) for p in await _pauses(ctx, task)]
        if isinstance(task, StaticTask):
            described = await ctx.describe_task(task, next_runs=count)
            result["state"] = data.state_info(described.state, now) if described else None
            result["paused"] = data.pause_info(described.paused) if described else None
            result["next_runs"] = [data.moment(t, task.tz) for t in described.next_runs] if described else []
            result["history"] = data.history_info(await ctx.task_history(task), task.tz)
        else:
            result["instances"] = await self._page_of(ctx, task, request)
        return result

    async def _instances(self, request: Request) -> dict[str, Any]:
        ctx = await self.context()
        template = data.find_template(ctx, request.path_params["task"])
        return {"now": ctx.clock.now().isoformat(), **await self._page_of(ctx, template, request)}

    async def _page_of(self, ctx: PyncetteContext, template: DynamicTask, request: Request) -> dict[str, Any]:
        """One keyset page of a template's instances (``list_page``; never a count)."""
        limit = _int(request, "limit", self.page_size, 1, MAX_PAGE)
        token = request.query_params.get("continuation") or None
        position = None if token is None else _position(data.decode_token(token, "page", template.name))
        records, following = await data.read_records(ctx, template, position, limit)
        rules = await data.pause_rules(ctx, template)
        now = ctx.clock.now()
        rows = []
        for record in records:
            try:
                row = data.state_info(data.decode_record(template, record), now)
            except RecordDecodeError as exc:
                row = data.undecodable_info(record, str(exc), now)
            row["paused_by"] = data.held(rules, record)
            row["paused"] = row["paused_by"] is not None
            rows.append(row)
        following = None if following is None else data.encode_token("page", template.name, following)
        return {"items": rows, "limit": limit, "continuation": following}

    async def _instance(self, request: Request) -> dict[str, Any]:
        ctx = await self.context()
        template = data.find_template(ctx, request.path_params["task"])
        name = request.query_params.get("name")
        if not name:
            raise BadValue("name", name, "give the exact instance name (?name=...)")
        count = _int(request, "next", 10, 1, MAX_NEXT)
        try:
            template.instance_key(name)
        except ConfigurationError as exc:
            raise BadValue("name", name, str(exc)) from None
        now = ctx.clock.now()
        try:
            described = await ctx.describe_task(template, name, next_runs=count)
        except RecordDecodeError as exc:
            return {"now": now.isoformat(), "instance": {"instance": name, "undecodable": data.safe_text(str(exc))}}
        if described is None:
            raise NotFound("instance", name, f"no instance of that name in {template.name!r}")
        state = described.state
        return {
            "now": now.isoformat(),
            "task": data.task_info(template),
            "actions": self.guard.mode,
            "instance": {
                **data.state_info(state, now),
                "paused": data.pause_info(described.paused),
                "next_runs": [data.moment(t, state.task.tz) for t in described.next_runs],
                "history": data.history_info(await ctx.task_history(template, name), state.task.tz),
            },
        }

    async def _problems(self, request: Request) -> dict[str, Any]:
        """Failing and stuck runs and undecodable records, scanning at most ``scan_limit`` records per call."""
        ctx = await self.context()
        now = ctx.clock.now()
        started = time.perf_counter()
        tasks = data.all_tasks(ctx)
        token = request.query_params.get("continuation") or None
        position = data.decode_token(token, "scan", "*") if token else [0, None]
        if len(position) != 2 or not isinstance(position[0], int) or not 0 <= position[0] <= len(tasks):
            raise BadValue("continuation", token, "position out of range (start from the first page)")
        task_index = position[0]
        inner = _position(position[1:]) if position[1] is not None else None
        budget = self.scan_limit
        scanned = 0
        items: list[dict[str, Any]] = []
        while task_index < len(tasks) and budget > 0:
            task = tasks[task_index]
            if isinstance(task, StaticTask):
                described = await ctx.describe_task(task, next_runs=1)
                scanned += 1
                budget -= 1
                if described is not None:
                    kinds = _kinds(described.state, now, described.paused is not None)
                    if kinds:
                        items.append({"task": task.name, "problems": kinds, **data.state_info(described.state, now)})
                task_index, inner = task_index + 1, None
                continue
            records, inner = await data.read_records(ctx, task, inner, budget)
            rules = await data.pause_rules(ctx, task) if records else {}
            for record in records:
                try:
                    state = data.decode_record(task, record)
                except RecordDecodeError as exc:
                    row = data.undecodable_info(record, str(exc), now)
                    items.append({"task": task.name, "problems": ["undecodable"], **row})
                    continue
                kinds = _kinds(state, now, data.held(rules, record) is not None)
                if kinds:
                    items.append({"task": task.name, "problems": kinds, **data.state_info(state, now)})
            scanned += len(records)
            budget -= len(records)
            if inner is None:
                task_index += 1
        done = task_index >= len(tasks)
        return {
            "now": now.isoformat(),
            "scanned": scanned,
            "scan_limit": self.scan_limit,
            "complete": done,
            "continuation": None if done else data.encode_token("scan", "*", task_index, inner),
            "seconds": time.perf_counter() - started,
            "items": items,
        }

    # -- actions --------------------------------------------------------------------------------------------

    async def _act(self, action: str, task_name: str, body: dict[str, Any], who: str) -> dict[str, Any]:
        ctx = await self.context()
        task = data.find_task(ctx, task_name)
        allowed = {"pause": {"instance", "prefix", "note"}, "resume": {"instance", "prefix"}}.get(action, {"instance"})
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise BadValue("field", unknown[0], f"{action} takes {', '.join(sorted(allowed))}", 422)
        instance = _text(body, "instance", 200)
        prefix = _text(body, "prefix", 1000)
        if instance is not None and isinstance(task, StaticTask):
            raise BadValue("instance", instance, f"{task.name!r} is a static task: it has no instances", 422)
        if instance is not None and prefix is not None:
            raise BadValue("prefix", prefix, "give an instance or a prefix, not both", 422)
        result: dict[str, Any] = {"task": task.name, "instance": instance, "prefix": prefix, "by": who}
        if action == "pause":
            note = _text(body, "note", MAX_NOTE)
            result["records"] = await ctx.pause_task(task, instance, prefix=prefix, note=note, by=who)
            result["paused"] = True
        elif action == "resume":
            if not await ctx.resume_task(task, instance, prefix=prefix):
                raise BadValue("target", instance or prefix or task.name, "was not paused with these arguments", 409)
            result["resumed"] = True
        elif action == "run":
            if isinstance(task, DynamicTask) and instance is None:
                raise BadValue("instance", None, f"{task.name!r} is a template: name the instance to run", 422)
            try:
                result["result"] = await ctx.run_task_now(task, instance)
            except ConfigurationError as exc:
                if "not stored" in str(exc):
                    raise NotFound("instance" if instance else "task", instance or task.name, "not stored") from None
                raise
        else:
            if not isinstance(task, DynamicTask) or instance is None:
                raise BadValue("instance", instance, "unschedule needs a template and an instance name", 422)
            if await ctx.get_task(task, instance) is None:
                raise NotFound("instance", instance, f"no instance of that name in {task.name!r}")
            await ctx.unschedule_task(task, instance)
            result["unscheduled"] = True
        return result


def _kinds(state: Any, now: datetime, paused: bool) -> list[str]:
    """The problems of one stored state: ``stuck`` (held past its lease), ``retrying``, ``failed`` (retries
    exhausted, or none configured), ``late`` (due over a minute ago, not running and not paused)."""
    kinds = []
    if state.locked_until is not None and state.locked_until <= now:
        kinds.append("stuck")
    if state.attempt > 1:
        kinds.append("retrying")
    elif state.last_outcome in data.FAILED_OUTCOMES:
        kinds.append("failed")
    if not paused and "stuck" not in kinds and data.lateness(state, now) > data.LATE_AFTER.total_seconds():
        kinds.append("late")
    return kinds


async def _pauses(ctx: PyncetteContext, task: StaticTask | DynamicTask) -> list[Any]:
    try:
        return await ctx.list_pauses(task)
    except ConfigurationError:  # no control capability: nothing can be paused
        return []


def _position(value: list[Any]) -> str:
    """The :meth:`PyncetteContext.list_records` token inside a dashboard token."""
    if len(value) != 1 or not isinstance(value[0], str):
        raise BadValue("continuation", value, "not a page position (start from the first page)")
    return value[0]


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadValue(name, raw, f"must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise BadValue(name, raw, f"must be an integer from {low} to {high}")
    return value


def _text(body: dict[str, Any], name: str, longest: int) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadValue(name, value, "must be text", 422)
    if len(value) > longest:
        raise BadValue(name, value, f"too long ({len(value)} characters; at most {longest})", 422)
    return value


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 16384:
        raise BadValue("body", f"{len(raw)} bytes", "too large (at most 16384 bytes)", 413)
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise BadValue("body", raw[:40].decode(errors="replace"), "not JSON", 400) from None
    if not isinstance(body, dict):
        raise BadValue("body", body, "must be a JSON object", 400)
    return body


def _json(payload: Any, status: int = 200) -> Response:
    return JSONResponse(payload, status_code=status, headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"})


def _error(exc: Exception) -> Response:
    if isinstance(exc, BadValue):
        status, code = exc.status, "not_found" if isinstance(exc, NotFound) else "bad_value"
        detail: dict[str, Any] = {"parameter": exc.parameter, "value": redact(str(exc.value))[:200]}
    elif isinstance(exc, Refused):
        status, code, detail = exc.status, exc.code, {}
    elif isinstance(exc, ConfigurationError):
        status, code, detail = 422, "refused", {}
    elif isinstance(exc, BackendError):
        status, code, detail = 503, "storage", {}
    else:
        logger.exception("Dashboard request failed")
        status, code, detail = 500, "internal", {}
    return _json({"error": {"code": code, "message": redact(str(exc)), **detail}}, status)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


_CACHE: dict[str, str] = {}


def _resource(name: str) -> str:
    text = _CACHE.get(name)
    if text is None:
        text = _CACHE[name] = (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")
    return text


def dashboard(
    source: Pyncette | PyncetteContext,
    *,
    actions: bool = False,
    token: str | None = None,
    auth: AuthHook | None = None,
    allowed_origins: Iterable[str] = (),
    refresh_seconds: float = 5.0,
    page_size: int = 50,
    scan_limit: int = 2000,
    overview_scan: int = 500,
    title: str | None = None,
) -> Dashboard:
    """The dashboard of a Pyncette app (or of an open context), as an ASGI app.

    Args:
        source: the app (its storage is opened by the dashboard, without fixtures) or a running context.
        actions: allow pause, resume, run now and unschedule (read-only otherwise).
        token: the secret an action must carry in the ``X-Pyncette-Token`` header (16+ characters).
        auth: ``auth(request) -> user | None`` (may be async), from the host app: who makes a request. With it,
            every request needs a user, and actions need no token (they still need the page's custom header).
        allowed_origins: other origins (``https://ops.example.com``) actions may come from, behind a proxy.
        refresh_seconds: how often the page fetches fresh data (0: never).
        page_size: instances per page on a template's page.
        scan_limit: records the problems view reads per request.
        overview_scan: instances of each template the overview reads per request for its counts.
        title: shown in the page header.
    """
    return Dashboard(
        source,
        actions=actions,
        token=token,
        auth=auth,
        allowed_origins=allowed_origins,
        refresh_seconds=refresh_seconds,
        page_size=page_size,
        scan_limit=scan_limit,
        overview_scan=overview_scan,
        title=title,
    )


__all__ = ["Dashboard", "dashboard"]
