"""Tracing's switch and its trace ids in log lines (the spans themselves:
tests/integration/test_tracing.py)."""

import json
import logging

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.logs import JsonFormatter
from common.tracing import Tracing, enabled


def test_tracing_is_off_unless_an_endpoint_is_configured() -> None:
    assert not enabled({})
    assert enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert not enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    assert not enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"})


def test_log_lines_carry_the_current_trace_id() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        tracing = Tracing(SimpleSpanProcessor(InMemorySpanExporter()))
        record = logging.LogRecord("ledgerline.test", logging.INFO, __file__, 1, "inside", None, None)
        with tracing.span("work") as span:
            handler.filter(record)
            line = json.loads(handler.format(record))
        assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
        assert line["span_id"] == format(span.get_span_context().span_id, "016x")
        outside = logging.LogRecord("ledgerline.test", logging.INFO, __file__, 1, "outside", None, None)
        handler.filter(outside)
        assert "trace_id" not in json.loads(handler.format(outside))
        tracing.shutdown()
    finally:
        root.removeHandler(handler)
