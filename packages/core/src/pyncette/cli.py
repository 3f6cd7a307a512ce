"""The ``pyncette`` command line (also ``python -m pyncette``).

Commands::

    pyncette run MODULE:APP [--backend NAME] [-o KEY=VALUE ...] [--log-level LEVEL] [--seconds N]
                            [--dashboard [HOST:PORT] [--dashboard-actions] [--token-env NAME]]
    pyncette dashboard MODULE:APP [--bind HOST:PORT] [--actions] [--token-env NAME] [--title TEXT]
    pyncette backends [--json]
    pyncette tasks MODULE:APP list TEMPLATE [--limit N] [--json]
    pyncette tasks MODULE:APP show TEMPLATE INSTANCE [--json]
    pyncette tasks MODULE:APP schedule TEMPLATE INSTANCE (--cron EXPR [--timezone TZ] | --interval SECONDS
                                                          | --at ISO8601) [--arg KEY=VALUE ...] [--force]
    pyncette tasks MODULE:APP unschedule TEMPLATE INSTANCE [--json]
    pyncette tasks MODULE:APP describe TASK [INSTANCE] [--next N] [--json]
    pyncette tasks MODULE:APP pause TASK [INSTANCE | --prefix TEXT] [--note TEXT] [--by WHO] [--json]
    pyncette tasks MODULE:APP resume TASK [INSTANCE | --prefix TEXT] [--json]
    pyncette tasks MODULE:APP pauses TASK [--json]
    pyncette tasks MODULE:APP run TASK [INSTANCE] [--json]
    pyncette tasks MODULE:APP prune [--delete] [--json]
    pyncette migrate MODULE:APP --from-1x [--dry-run] [--force] [--drop-1x-backup] [--json]

``MODULE:APP`` names a module (or a ``.py`` file) and the :class:`~pyncette.Pyncette`
object in it (``app`` when left out). The backend and its options can be overridden
by ``$PYNCETTE_BACKEND`` and ``$PYNCETTE_<OPTION>`` (``PYNCETTE_REDIS_URL`` sets
``redis_url``; only the chosen backend's options are read), and by ``--backend`` and
``-o`` / ``--option``, which win. Values are text, converted by the backend's option schema.

Exit status: 0 on success, 1 on a runtime error (storage unreachable, instance
missing or running, nothing to resume, the app failed), 2 on a usage or configuration
error (bad arguments, module path, backend, task or option; a backend without the
control plane), 3 when ``tasks run`` queued nothing because a run holds the task.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio

from . import __version__, backends
from ._install import install_command, installed_version, is_release
from .abc import Backend
from .app import Pyncette
from .errors import (
    BackendError,
    BackendNotFound,
    ConfigurationError,
    PyncetteException,
    TaskLockedException,
    leaf_exception,
)
from .migration import MigrationReport, migrate
from .model import Pause, TaskState
from .options import ENV_PREFIX
from .process import configure_logging, run_until_signalled
from .redaction import redact
from .runtime import PyncetteContext
from .task import DynamicTask, Task

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
#: ``tasks run``: nothing was queued because a run holds the task right now.
EXIT_BUSY = 3

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class CliError(Exception):
    """An error reported as one line, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -------------------------------------------------------------------------------------------------
# Loading and configuring the app
# -------------------------------------------------------------------------------------------------


def load_app(spec: str) -> Pyncette:
    """Import ``MODULE:APP`` (or ``path/to/file.py:APP``) and return the app object."""
    module_name, sep, attribute = spec.partition(":")
    if not module_name or (sep and not attribute):
        raise CliError(f"invalid app {spec!r}: expected MODULE:APP, e.g. myproject.tasks:app", EXIT_USAGE)
    attribute = attribute or "app"
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        module = _import_file(Path(module_name))
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module_name == exc.name or module_name.startswith(f"{exc.name}.")):
                raise  # a module the app imports is missing: a problem inside the app
            raise CliError(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                "(run from its directory or add it to PYTHONPATH)",
                EXIT_USAGE,
            ) from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attribute!r}", EXIT_USAGE) from None
    if not isinstance(obj, Pyncette):
        raise CliError(f"{spec!r} is a {type(obj).__name__}, not a pyncette.Pyncette app", EXIT_USAGE)
    return obj


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise CliError(f"cannot import {str(path)!r}: no such file", EXIT_USAGE)
    name = path.stem
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise CliError(f"cannot import {str(path)!r}: not a Python module", EXIT_USAGE)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    module_spec.loader.exec_module(module)
    return module


def parse_assignment(text: str, what: str = "option") -> tuple[str, str]:
    """Split ``KEY=VALUE``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CliError(f"invalid {what} {redact(text)!r}: expected KEY=VALUE", EXIT_USAGE)
    return key, value


def configure_app(app: Pyncette, backend: str | None, assignments: Sequence[str]) -> str:
    """Apply the environment and command-line overrides to ``app``, check its backend exists and name it.

    Options are text here (``-o KEY=VALUE`` and ``$PYNCETTE_<OPTION>``); the backend's option schema
    converts them like any other value. Only the chosen backend's options are read from the environment.
    """
    cli_options: dict[str, Any] = dict(parse_assignment(text) for text in assignments)
    backend = backend or os.environ.get(f"{ENV_PREFIX}BACKEND") or None
    if backend is None and app.repository_factory is None and app.backend_name is None:
        # The app leaves the choice to the defaults, which pick sqlite when sqlite options are given.
        given = [*cli_options, *app.backend_options, *(k.lower() for k in os.environ if k.startswith(ENV_PREFIX))]
        if any(k.startswith(("sqlite_", f"{ENV_PREFIX.lower()}sqlite_")) for k in given):
            backend = "sqlite"
    app.configure(backend=backend)
    factory = backends.pick(app.repository_factory, app.backend_name, app.backend_options)
    if isinstance(factory, Backend):
        unknown = sorted(set(cli_options) - set(factory.options))
        if unknown:
            allowed = ", ".join(sorted(factory.options)) or "none"
            raise CliError(
                f"unknown option(s) {', '.join(unknown)} for backend {factory.name!r}; its options: {allowed}",
                EXIT_USAGE,
            )
        environment: dict[str, Any] = factory.options.from_environment()
        app.configure(**{**environment, **cli_options})
        factory.settings(app.backend_options)  # refuse a bad value now, with the option's name
    else:
        app.configure(**cli_options)
    return str(getattr(factory, "name", factory))


def _find_template(app: Pyncette, name: str) -> DynamicTask:
    for task in app.tasks:
        if task.name == name:
            if not isinstance(task, DynamicTask):
                raise CliError(f"{name!r} is a static task; only dynamic tasks have instances", EXIT_USAGE)
            return task
    templates = ", ".join(t.name for t in app.tasks if t.dynamic) or "none"
    raise CliError(f"unknown template {name!r}; dynamic tasks of this app: {templates}", EXIT_USAGE)


def _find_task(app: Pyncette, name: str) -> Task:
    for task in app.tasks:
        if task.name == name:
            return task
    names = ", ".join(t.name for t in app.tasks) or "none"
    raise CliError(f"unknown task {name!r}; tasks of this app: {names}", EXIT_USAGE)


# -------------------------------------------------------------------------------------------------
# Output
# -------------------------------------------------------------------------------------------------


def _iso(moment: datetime | None, *, precise: bool = True) -> str | None:
    if moment is None:
        return None
    return moment.isoformat() if precise else moment.isoformat(timespec="seconds")


def state_to_dict(state: TaskState) -> dict[str, Any]:
    """A task instance's stored state as JSON-ready data."""
    task = state.task
    return {
        "template": task.template.name if task.template is not None else None,
        "instance": task.name,
        "scheduled_at": _iso(state.scheduled_at),
        "locked_until": _iso(state.locked_until),
        "locked_by": state.locked_by,
        "cron": task.cron,
        "timezone": task.timezone,
        "interval": task.interval.total_seconds() if task.interval is not None else None,
        "execute_at": _iso(task.execute_at),
        "args": task.extra_args,
        "lease_duration": task.lease_duration.total_seconds(),
        "execution_mode": task.execution_mode.name,
        "failure_mode": task.failure_mode.name,
        "fast_forward": task.fast_forward,
        "policies": task.policies.to_json(),
        "attempt": state.attempt,
        "last_outcome": state.last_outcome,
        "last_started": _iso(state.last_started),
        "last_finished": _iso(state.last_finished),
        "last_error": state.last_error,
    }


def _describe_schedule(task: Task) -> str:
    if task.cron is not None:
        return f"cron {task.cron}" + (f" ({task.timezone})" if task.timezone else "")
    if task.interval is not None:
        return f"every {task.interval.total_seconds():g}s"
    if task.execute_at is not None:
        return f"once at {_iso(task.execute_at, precise=False)}"
    return "-"


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    body = [list(row) for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in body)]) for i, h in enumerate(headers)]
    for row in [list(headers), *body]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _last_run(state: TaskState) -> str:
    if state.last_outcome is None:
        # An at-most-once run stores its start only.
        return f"started {_iso(state.last_started, precise=False)}" if state.last_started else "-"
    started = _iso(state.last_started, precise=False)
    finished = _iso(state.last_finished, precise=False)
    return f"{state.last_outcome}" + (f", {started} to {finished}" if started and finished else "")


def _print_state(state: TaskState) -> None:
    task = state.task
    fields = [
        ("template", task.template.name if task.template is not None else "-"),
        ("instance", task.name),
        ("next run", _iso(state.scheduled_at, precise=False) or "-"),
        ("schedule", _describe_schedule(task)),
        ("locked until", _iso(state.locked_until, precise=False) or "-"),
        ("locked by", state.locked_by or "-"),
        ("args", json.dumps(task.extra_args)),
        ("lease", f"{task.lease_duration.total_seconds():g}s"),
        ("execution mode", task.execution_mode.name),
        ("failure mode", task.failure_mode.name),
        ("policies", json.dumps(task.policies.to_json()) if not task.policies.plain else "-"),
        ("attempt", str(state.attempt)),
        ("last run", _last_run(state)),
        ("last error", state.last_error or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name.ljust(width)}  {value}")


# -------------------------------------------------------------------------------------------------
# Commands
# -------------------------------------------------------------------------------------------------


def _configure_logging(level: str | None, stream: TextIO = sys.stdout) -> None:
    chosen = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    if chosen not in LOG_LEVELS:
        raise CliError(f"invalid log level {chosen!r}: choose one of {', '.join(LOG_LEVELS)}", EXIT_USAGE)
    configure_logging(chosen, stream)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the app until SIGINT/SIGTERM (or ``--seconds``), like ``app.main()``; ``--dashboard`` serves the
    dashboard beside it, on the same storage connection."""
    _configure_logging(args.log_level)
    if args.seconds is not None and args.seconds <= 0:
        raise CliError(f"invalid --seconds {args.seconds:g}: must be positive", EXIT_USAGE)
    if args.dashboard is None and (args.dashboard_actions or args.token_env is not None):
        raise CliError("--dashboard-actions and --token-env need --dashboard", EXIT_USAGE)
    board = None
    if args.dashboard is not None:
        if args.event_loop != "asyncio":
            raise CliError("--dashboard runs on asyncio only (uvicorn): leave out --event-loop trio", EXIT_USAGE)
        board = _dashboard_module()
        token = _dashboard_token(board, args.token_env, args.dashboard_actions)
    app = load_app(args.app)
    backend = configure_app(app, args.backend, args.option or [])
    logging.getLogger("pyncette").info("Running %s on backend %r", args.app, backend)
    if board is None:
        anyio.run(app.run_until_signalled, args.seconds, backend=args.event_loop)
        return EXIT_OK
    host, port = board.parse_bind(args.dashboard)
    sock = board.bind(host, port)

    async def serve(ctx: PyncetteContext) -> None:
        await board.serve_alongside(board.dashboard(ctx, actions=args.dashboard_actions, token=token), sock)

    try:
        anyio.run(run_until_signalled, app.create, args.seconds, serve, backend="asyncio")
    finally:
        sock.close()
    return EXIT_OK


def _dashboard_module() -> Any:
    """``pyncette_dashboard``, imported only when asked for (it is a separate distribution)."""
    try:
        return importlib.import_module("pyncette_dashboard")
    except ImportError as exc:
        if exc.name not in ("pyncette_dashboard", "starlette", "uvicorn"):
            raise
        message = f'the dashboard is not installed (no module named {exc.name!r}): pip install "pyncette[dashboard]"'
        release = installed_version()
        if is_release(release):
            message += f" (this version: {install_command('dashboard', release)})"
        else:
            message += f" (from this development build's checkout: {install_command('dashboard', release)})"
        raise CliError(message, EXIT_USAGE) from None


def _dashboard_token(board: Any, env: str | None, actions: bool) -> str | None:
    """The actions token, from an environment variable (never the command line: it would show in ``ps``)."""
    name = env or board.TOKEN_ENV
    token = os.environ.get(name) or None
    if actions and token is None:
        raise CliError(f"dashboard actions need a token: set the environment variable {name}", EXIT_USAGE)
    return token if actions else None


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard of an app (its storage opened without running it) until SIGINT/SIGTERM."""
    _configure_logging(args.log_level)
    board = _dashboard_module()
    token = _dashboard_token(board, args.token_env, args.actions)
    host, port = board.parse_bind(args.bind)
    app = load_app(args.app)
    configure_app(app, args.backend, args.option or [])
    board.run(board.dashboard(app, actions=args.actions, token=token, title=args.title), host, port)
    return EXIT_OK


def cmd_backends(args: argparse.Namespace) -> int:
    """List installed backends and broken plugins."""
    logging.getLogger(backends.__name__).setLevel(logging.CRITICAL)  # failures are reported below instead
    working: list[dict[str, Any]] = []
    broken: list[dict[str, Any]] = []
    for info in backends.available():
        entry: dict[str, Any] = {"name": info.name, "package": info.distribution, "version": info.version}
        try:
            backend = backends.load(info.name)
        except PyncetteException as exc:
            broken.append({**entry, "error": str(exc)})
            continue
        options = [option.describe() for option in backend.options.values()]
        working.append({**entry, "capabilities": backend.capabilities.describe(), "options": options})
    if args.json:
        _print_json({"backends": working, "broken": broken})
        return EXIT_OK
    _print_table(
        ["NAME", "PACKAGE", "VERSION", "CAPABILITIES"],
        ([b["name"], b["package"], b["version"], ", ".join(b["capabilities"]) or "-"] for b in working),
    )
    for b in working:
        if b["options"]:
            print(f"\n{b['name']} options (also settable as {ENV_PREFIX}<NAME IN CAPITALS>):")
            _print_table(["  OPTION", "TYPE", "DEFAULT", "DESCRIPTION"], (_option_row(o) for o in b["options"]))
    if broken:
        print("\nBroken plugins:")
        for b in broken:
            print(f"  {b['name']} ({b['package']} {b['version']}): {b['error']}")
    return EXIT_OK


def _in_context(args: argparse.Namespace, app: Pyncette, action: Callable[[PyncetteContext], Awaitable[T]]) -> T:
    """Open the app's storage (no fixtures, no scheduling) and run ``action`` in it."""

    async def main() -> T:
        async with app.create(fixtures=False) as ctx:
            return await action(ctx)

    return anyio.run(main, backend=getattr(args, "event_loop", None) or "asyncio")


def _tasks_setup(args: argparse.Namespace) -> tuple[Pyncette, DynamicTask]:
    _configure_logging(getattr(args, "log_level", None) or "WARNING", sys.stderr)
    app = load_app(args.app)
    configure_app(app, getattr(args, "backend", None), getattr(args, "option", None) or [])
    return app, _find_template(app, args.template)


def cmd_tasks_list(args: argparse.Namespace) -> int:
    """Page through every instance of a template."""
    app, template = _tasks_setup(args)
    if args.limit is not None and args.limit < 1:
        raise CliError(f"invalid --limit {args.limit}: must be >= 1", EXIT_USAGE)

    async def collect(ctx: PyncetteContext) -> list[TaskState]:
        states: list[TaskState] = []
        token: str | None = None
        while True:
            page_size = app.batch_size if args.limit is None else min(app.batch_size, args.limit - len(states))
            page = await ctx.list_tasks(template, limit=page_size, continuation_token=token)
            states.extend(page.tasks)
            token = page.continuation_token
            if token is None or (args.limit is not None and len(states) >= args.limit):
                return states

    states = sorted(_in_context(args, app, collect), key=lambda s: s.task.name)
    if getattr(args, "json", False):
        _print_json([state_to_dict(s) for s in states])
        return EXIT_OK
    _print_table(
        ["INSTANCE", "NEXT RUN", "SCHEDULE", "LOCKED UNTIL", "ARGS"],
        (
            [
                s.task.name,
                _iso(s.scheduled_at, precise=False) or "-",
                _describe_schedule(s.task),
                _iso(s.locked_until, precise=False) or "-",
                json.dumps(s.task.extra_args),
            ]
            for s in states
        ),
    )
    print(f"{len(states)} instance(s) of {template.name!r}")
    return EXIT_OK


def _missing(template: Task, instance: str) -> CliError:
    return CliError(f"no instance {instance!r} of {template.name!r}", EXIT_ERROR)


def cmd_tasks_show(args: argparse.Namespace) -> int:
    """Show one instance's stored state."""
    app, template = _tasks_setup(args)
    state = _in_context(args, app, lambda ctx: ctx.get_task(template, args.instance))
    if state is None:
        raise _missing(template, args.instance)
    if getattr(args, "json", False):
        _print_json(state_to_dict(state))
    else:
        _print_state(state)
    return EXIT_OK


def cmd_tasks_describe(args: argparse.Namespace) -> int:
    """Show a static task's or an instance's stored state, its pause and its next scheduled runs."""
    app, task = _control_setup(args)
    count = args.next
    if count < 1 or count > 1000:
        raise CliError(f"invalid --next {count}: must be from 1 to 1000", EXIT_USAGE)
    described = _in_context(args, app, lambda ctx: ctx.describe_task(task, args.instance, next_runs=count))
    if described is None:
        raise _missing(task, args.instance) if args.instance else CliError(f"{task.name!r} is not stored yet")
    paused = described.paused
    if getattr(args, "json", False):
        _print_json(
            {
                **state_to_dict(described.state),
                "next_runs": [_iso(t) for t in described.next_runs],
                "paused": None if paused is None else _pause_to_dict(paused),
            }
        )
        return EXIT_OK
    _print_state(described.state)
    if paused is not None:
        print("paused".ljust(14) + f"  {_pause_line(paused)}")
    for index, moment in enumerate(described.next_runs):
        print(f"{'next runs' if index == 0 else ''}".ljust(14) + f"  {_iso(moment, precise=False)}")
    return EXIT_OK


def _control_setup(args: argparse.Namespace) -> tuple[Pyncette, Task]:
    _configure_logging(getattr(args, "log_level", None) or "WARNING", sys.stderr)
    app = load_app(args.app)
    configure_app(app, getattr(args, "backend", None), getattr(args, "option", None) or [])
    task = _find_task(app, args.task)
    if getattr(args, "instance", None) is not None and not isinstance(task, DynamicTask):
        raise CliError(f"{task.name!r} is a static task; it has no instance {args.instance!r}", EXIT_USAGE)
    return app, task


def _target(task: Task, instance: str | None, prefix: str | None) -> str:
    if instance is not None:
        return f"{task.name}/{instance}"
    if prefix is not None:
        return f"{task.name}/{prefix}*"
    return task.name + (" (every instance)" if isinstance(task, DynamicTask) else "")


def _pause_to_dict(pause: Pause) -> dict[str, Any]:
    return {
        "task": pause.task,
        "scope": pause.scope,
        "match": pause.match,
        "note": pause.note,
        "by": pause.by,
        "at": _iso(pause.at),
    }


def _pause_line(pause: Pause) -> str:
    what = {"task": "the task", "instance": f"instance {pause.match!r}", "prefix": f"prefix {pause.match!r}"}
    extra = [f"by {pause.by}" if pause.by else "", f"since {_iso(pause.at, precise=False)}" if pause.at else ""]
    note = f": {pause.note}" if pause.note else ""
    return " ".join([what.get(pause.scope, pause.scope), *filter(None, extra)]) + note


def _operator() -> str | None:
    """Who runs the command (``user@host``), recorded with a pause unless ``--by`` says otherwise."""
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError, ImportError):
        return None


def cmd_tasks_pause(args: argparse.Namespace) -> int:
    """Pause a static task, a template, an instance or a prefix of instances, for every process."""
    app, task = _control_setup(args)
    by = args.by if args.by is not None else _operator()
    held = _in_context(
        args, app, lambda ctx: ctx.pause_task(task, args.instance, prefix=args.prefix, note=args.note, by=by)
    )
    target = _target(task, args.instance, args.prefix)
    if getattr(args, "json", False):
        _print_json(
            {"task": task.name, "instance": args.instance, "prefix": args.prefix, "paused": True, "records": held}
        )
    else:
        print(f"paused {target}" + (f": {held} stored record(s) held" if held is not None else ""))
    return EXIT_OK


def cmd_tasks_resume(args: argparse.Namespace) -> int:
    """Remove the pause stored with the same arguments."""
    app, task = _control_setup(args)
    removed = _in_context(args, app, lambda ctx: ctx.resume_task(task, args.instance, prefix=args.prefix))
    target = _target(task, args.instance, args.prefix)
    if getattr(args, "json", False):
        _print_json({"task": task.name, "instance": args.instance, "prefix": args.prefix, "resumed": removed})
    elif removed:
        print(f"resumed {target}")
    if not removed:
        raise CliError(f"{target} was not paused (resume takes the arguments pause was given)")
    return EXIT_OK


def cmd_tasks_pauses(args: argparse.Namespace) -> int:
    """List the pauses of a task or template."""
    app, task = _control_setup(args)
    pauses = _in_context(args, app, lambda ctx: ctx.list_pauses(task))
    if getattr(args, "json", False):
        _print_json([_pause_to_dict(p) for p in pauses])
        return EXIT_OK
    _print_table(
        ["SCOPE", "MATCH", "SINCE", "BY", "NOTE"],
        ([p.scope, p.match or "-", _iso(p.at, precise=False) or "-", p.by or "-", p.note or "-"] for p in pauses),
    )
    print(f"{len(pauses)} pause(s) of {task.name!r}")
    return EXIT_OK


def cmd_tasks_run(args: argparse.Namespace) -> int:
    """Trigger one extra run now, keeping the regular schedule."""
    app, task = _control_setup(args)
    if isinstance(task, DynamicTask) and args.instance is None:
        raise CliError(f"{task.name!r} is a dynamic template: name the instance to run", EXIT_USAGE)
    outcome = _in_context(args, app, lambda ctx: ctx.run_task_now(task, args.instance))
    target = _target(task, args.instance, None)
    if getattr(args, "json", False):
        _print_json({"task": task.name, "instance": args.instance, "result": outcome})
    else:
        print(
            {
                "queued": f"queued a run of {target}: the first process to claim it runs it",
                "due": f"a run of {target} is due already: it runs next",
                "running": f"{target} is running now: nothing queued (try again when it has finished)",
            }[outcome]
        )
    return EXIT_BUSY if outcome == "running" else EXIT_OK


def cmd_tasks_prune(args: argparse.Namespace) -> int:
    """List (and with --delete, remove) stored records no task of the app owns any more."""
    _configure_logging(getattr(args, "log_level", None) or "WARNING", sys.stderr)
    app = load_app(args.app)
    configure_app(app, getattr(args, "backend", None), getattr(args, "option", None) or [])
    orphans = _in_context(args, app, lambda ctx: ctx.prune(dry_run=not args.delete))
    if getattr(args, "json", False):
        _print_json([{"parent": o.parent, "records": o.records, "deleted": o.deleted} for o in orphans])
        return EXIT_OK
    _print_table(["PARENT", "RECORDS"], ([o.parent, str(o.records)] for o in orphans))
    total = sum(o.records for o in orphans)
    if args.delete:
        print(f"deleted {total} record(s) of {len(orphans)} task(s) no longer in the app")
    else:
        print(f"{total} record(s) of {len(orphans)} task(s) no longer in the app; pass --delete to remove them")
    return EXIT_OK


def _parse_at(text: str) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"invalid --at {text!r}: expected ISO 8601, e.g. 2030-01-01T09:00:00+00:00", EXIT_USAGE
        ) from None


def _parse_argument(text: str) -> tuple[str, Any]:
    key, value = parse_assignment(text, "argument")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def cmd_tasks_schedule(args: argparse.Namespace) -> int:
    """Create or update an instance."""
    app, template = _tasks_setup(args)
    options: dict[str, Any] = dict(_parse_argument(text) for text in args.arg or [])
    if args.cron is not None:
        options["schedule"] = args.cron
    if args.timezone is not None:
        options["timezone"] = args.timezone
    if args.interval is not None:
        if args.interval <= 0:
            raise CliError(f"invalid --interval {args.interval:g}: must be positive", EXIT_USAGE)
        options["interval"] = timedelta(seconds=args.interval)
    if args.at is not None:
        options["execute_at"] = _parse_at(args.at)
    template.instantiate(args.instance, **options)  # validate before touching storage

    async def schedule(ctx: PyncetteContext) -> TaskState | None:
        try:
            await ctx.schedule_task(template, args.instance, force=args.force, **options)
        except TaskLockedException:
            raise CliError(
                f"instance {args.instance!r} of {template.name!r} is running; pass --force to overwrite it"
            ) from None
        return await ctx.get_task(template, args.instance)

    state = _in_context(args, app, schedule)
    if state is None:  # removed at once by a running app (a once-off instance that already ran)
        raise _missing(template, args.instance)
    if getattr(args, "json", False):
        _print_json(state_to_dict(state))
    else:
        print(
            f"scheduled {template.name}/{args.instance}: {_describe_schedule(state.task)}, "
            f"next run {_iso(state.scheduled_at, precise=False)}"
        )
    return EXIT_OK


def cmd_tasks_unschedule(args: argparse.Namespace) -> int:
    """Remove an instance."""
    app, template = _tasks_setup(args)

    async def unschedule(ctx: PyncetteContext) -> bool:
        if await ctx.get_task(template, args.instance) is None:
            return False
        await ctx.unschedule_task(template, args.instance)
        return True

    if not _in_context(args, app, unschedule):
        raise _missing(template, args.instance)
    if getattr(args, "json", False):
        _print_json({"template": template.name, "instance": args.instance, "unscheduled": True})
    else:
        print(f"unscheduled {template.name}/{args.instance}")
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    """Convert a Pyncette 1.x store in place (see :mod:`pyncette.migration`)."""
    _configure_logging(getattr(args, "log_level", None) or "WARNING", sys.stderr)
    if not args.from_1x:
        raise CliError("nothing to migrate from: pass --from-1x (the only source there is)", EXIT_USAGE)
    app = load_app(args.app)
    configure_app(app, getattr(args, "backend", None), getattr(args, "option", None) or [])
    factory, _ = app.resolve_backend()
    if not isinstance(factory, Backend):
        raise CliError("migrating needs a backend chosen by name (not a custom repository_factory)", EXIT_USAGE)
    settings = factory.settings(app.backend_options)
    legacy = factory.legacy(settings)
    if legacy is None:
        raise CliError(f"backend {factory.name!r} knows no Pyncette 1.x storage layout to migrate", EXIT_USAGE)
    quiet = getattr(args, "json", False)

    def progress(done: int) -> None:
        if not quiet:
            print(f"... {done} record(s) read", file=sys.stderr, flush=True)

    async def main() -> MigrationReport:
        async with legacy as store:
            return await migrate(
                store,
                lambda: factory.open(settings),
                app.tasks,
                now=datetime.now(timezone.utc),
                dry_run=args.dry_run,
                force=args.force,
                drop_backup=args.drop_1x_backup,
                progress=progress,
            )

    report = anyio.run(main, backend="asyncio")
    if quiet:
        _print_json(report.as_dict())
    else:
        _print_report(report)
    return EXIT_ERROR if report.failed else EXIT_OK


def _print_report(report: MigrationReport) -> None:
    if not report.found:
        print(f"no Pyncette 1.x data found at {report.where}: nothing to migrate")
        return
    print(f"{'dry run: ' if report.dry_run else ''}1.x data at {report.where}")
    _print_table(
        ["TASK", "MIGRATED", "ALREADY PRESENT", "FAILED"],
        ([name, str(t.migrated), str(t.already_present), str(t.failed)] for name, t in sorted(report.tasks.items())),
    )
    for name, task in sorted(report.tasks.items()):
        for reason in task.reasons:
            print(f"failed ({name}): {reason}")
    if report.backup_dropped:
        print("the 1.x backup was dropped")
    elif not report.dry_run:
        print("the 1.x data is kept as a backup (drop it with --drop-1x-backup once you are satisfied)")


# -------------------------------------------------------------------------------------------------
# Argument parsing and the entry point
# -------------------------------------------------------------------------------------------------


def _backend_arguments(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--backend",
        metavar="NAME",
        default=default,
        help="backend to use instead of the app's (default: $PYNCETTE_BACKEND, else the app's own)",
    )
    parser.add_argument(
        "-o",
        "--option",
        metavar="KEY=VALUE",
        action="append",
        default=default,
        help="backend option, e.g. -o redis_url=redis://host:6379/0; repeatable; overrides $PYNCETTE_<KEY>",
    )
    parser.add_argument(
        "--event-loop",
        choices=("asyncio", "trio"),
        default=argparse.SUPPRESS if suppress else "asyncio",
        help="event loop to run on (default: asyncio)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pyncette`` command."""
    parser = argparse.ArgumentParser(
        prog="pyncette",
        description="Run Pyncette apps and manage their tasks.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"pyncette {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(commands)
    _add_backends(commands)
    _add_tasks(commands)
    _add_migrate(commands)
    _add_dashboard(commands)
    return parser


Commands = Any  # argparse's subparsers action (its type is private)


def _add_run(commands: Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run an app",
        description="Run an app like app.main() does: logging to stdout, graceful shutdown on the first "
        "SIGINT/SIGTERM, cancellation and exit status 1 on the second.",
    )
    run.add_argument("app", metavar="MODULE:APP", help="module (or .py file) and app object, e.g. myproject.tasks:app")
    _backend_arguments(run, suppress=False)
    run.add_argument(
        "--log-level", metavar="LEVEL", default=None, help="DEBUG, INFO, WARNING, ... (default: $LOG_LEVEL or INFO)"
    )
    run.add_argument("--seconds", type=float, metavar="N", default=None, help="stop gracefully after N seconds")
    run.add_argument(
        "--dashboard",
        metavar="HOST:PORT",
        nargs="?",
        const="127.0.0.1:8765",
        default=None,
        help="also serve the dashboard (pyncette[dashboard]) on HOST:PORT (default 127.0.0.1:8765)",
    )
    run.add_argument(
        "--dashboard-actions", action="store_true", help="allow pause, resume, run now and unschedule from the page"
    )
    _token_env_argument(run)
    run.set_defaults(handler=cmd_run)


def _token_env_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-env",
        metavar="NAME",
        default=None,
        help="environment variable holding the actions token (default: PYNCETTE_DASHBOARD_TOKEN)",
    )


def _add_dashboard(commands: Commands) -> None:
    board = commands.add_parser(
        "dashboard",
        help="serve the web dashboard of an app",
        description="Serve the web dashboard of an app (pyncette[dashboard]): its storage is opened without "
        "running the app. Read-only unless --actions; actions need a token in an environment variable.",
    )
    board.add_argument("app", metavar="MODULE:APP", help="module (or .py file) and app object")
    board.add_argument(
        "--bind", metavar="HOST:PORT", default="127.0.0.1:8765", help="address to listen on (default 127.0.0.1:8765)"
    )
    board.add_argument("--actions", action="store_true", help="allow pause, resume, run now and unschedule")
    _token_env_argument(board)
    board.add_argument("--title", metavar="TEXT", default=None, help="shown in the page header")
    _backend_arguments(board, suppress=False)
    board.add_argument("--log-level", metavar="LEVEL", default=None, help="DEBUG, INFO, WARNING, ... (default: INFO)")
    board.set_defaults(handler=cmd_dashboard)


def _add_backends(commands: Commands) -> None:
    listing = commands.add_parser(
        "backends",
        help="list installed backends",
        description="List installed backends with their options (type, default), and broken plugins.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_backends)


def _add_tasks(commands: Commands) -> None:
    common = _tasks_common_options()
    tasks = commands.add_parser(
        "tasks",
        parents=[common],
        help="inspect and manage tasks: instances, pauses, runs now, pruning",
        description="Inspect and manage the tasks of an app in its storage (the app is not run): dynamic "
        "instances, pauses, runs triggered now, records of removed tasks.",
    )
    tasks.add_argument("app", metavar="MODULE:APP", help="module (or .py file) and app object")
    actions = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, handler: Callable[[argparse.Namespace], int], help: str, *, instance: bool = True) -> Any:
        sub = actions.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".")
        sub.add_argument("template", help="dynamic task name")
        if instance:
            sub.add_argument("instance", help="instance name")
        sub.set_defaults(handler=handler)
        return sub

    list_ = action("list", cmd_tasks_list, "list the instances of a template", instance=False)
    list_.add_argument("--limit", type=int, metavar="N", default=None, help="show at most N instances")
    action("show", cmd_tasks_show, "show one instance")

    def control(name: str, handler: Callable[[argparse.Namespace], int], help: str, *, instance: bool = True) -> Any:
        sub = actions.add_parser(name, parents=[common], help=help, description=help[0].upper() + help[1:] + ".")
        sub.add_argument("task", help="task or dynamic template name")
        if instance:
            sub.add_argument("instance", nargs="?", default=None, help="instance name (dynamic templates)")
        sub.set_defaults(handler=handler)
        return sub

    describe = control("describe", cmd_tasks_describe, "show a task or an instance, its pause and its next runs")
    describe.add_argument("--next", type=int, metavar="N", default=5, help="how many next runs (default 5)")
    _pause_arguments(
        control("pause", cmd_tasks_pause, "pause a task, a template, an instance or a prefix, in every process")
    )
    resume = control("resume", cmd_tasks_resume, "remove the pause stored with the same arguments")
    resume.add_argument("--prefix", metavar="TEXT", help="the prefix given to pause")
    control("pauses", cmd_tasks_pauses, "list the pauses of a task or template", instance=False)
    control("run", cmd_tasks_run, "run a task or instance once now, keeping its schedule (exit status 3: running)")
    _add_tasks_prune(actions, common)
    _schedule_arguments(
        action("schedule", cmd_tasks_schedule, "create or update an instance (an existing one keeps the sooner run)")
    )
    action("unschedule", cmd_tasks_unschedule, "remove an instance")


def _tasks_common_options() -> argparse.ArgumentParser:
    """The options of `tasks` that its actions share, so that they are accepted before or after the action."""
    common = argparse.ArgumentParser(add_help=False)
    _backend_arguments(common, suppress=True)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    common.add_argument(
        "--log-level", metavar="LEVEL", default=argparse.SUPPRESS, help="log level on stderr (default: WARNING)"
    )
    return common


def _add_tasks_prune(actions: Commands, common: argparse.ArgumentParser) -> None:
    prune = actions.add_parser(
        "prune",
        parents=[common],
        help="list stored records of tasks no longer in the app (--delete removes them)",
        description="List the stored records of static tasks and templates that are no longer in the app's "
        "code; with --delete, remove them.",
    )
    prune.add_argument("--delete", action="store_true", help="delete them (default: only list)")
    prune.set_defaults(handler=cmd_tasks_prune)


def _add_migrate(commands: Commands) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="convert a Pyncette 1.x store in place",
        description="Convert the storage a Pyncette 1.x app used (same options) to the 2.x layout, keeping "
        "the 1.x data as a backup. Stop the 1.x workers first. Running it again changes nothing.",
    )
    migrate.add_argument("app", metavar="MODULE:APP", help="module (or .py file) and app object")
    migrate.add_argument("--from-1x", action="store_true", help="migrate from the Pyncette 1.x layout")
    migrate.add_argument("--dry-run", action="store_true", help="report what would be migrated; change nothing")
    migrate.add_argument("--force", action="store_true", help="migrate even while 1.x records hold live leases")
    migrate.add_argument(
        "--drop-1x-backup", action="store_true", help="delete the 1.x backup after a migration that failed nothing"
    )
    _backend_arguments(migrate, suppress=False)
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")
    migrate.add_argument("--log-level", metavar="LEVEL", default=None, help="log level on stderr (default: WARNING)")
    migrate.set_defaults(handler=cmd_migrate)


def _pause_arguments(pause: argparse.ArgumentParser) -> None:
    pause.add_argument("--prefix", metavar="TEXT", help="pause the instances whose name starts with TEXT")
    pause.add_argument("--note", metavar="TEXT", help="why (shown by describe and pauses)")
    pause.add_argument("--by", metavar="WHO", help="who pauses (default: user@host)")


def _schedule_arguments(schedule: argparse.ArgumentParser) -> None:
    when = schedule.add_mutually_exclusive_group()
    when.add_argument("--cron", metavar="EXPR", help="cron expression (5 fields, or 6 with seconds last)")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    when.add_argument(
        "--at", metavar="ISO8601", help="run once at this time (without an offset: local time), e.g. 2030-01-01T09:00Z"
    )
    schedule.add_argument("--timezone", metavar="TZ", help="time zone of --cron, e.g. Europe/Dublin")
    schedule.add_argument(
        "--arg",
        metavar="KEY=VALUE",
        action="append",
        help="task argument (context.args); VALUE is parsed as JSON when it can be, else kept as text",
    )
    schedule.add_argument("--force", action="store_true", help="overwrite the instance even while it is running")


def _classify(exc: BaseException) -> tuple[int, str] | None:
    """Exit status and message of an expected error; ``None`` for anything else (a bug: show the traceback)."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, (BackendNotFound, ConfigurationError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, BackendError):
        return EXIT_ERROR, f"storage error: {exc}"
    if isinstance(exc, PyncetteException):
        return EXIT_ERROR, str(exc)
    if isinstance(exc, OSError):
        return EXIT_ERROR, f"{type(exc).__name__}: {exc}"
    return None


def _option_row(option: dict[str, Any]) -> list[str]:
    default = "(required)" if option["required"] else "-" if option["default"] is None else repr(option["default"])
    kind = option["type"] + (", secret" if option["secret"] else "")
    return ["  " + option["name"], kind, default, option["help"]]


def _fail(code: int, message: str) -> int:
    print(f"pyncette: error: {redact(' '.join(message.split()))}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyncette`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return _fail(130, "interrupted")
    except Exception as exc:
        classified = _classify(leaf_exception(exc))
        if classified is None:
            print(redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))), file=sys.stderr)
            return _fail(EXIT_ERROR, f"{type(leaf_exception(exc)).__name__}: {leaf_exception(exc)}")
        return _fail(*classified)


__all__ = ["build_parser", "configure_app", "load_app", "main"]
