"""What the runtime knows of the app: a frozen description taken when the app context is created."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from ..events import Listeners
from ..model import MiddlewareFunc, TickListener
from ..task import DynamicTask, StaticTask


@dataclass(frozen=True)
class AppDescription:
    """The app's settings and tasks as the runtime uses them; later changes to the app do not reach a running
    context (a task's ``enabled`` flag excepted, which the loop reads on every pass, as in Pyncette 1.x)."""

    poll_interval: timedelta
    concurrency_limit: int
    batch_size: int
    #: How long a graceful shutdown waits for running tasks and their commits (``None``: no bound).
    drain_timeout: timedelta | None
    static_tasks: tuple[StaticTask, ...]
    templates: tuple[DynamicTask, ...]
    middlewares: tuple[MiddlewareFunc, ...] = ()
    tick_listeners: tuple[TickListener, ...] = ()
    #: The listeners of run events (``app.on``).
    listeners: Listeners = field(default_factory=Listeners)
    #: Returns the trace propagation headers of the current call, stored with each new instance
    #: (``None``: nothing is captured; set by :func:`pyncette.otel.use_opentelemetry`).
    capture_origin: Callable[[], dict[str, str]] | None = None
    #: Most task bodies running at once (1 with Pyncette 1.x's SynchronousExecutor).
    body_limit: int | None = None
    #: Storage parent -> the template whose instances live there (every enabled partition).
    template_of_parent: dict[str, DynamicTask] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parents = {parent: template for template in self.templates for parent in template.parents()}
        object.__setattr__(self, "template_of_parent", parents)


__all__ = ["AppDescription"]
