"""OpenTelemetry: a span per run, parented on the span that scheduled the instance (in-memory exporter)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import pyncette
from pyncette import Context, Pyncette, Retry
from pyncette.otel import use_opentelemetry
from pyncette.testing import VirtualClock, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_run_span_is_a_child_of_the_scheduling_span(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    app = Pyncette(backend="memory")
    use_opentelemetry(app, tracer_provider=provider)
    tracer = provider.get_tracer("test")

    @app.dynamic_task(retry=Retry(attempts=2, backoff=timedelta(seconds=1)))
    async def send(context: Context) -> None:
        if context.attempt == 1:
            raise ConnectionError("smtp down")

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        with tracer.start_as_current_span("http request") as request:
            await ctx.schedule_task(send, "mail-1", execute_at=clock.now() + timedelta(seconds=5))
        await clock.advance(timedelta(seconds=10))
    runs = [s for s in exporter.get_finished_spans() if s.name == "pyncette.run send"]
    assert [s.attributes["pyncette.attempt"] for s in runs] == [1, 2]
    assert [s.attributes["pyncette.outcome"] for s in runs] == ["failed", "succeeded"]
    assert runs[0].status.status_code is StatusCode.ERROR and runs[0].events[0].name == "exception"
    assert runs[1].attributes["pyncette.lateness_s"] == 1.0  # the retry starts 1 s after the scheduled time
    assert runs[0].attributes["pyncette.instance"] == "mail-1"
    for run in runs:  # both tries belong to the request's trace, whichever process runs them
        assert run.context.trace_id == request.get_span_context().trace_id
        assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id


async def test_static_task_spans_and_timeouts(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    app = Pyncette(backend="memory")
    use_opentelemetry(app, tracer_provider=provider)

    @app.task(interval=timedelta(seconds=10), timeout=timedelta(seconds=3))
    async def slow(context: Context) -> None:
        await pyncette.sleep(5)

    clock = VirtualClock()
    async with app.create(clock=clock) as ctx, running(ctx):
        await clock.advance(timedelta(seconds=14))
    [run] = exporter.get_finished_spans()
    assert run.parent is None  # a static task's run starts its own trace
    assert run.attributes["pyncette.outcome"] == "timed_out" and run.status.status_code is StatusCode.ERROR
    assert "pyncette.instance" not in run.attributes


async def test_no_capture_without_a_current_span(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, _ = spans
    app = Pyncette(backend="memory")
    use_opentelemetry(app, tracer_provider=provider)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create(clock=VirtualClock()) as ctx:
        await ctx.schedule_task(job, "x", interval=timedelta(minutes=1))
        record = await ctx.repository.get(*job.instance_key("x"))
    assert record is not None and record.state is None  # nothing to store: no span was current


def test_refuses_something_else_than_an_app() -> None:
    with pytest.raises(pyncette.errors.ConfigurationError, match="invalid app 3"):
        use_opentelemetry(3)  # type: ignore[arg-type]
