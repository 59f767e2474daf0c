"""OpenTelemetry traces across the processes, off unless an OTLP endpoint is configured.

One trace per command: the command API's request span, its send to ``ledger.commands``, the
processor's decision (a span per command, child of the send, carried on in the ``traceparent``
header of every event, credit and follow-up request the decision writes, so the payee's
``ApplyCredit`` is decided in the same trace), the projector's commit of those events and the
``Prefer: wait`` answer. A processor transaction or a projector commit serves many commands:
each has one batch span of its own, linked to every command's span and linked back from them
(OpenTelemetry's messaging conventions for batches), with the ``messaging.kafka.*`` attributes.

Off (no ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_SDK_DISABLED=true``), :func:`setup` returns None, the processes hold None, and their
hot paths test for it once per request, batch or record: no span, header or context object is
made. The exporter and sampler follow OpenTelemetry's own ``OTEL_*`` variables.
"""

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("ledgerline.tracing")

TRACEPARENT = "traceparent"
Headers = list[tuple[str, bytes]]

_propagator = TraceContextTextMapPropagator()


def enabled(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks for traces: an OTLP endpoint is set and the SDK is not disabled."""
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return False
    if (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup(env: Mapping[str, str], process: str) -> "Tracing | None":
    """A process's tracing, exporting to the configured OTLP endpoint over HTTP in batches;
    None when ``env`` does not ask for it. ``OTEL_SERVICE_NAME`` overrides the service name."""
    if not enabled(env):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or f"ledgerline-{process}",
                                "service.namespace": "ledgerline"})
    tracing = Tracing(BatchSpanProcessor(OTLPSpanExporter()), resource=resource)
    log.info("traces go to %s", env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    return tracing


class _TraceIds(logging.Filter):
    """Puts the current span's trace and span id on each log record (``common.logs`` writes them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


def _context(headers: Iterable[tuple[str, bytes]] | None) -> SpanContext | None:
    """The span context a record's ``traceparent`` header names, if any (and valid)."""
    for name, value in headers or ():
        if name == TRACEPARENT:
            try:
                carried = {TRACEPARENT: value.decode("ascii")}
            except UnicodeDecodeError:
                return None
            context = trace.get_current_span(_propagator.extract(carried)).get_span_context()
            return context if context.is_valid else None
    return None


def _headers(span: Span) -> Headers:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, trace.set_span_in_context(span))
    return [(k, v.encode("ascii")) for k, v in carrier.items()]


def _kafka(topic: str, operation: str, group: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"messaging.system": "kafka", "messaging.destination.name": topic,
                                  "messaging.operation.type": operation,
                                  "messaging.operation.name": operation}
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
        attributes["messaging.kafka.consumer.group"] = group
    return attributes


def _record(record: Any) -> dict[str, Any]:
    """Where a consumed record was: partition, offset, key (the older and newer attribute names)."""
    attributes = {"messaging.destination.partition.id": str(record.partition),
                  "messaging.kafka.destination.partition": record.partition,
                  "messaging.kafka.offset": record.offset,
                  "messaging.kafka.message.offset": record.offset}
    if record.key is not None:
        attributes["messaging.kafka.message.key"] = record.key.decode("utf-8", "replace")
    return attributes


class Tracing:
    """A process's tracer (one :class:`TracerProvider`), and the spans the processes make."""

    def __init__(self, processor: SpanProcessor, resource: Resource | None = None) -> None:
        self.provider = TracerProvider(resource=resource or Resource.create({}))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("ledgerline")
        handler_filter = _TraceIds()
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, _TraceIds) for f in handler.filters):
                handler.addFilter(handler_filter)

    def shutdown(self) -> None:
        """Export what is still buffered and stop."""
        self.provider.shutdown()

    @contextmanager
    def serving(self, method: str, route: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """An HTTP request's span (the current span meanwhile), continuing the caller's trace
        when the request carries a ``traceparent`` header."""
        parent = _propagator.extract(headers)
        with self.tracer.start_as_current_span(
                f"{method} {route}", context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route}) as span:
            yield span

    @contextmanager
    def sending(self, topic: str, key: bytes) -> Iterator["Sending"]:
        """A record's send to ``topic``: a producer span whose context goes in the record's
        ``traceparent`` header (:attr:`Sending.headers`)."""
        attributes = _kafka(topic, "send")
        attributes["messaging.kafka.message.key"] = key.decode("utf-8", "replace")
        with self.tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER,
                                               attributes=attributes) as span:
            yield Sending(span)

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """An internal span of the current trace (a ``Prefer: wait``, say)."""
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    def consumer(self, topic: str, group: str) -> "Consumer":
        """Spans of the batches a consumer group's worker processes from ``topic``."""
        return Consumer(self, topic, group)


class Sending:
    def __init__(self, span: Span) -> None:
        self.span = span
        self.headers = _headers(span)

    def delivered(self, metadata: Any) -> None:
        """The broker's acknowledgement: where the record went."""
        self.span.set_attributes({"messaging.destination.partition.id": str(metadata.partition),
                                  "messaging.kafka.destination.partition": metadata.partition,
                                  "messaging.kafka.offset": metadata.offset,
                                  "messaging.kafka.message.offset": metadata.offset})


class Consumer:
    def __init__(self, tracing: Tracing, topic: str, group: str) -> None:
        self.tracing = tracing
        self.topic = topic
        self.group = group

    def batch(self, operation: str, records: Sequence[Any]) -> "Batch":
        """The span of one batch (a transaction, a commit), linked to the span of every record
        that carries one, begun now."""
        links = []
        for record in records:
            context = _context(record.headers)
            if context is not None:
                links.append(Link(context, {"messaging.kafka.offset": record.offset,
                                            "messaging.destination.partition.id": str(record.partition)}))
        attributes = _kafka(self.topic, operation, self.group)
        attributes["messaging.batch.message_count"] = len(records)
        partitions = {r.partition for r in records}
        if len(partitions) == 1:
            (partition,) = partitions
            attributes["messaging.destination.partition.id"] = str(partition)
            attributes["messaging.kafka.destination.partition"] = partition
        span = self.tracing.tracer.start_span(f"{operation} {self.topic}", kind=SpanKind.CONSUMER,
                                              links=links, attributes=attributes)
        return Batch(self, span, operation)


class Batch:
    """One batch's span, and a span per trace its records carry (children of the record's
    sender), each linked to the batch span; all end together, when the batch is done."""

    def __init__(self, consumer: Consumer, span: Span, operation: str) -> None:
        self.consumer = consumer
        self.span = span
        self.operation = operation
        self.children: dict[tuple[int, int], Span] = {}
        self._link = [Link(span.get_span_context())]

    def child(self, record: Any, name: str) -> Headers | None:
        """The span of ``record``'s part in this batch, in the record's trace (one per sending
        span: a second record of the same sender shares it), as headers to carry it on to what
        the record causes. None for a record without trace context."""
        parent = _context(record.headers)
        if parent is None:
            return None
        ids = (parent.trace_id, parent.span_id)
        span = self.children.get(ids)
        if span is None:
            attributes = _kafka(self.consumer.topic, self.operation, self.consumer.group)
            attributes.update(_record(record))
            span = self.children[ids] = self.consumer.tracing.tracer.start_span(
                name, context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
                kind=SpanKind.CONSUMER, links=self._link, attributes=attributes)
        return _headers(span)

    def current(self) -> Any:
        """A context in which the batch span is the current one (its log lines carry its id)."""
        return trace.use_span(self.span, end_on_exit=False, record_exception=False,
                              set_status_on_exception=False)  # end() records the outcome

    def end(self, error: BaseException | None = None) -> None:
        for span in (*self.children.values(), self.span):
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, repr(error)))
            span.end()
