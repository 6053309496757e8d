"""OpenTelemetry for Mimir: the current trace's ids (for logs and job records).

Tracing is configured by the standard ``OTEL_*`` environment variables and is off unless
they ask for it; without the SDK every call here is a cheap no-op on the API's default
(non-recording) span.
"""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_span_id", "current_trace_id"]


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, ``None`` outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_span_id() -> str | None:
    """The current span's id as 16 hex digits, ``None`` outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return format(context.span_id, "016x") if context.is_valid else None
