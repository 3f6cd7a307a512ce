"""OpenTelemetry tracing: one span per run, in the trace of the call that scheduled the instance.

Install with ``pip install "pyncette[otel]"`` (the OpenTelemetry API; configure an SDK and exporter as
usual), then::

    from pyncette.otel import use_opentelemetry
    use_opentelemetry(app)

Each run gets a span ``pyncette.run <task>`` (kind CONSUMER) with the attributes ``pyncette.task``,
``pyncette.instance`` (dynamic instances), ``pyncette.attempt``, ``pyncette.scheduled_at`` (ISO 8601),
``pyncette.lateness_s`` (start minus scheduled time, on the app's clock) and ``pyncette.outcome``
(``succeeded``, ``failed``, ``timed_out`` or ``cancelled``); a failure records the exception and sets the
span's status to error. When ``ctx.schedule_task`` runs inside a span, the trace context (the configured
propagator's headers) is stored with the instance, and the instance's first run (with its retries) is a
child of that span, in whichever process runs it. The task body runs inside the span, so spans it starts
nest under it.
"""

from __future__ import annotations

from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if not (exc.name or "").startswith("opentelemetry"):
        raise
    from ._install import install_hint

    raise ModuleNotFoundError(f"pyncette.otel needs opentelemetry-api; {install_hint('otel')}", name=exc.name) from exc

from . import __version__
from .app import Pyncette
from .errors import ConfigurationError
from .model import Context, NextFunc


def _capture() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def use_opentelemetry(app: Pyncette, *, tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace every run of ``app`` (see the module docstring); ``tracer_provider`` defaults to the global one."""
    if not isinstance(app, Pyncette):
        raise ConfigurationError(f"invalid app {app!r}: use_opentelemetry needs a pyncette.Pyncette")
    tracer = trace.get_tracer("pyncette", __version__, tracer_provider=tracer_provider)

    async def opentelemetry_middleware(context: Context, call_next: NextFunc) -> None:
        task = context.task
        template = task.template
        attributes: dict[str, Any] = {
            "pyncette.task": template.name if template is not None else task.name,
            "pyncette.attempt": context.attempt,
            "pyncette.scheduled_at": context.scheduled_at.isoformat(),
        }
        if template is not None:
            attributes["pyncette.instance"] = task.name
        clock = context.app_context.clock
        started = clock.now()
        attributes["pyncette.lateness_s"] = (started - context.scheduled_at).total_seconds()
        parent = propagate.extract(context._origin) if context._origin else None
        with tracer.start_as_current_span(
            f"pyncette.run {attributes['pyncette.task']}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            outcome = "cancelled"
            try:
                await call_next()
                outcome = "succeeded"
            except Exception as exc:
                outcome = "failed"
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:200]))
                raise
            finally:
                timeout = task.policies.timeout
                if outcome == "cancelled" and timeout is not None and clock.now() - started >= timeout:
                    outcome = "timed_out"
                    span.set_status(Status(StatusCode.ERROR, f"timed out after {timeout}"))
                span.set_attribute("pyncette.outcome", outcome)

    app.use_middleware(opentelemetry_middleware)
    app.capture_origin = _capture


__all__ = ["use_opentelemetry"]
