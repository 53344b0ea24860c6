"""OpenTelemetry: a PRODUCER span per published task, a CONSUMER span per execution.

Native instrumentation on `opentelemetry-api` (`pip install "tasker[otel]"`),
a no-op unless the application configures a tracer provider: without one
the API hands out non-recording spans and nothing is stored. Without the
package nothing is imported past the guard below and every function here
returns at once.

`publish <topic>` (PRODUCER) is a child of whatever span is current where
`publish` is called (a web request's); its W3C `traceparent` is written
into the task's row. Each execution runs inside `run <topic>` (CONSUMER)
whose parent is read back from that row, so the trace crosses processes
and machines with the row, never with the broker message; a retry is a new
CONSUMER span under the same parent, hence in the same trace. Attributes
follow the messaging semantic conventions (`messaging.system = "tasker"`,
`messaging.destination.name`, `messaging.message.id`) plus
`tasker.task_id`, `tasker.attempt` and `tasker.queue_wait_s` (seconds from
publish to this start). A failed or retried run sets status ERROR, and
the exception `exec` raised is recorded on the span when it ran in this
process (a process-isolated run's child records none: its error text is
the status description).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from tasker.outcome import Decision

TRACER = "tasker"
SYSTEM = "tasker"


class Execution(Protocol):
    """What a span needs of an execution (`execute.Started` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def traceparent(self) -> str | None: ...
    @property
    def queue_wait_s(self) -> float | None: ...


def _base(topic: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }


class Publishing:
    """The PRODUCER spans of rows about to be inserted: entering stores each
    span's `traceparent` in its row, `inserted(ids)` names the tasks, and
    leaving ends the spans (ERROR when the insert raised)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = rows
        self.spans: list[Any] = []

    def __enter__(self) -> Publishing:
        if trace is None or not self.rows:
            return self
        if not _configured() and not trace.get_current_span().get_span_context().is_valid:
            return self  # no provider and no trace around: the spans would be nothing
        tracer = trace.get_tracer(TRACER)
        w3c = TraceContextTextMapPropagator()
        for row in self.rows:
            span = tracer.start_span(
                f"publish {row['topic']}", kind=trace.SpanKind.PRODUCER,
                attributes=_base(row["topic"], "publish"),
            )  # fmt: skip
            if not span.get_span_context().is_valid:
                # No provider and no trace around: every row's span would be
                # the same nothing, so a large batch pays for one, not all.
                span.end()
                return self
            carrier: dict[str, str] = {}
            w3c.inject(carrier, context=trace.set_span_in_context(span))
            row["traceparent"] = carrier.get("traceparent")
            self.spans.append(span)
        return self

    def inserted(self, ids: Sequence[int]) -> None:
        """The ids the rows got, in order."""
        # strict=False: with no spans (not traced) there is nothing to name.
        for span, task_id in zip(self.spans, ids, strict=False):
            span.set_attribute("messaging.message.id", str(task_id))
            span.set_attribute("tasker.task_id", task_id)

    def __exit__(self, _t: object, exc: BaseException | None, _tb: object) -> None:
        for span in self.spans:
            if exc is not None and trace is not None:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            span.end()


@contextlib.contextmanager
def executing(task: Execution) -> Iterator[Callable[[Decision], None]]:
    """Run the block inside the CONSUMER span of `task`'s execution (the
    current span in this thread or coroutine, so `exec`'s own spans are its
    children); the block calls the yielded function with the decision."""
    if trace is None or (not task.traceparent and not _configured()):
        # Nothing would record the span and no trace is carried on: a no-op
        # span still costs a tracer, a context and its attach per task.
        yield _ignore
        return
    parent = None
    if task.traceparent:
        parent = TraceContextTextMapPropagator().extract({"traceparent": task.traceparent})
    attributes = {
        **_base(task.topic, "process"),
        "messaging.message.id": str(task.id),
        "tasker.task_id": task.id,
        "tasker.attempt": task.attempts,
    }
    if task.queue_wait_s is not None:
        attributes["tasker.queue_wait_s"] = task.queue_wait_s
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"run {task.topic}", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes=attributes, record_exception=False, set_status_on_exception=False,
    ) as span:  # fmt: skip
        yield lambda decision: _decided(span, decision)


def _configured() -> bool:
    """Whether the application set a tracer provider (until it does, the
    API hands out a proxy whose spans record nothing)."""
    assert trace is not None
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _ignore(_decision: Decision) -> None:
    return None


def _decided(span: Any, decision: Decision) -> None:
    assert trace is not None
    span.set_attribute("tasker.outcome", decision.target.value)
    if decision.err.strip() and decision.transition.value in ("retry", "fail"):
        first = decision.err.strip().splitlines()[0]
        # The errlog's "[attempt N on host at time] " is on the span already.
        span.set_status(trace.Status(trace.StatusCode.ERROR, first.split("] ", 1)[-1]))


def record_exception(exc: BaseException) -> None:
    """Record what `exec` raised on the current span (the execution's)."""
    if trace is not None:
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
