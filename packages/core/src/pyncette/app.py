"""The :class:`Pyncette` app: task registration, configuration and the process entry point."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any, TypeVar, overload

from . import backends, process
from .abc import Backend, Capabilities, Repository
from .clock import Clock
from .errors import ConfigurationError
from .events import Event, Listener, Listeners, check_event_type
from .executor import DefaultExecutor, body_limit
from .model import MiddlewareFunc, TaskFunc, TickListener, validate_context_names
from .redaction import get_logger
from .runtime import PyncetteContext
from .runtime.description import AppDescription
from .task import DynamicTask, StaticTask, Task

E = TypeVar("E", bound=Event)

logger = get_logger("pyncette")

#: How long a graceful shutdown waits for running tasks and their commits, by default.
DEFAULT_DRAIN_TIMEOUT = timedelta(minutes=5)

RepositoryFactory = Callable[..., AbstractAsyncContextManager[Repository]]
FixtureFunc = Callable[[PyncetteContext], AsyncIterator[Any]]
F = TypeVar("F", bound=FixtureFunc)


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigurationError(f"invalid {name} {value!r}: must be an integer >= 1")
    return value


class Pyncette:
    """A scheduler app: declare tasks with the decorators, then ``async with app.create() as ctx: await ctx.run()``.

    Args:
        repository_factory: a backend (e.g. ``pyncette.redis.redis_repository``)
            or any callable taking the backend options and returning an async
            context manager that yields a :class:`~pyncette.abc.Repository`.
        executor_cls: Pyncette 1.x's choice of executor (:mod:`pyncette.executor`):
            ``DefaultExecutor`` (the default) or ``SynchronousExecutor``, which runs one task body at a time.
        backend: the entry-point name of an installed backend (``"redis"``, ...),
            instead of ``repository_factory``. With neither, ``$PYNCETTE_BACKEND``
            is used, else ``sqlite`` when ``sqlite_*`` options are given, else ``memory``.
        poll_interval: the longest the loop sleeps before looking for new work.
        concurrency_limit: the most task bodies running at once; no more work is claimed than fits.
        batch_size: the most dynamic instances claimed in one storage call.
        drain_timeout: how long a graceful shutdown waits for running tasks and their commits (5 minutes
            by default; ``None``: no bound). When it passes, :meth:`PyncetteContext.run` raises
            :class:`~pyncette.runtime.ShutdownTimeout` (``app.main()`` exits with status 1) after logging
            what was left without a stored outcome.
        **backend_options: options of the backend, prefixed with its name (``redis_url=...``).
    """

    def __init__(
        self,
        repository_factory: RepositoryFactory | None = None,
        executor_cls: type = DefaultExecutor,
        poll_interval: timedelta = timedelta(seconds=1),
        concurrency_limit: int = 100,
        batch_size: int = 100,
        *,
        backend: str | None = None,
        drain_timeout: timedelta | None = DEFAULT_DRAIN_TIMEOUT,
        **backend_options: Any,
    ) -> None:
        if repository_factory is not None and backend is not None:
            raise ConfigurationError("pass either repository_factory= or backend=, not both")
        if not isinstance(poll_interval, timedelta) or poll_interval <= timedelta(0):
            raise ConfigurationError(f"invalid poll_interval {poll_interval!r}: must be a positive timedelta")
        self.repository_factory = repository_factory
        self.executor_cls = executor_cls
        self.body_limit = body_limit(executor_cls)
        self.backend_name = backend
        self.poll_interval = poll_interval
        self.concurrency_limit = _positive_int("concurrency_limit", concurrency_limit)
        self.batch_size = _positive_int("batch_size", batch_size)
        if drain_timeout is not None and (not isinstance(drain_timeout, timedelta) or drain_timeout < timedelta(0)):
            raise ConfigurationError(f"invalid drain_timeout {drain_timeout!r}: must be a timedelta >= 0 or None")
        self.drain_timeout = drain_timeout
        self.backend_options = backend_options
        self._check_option_names()
        self.tasks: list[Task] = []
        self.fixtures: dict[str, FixtureFunc] = {}
        self.middlewares: list[MiddlewareFunc] = []
        self.repository_wrappers: list[Callable[[Repository], Repository]] = []
        self.tick_listeners: list[TickListener] = []
        self.event_listeners: list[tuple[type[Event], Listener]] = []
        #: Captures trace propagation headers when an instance is scheduled (see :mod:`pyncette.otel`).
        self.capture_origin: Callable[[], dict[str, str]] | None = None

    # -- declaring tasks ---------------------------------------------------------------------------

    def _register(self, task: Task) -> None:
        if any(t.name == task.name for t in self.tasks):
            raise ConfigurationError(f"duplicate task name {task.name!r}: give each task a unique name=")
        self.tasks.append(task)

    def task(self, **options: Any) -> Callable[[TaskFunc], StaticTask]:
        """Declare a static task: ``@app.task(schedule="*/5 * * * *")`` or ``interval=timedelta(...)``."""

        def decorator(func: TaskFunc) -> StaticTask:
            task = StaticTask(_unwrap(func), **options)
            self._register(task)
            return task

        return decorator

    def dynamic_task(self, **options: Any) -> Callable[[TaskFunc], DynamicTask]:
        """Declare a dynamic task template; instances are created with ``ctx.schedule_task``."""

        def decorator(func: TaskFunc) -> DynamicTask:
            task = DynamicTask(_unwrap(func), **options)
            self._register(task)
            return task

        return decorator

    def partitioned_task(self, partition_count: int = 8, **options: Any) -> Callable[[TaskFunc], DynamicTask]:
        """Declare a dynamic template whose instances are spread over ``partition_count`` shards.

        ``partition_selector(partition_count, instance_name) -> shard`` (SHA-1 by
        default) must be stable; ``enabled_partitions=[...]`` limits which shards
        this process polls.
        """

        def decorator(func: TaskFunc) -> DynamicTask:
            task = DynamicTask(_unwrap(func), partition_count=partition_count, **options)
            self._register(task)
            return task

        return decorator

    def fixture(self, name: str | None = None) -> Callable[[F], F]:
        """Declare a fixture: an async generator taking the app context; its value becomes ``context.<name>``."""

        def decorator(func: F) -> F:
            fixture_name = name or getattr(func, "__name__", None)
            if not isinstance(fixture_name, str):
                raise ConfigurationError(f"cannot tell the name of fixture {func!r}: pass name=")
            self.use_fixture(fixture_name, func)
            return func

        return decorator

    def use_fixture(self, name: str, func: FixtureFunc) -> None:
        """Register ``func`` as the fixture ``name``."""
        validate_context_names([name])
        if not callable(func):
            raise ConfigurationError(f"fixture {name!r} must be an async generator function, got {func!r}")
        if name in self.fixtures:
            raise ConfigurationError(f"duplicate fixture name {name!r}")
        self.fixtures[name] = func

    def middleware(self, func: MiddlewareFunc) -> MiddlewareFunc:
        """Declare a middleware ``async def mw(context, next)``; middlewares run in declaration order."""
        self.use_middleware(func)
        return func

    def use_middleware(self, func: MiddlewareFunc) -> None:
        """Register a middleware."""
        if not callable(func):
            raise ConfigurationError(f"a middleware must be an async function (context, next), got {func!r}")
        self.middlewares.append(func)

    def use_repository_wrapper(self, wrapper: Callable[[Repository], Repository]) -> None:
        """Wrap the opened repository (e.g. to time or count storage calls); applied in registration order."""
        self.repository_wrappers.append(wrapper)

    @overload
    def on(self, kind: type[E], listener: None = None) -> Callable[[Callable[[E], None]], Callable[[E], None]]: ...

    @overload
    def on(self, kind: type[E], listener: Callable[[E], None]) -> Callable[[E], None]: ...

    def on(self, kind: type[E], listener: Callable[[E], None] | None = None) -> Any:
        """Call ``listener(event)`` for every run event of type ``kind`` (:mod:`pyncette.events`; ``Event``:
        all of them). Usable as a decorator: ``@app.on(Failed)``."""
        check_event_type(kind)

        def add(func: Callable[[E], None]) -> Callable[[E], None]:
            if not callable(func):
                raise ConfigurationError(f"invalid event listener {func!r}: must be callable")
            self.event_listeners.append((kind, func))
            return func

        return add if listener is None else add(listener)

    def use_tick_listener(self, listener: TickListener) -> None:
        """Call ``listener(ctx, seconds)`` after every scheduler tick with the tick's duration."""
        self.tick_listeners.append(listener)

    def configure(
        self,
        *,
        backend: str | None = None,
        repository_factory: RepositoryFactory | None = None,
        **backend_options: Any,
    ) -> Pyncette:
        """Override the backend and its options after construction (the ``pyncette`` CLI uses this).

        ``backend=`` (a name) or ``repository_factory=`` replaces whichever of the two the app was
        built with; ``backend_options`` are merged over the existing ones. Returns the app.
        """
        if repository_factory is not None and backend is not None:
            raise ConfigurationError("pass either repository_factory= or backend=, not both")
        if backend is not None:
            self.backend_name, self.repository_factory = backend, None
        elif repository_factory is not None:
            self.backend_name, self.repository_factory = None, repository_factory
        self.backend_options.update(backend_options)
        self._check_option_names()
        return self

    # -- running -----------------------------------------------------------------------------------

    def _check_option_names(self) -> None:
        backends.check_option_names(self.backend_options, self.repository_factory)

    def resolve_backend(self) -> tuple[RepositoryFactory, Capabilities]:
        """The repository factory to use and what it declares it can do.

        Without ``repository_factory=`` or ``backend=``: ``$PYNCETTE_BACKEND``, else ``sqlite`` when
        ``sqlite_*`` options are given, else ``memory``.
        """
        return backends.choose(self.repository_factory, self.backend_name, self.backend_options)

    def describe(self) -> AppDescription:
        """The app's settings and tasks as a context created now uses them."""
        return AppDescription(
            poll_interval=self.poll_interval,
            concurrency_limit=self.concurrency_limit,
            batch_size=self.batch_size,
            drain_timeout=self.drain_timeout,
            static_tasks=tuple(t for t in self.tasks if isinstance(t, StaticTask)),
            templates=tuple(t for t in self.tasks if isinstance(t, DynamicTask)),
            middlewares=tuple(self.middlewares),
            tick_listeners=tuple(self.tick_listeners),
            listeners=Listeners(self.event_listeners),
            capture_origin=self.capture_origin,
            body_limit=self.body_limit,
        )

    @contextlib.asynccontextmanager
    async def create(self, *, clock: Clock | None = None, fixtures: bool = True) -> AsyncIterator[PyncetteContext]:
        """Open storage and set up fixtures; yields the context to ``run()``. Fixtures are torn down in reverse.

        ``fixtures=False`` skips them: for tools that only inspect or manage storage (``pyncette tasks``).
        """
        factory, capabilities = self.resolve_backend()
        backends.warn_about_foreign_options(factory, self.backend_options)
        if capabilities.asyncio_only:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise ConfigurationError(
                    f"backend {getattr(factory, 'name', factory)!r} only works on asyncio, not on this event loop"
                ) from None
        opened = (
            factory.open(factory.settings(self.backend_options))
            if isinstance(factory, Backend)
            else factory(**self.backend_options)
        )
        async with opened as repository, contextlib.AsyncExitStack() as stack:
            for wrap in self.repository_wrappers:
                repository = wrap(repository)
            ctx = PyncetteContext(self, self.describe(), repository, clock or Clock(), {})
            for name, fixture in list(self.fixtures.items()) if fixtures else []:
                value = await stack.enter_async_context(contextlib.asynccontextmanager(fixture)(ctx))
                ctx.add_to_context(name, value)
            yield ctx

    def main(self) -> None:
        """Run the app as a process: logging to stdout (level from ``$LOG_LEVEL``), graceful shutdown on
        SIGINT/SIGTERM, cancellation on a second signal (exit status 1).

        An error the user must fix (bad configuration, storage unreachable at start) is printed as one
        line and exits with status 1; anything else is a bug and shows its traceback.
        """
        process.main(self.run_until_signalled)

    async def run_until_signalled(self, seconds: float | None = None) -> None:
        """Run until SIGINT/SIGTERM (or ``seconds`` elapse): the first stops gracefully, the second cancels
        running tasks and makes this raise :class:`~pyncette.errors.ForcedShutdown`."""
        await process.run_until_signalled(self.create, seconds)


def _unwrap(func: Any) -> TaskFunc:
    # Several decorators may be stacked on one coroutine (each with its own name=).
    while isinstance(func, Task):
        func = func.func
    if not callable(func):
        raise ConfigurationError(f"a task must be an async function, got {func!r}")
    result: TaskFunc = func
    return result


__all__ = ["Pyncette"]
