"""OpenTelemetry for Mimir: tracing set up from the standard ``OTEL_*`` environment, the
W3C ``traceparent`` a job carries, and the spans the queue, the worker and the engine open.

Tracing is off unless the environment asks for it (:func:`tracing_requested`): then
:func:`configure_tracing` (called once by ``mimir server`` and ``mimir worker``) installs
the SDK's ``TracerProvider`` with the OTLP/HTTP protobuf exporter in a batch processor.
The SDK reads its own variables: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``.

Off (the default), every helper here returns at once: no span, no context switch, no
trace ids made (a job enqueued untraced carries no ``traceparent``). The SDK is an
optional extra (``pip install mimir-aip[tracing]``); asked for without it, one warning
and the process runs untraced. Only opentelemetry-api is imported unless configured.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "configure_tracing",
    "current_span_id",
    "current_trace_id",
    "extract",
    "inject",
    "record_outcome",
    "record_span",
    "shutdown_tracing",
    "span",
    "trace_id_of",
    "traceparent",
    "tracing_enabled",
    "tracing_requested",
]

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
#: The tracer once :func:`configure_tracing` succeeded; ``None``: tracing is off.
_tracer: trace.Tracer | None = None
_provider: Any = None
#: The sampler is parent-based (every ``OTEL_TRACES_SAMPLER`` but ``always_on``/``off`` and
#: ``traceidratio``): below an unsampled span nothing is recorded, so :func:`span` skips
#: the SDK there and only carries the context on (what keeps 1 % sampling cheap).
_parent_based = False
#: What a disabled :func:`span` answers (never records; ``is_recording()`` is False).
_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)

Attributes = Mapping[str, str | int | float | bool]


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, ``None`` outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_span_id() -> str | None:
    """The current span's id as 16 hex digits, ``None`` outside a valid span."""
    context = trace.get_current_span().get_span_context()
    return format(context.span_id, "016x") if context.is_valid else None


# -- configuration ---------------------------------------------------------------------


def _exporters(env: Mapping[str, str]) -> list[str]:
    """The trace exporters the environment names (``OTEL_TRACES_EXPORTER``), or ``otlp``
    when only an OTLP endpoint is set; empty when tracing is not asked for."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [
        name.strip().lower()
        for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    if names:
        return [name for name in names if name in ("otlp", "console")]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces: ``OTEL_SDK_DISABLED`` is not ``true`` and
    ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console`` (``none``: off), or, that unset,
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set."""
    return bool(_exporters(os.environ if env is None else env))


def tracing_enabled() -> bool:
    """Whether this process records spans (:func:`configure_tracing` succeeded)."""
    return _tracer is not None


def configure_tracing(service_name: str) -> bool:
    """Set up tracing for this process when the environment asks for it; answers whether
    it is on. ``service_name`` is the default of ``OTEL_SERVICE_NAME`` (``mimir-server``,
    ``mimir-worker``). Safe to call more than once (the first set-up stays)."""
    global _tracer, _provider, _parent_based
    if _tracer is not None:
        return True
    exporters = _exporters(os.environ)
    if not exporters:
        return False
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased

        if "otlp" in exporters:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        logger.warning(
            "tracing is configured (OTEL_* environment) but the OpenTelemetry SDK is not "
            "installed (%s): running without traces; install mimir-aip[tracing]",
            exc,
        )
        return False
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if "otlp" in exporters and protocol not in ("", "http/protobuf"):
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: traces go as http/protobuf",
            protocol,
        )
    # The SDK reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the fallback.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # The sampler from OTEL_TRACES_SAMPLER(_ARG); the batch from OTEL_BSP_*; the
    # exporter's endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for name in exporters:
        exporter: SpanExporter = OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    _parent_based = isinstance(provider.sampler, ParentBased)
    _tracer = provider.get_tracer("mimir")
    atexit.register(shutdown_tracing)
    logger.info(
        "tracing on: service %s, exporter %s, sampler %s",
        resource.attributes.get(SERVICE_NAME),
        ",".join(exporters),
        provider.sampler.get_description(),
    )
    return True


def shutdown_tracing() -> None:
    """Export what is buffered and stop the exporter (on a graceful stop; idempotent)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.shutdown()


# -- propagation ------------------------------------------------------------------------


def inject(carrier: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``carrier`` (HTTP
    headers …); nothing when tracing is off."""
    if _tracer is not None:
        _PROPAGATOR.inject(carrier)


def extract(carrier: Mapping[str, str]) -> otel_context.Context | None:
    """The context a carrier's ``traceparent`` names (``None`` when tracing is off)."""
    if _tracer is None:
        return None
    return _PROPAGATOR.extract(carrier)


def traceparent() -> str | None:
    """The current span's W3C ``traceparent`` header value, ``None`` when tracing is off
    or no span is current."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _parent_context(value: str) -> SpanContext | None:
    """The span context a ``traceparent`` value names (version 00), ``None`` if invalid."""
    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        context = SpanContext(
            trace_id=int(parts[1], 16),
            span_id=int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3], 16) & 1),
        )
    except ValueError:
        return None
    return context if context.is_valid else None


def trace_id_of(value: str | None) -> str | None:
    """The trace id (32 hex digits) of a ``traceparent`` value, ``None`` if it has none."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1].lower()


# -- spans ------------------------------------------------------------------------------


def span(
    name: str,
    *,
    parent: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Callable[[], Attributes] | None = None,
    start_time: int | None = None,
) -> AbstractContextManager[Span]:
    """A span made current for the ``with`` block (an exception ends it in error and
    is recorded). ``parent``: a ``traceparent`` to continue (else the current span);
    ``attributes`` is called only when the span records. Off: a shared no-op."""
    tracer = _tracer
    if tracer is None:
        return _NO_SPAN
    if _parent_based:
        # Below an unsampled span nothing records: carry the context on (for inject), no
        # span made.
        if parent:
            remote = _parent_context(parent)
            if remote is not None and not remote.trace_flags.sampled:
                return trace.use_span(NonRecordingSpan(remote), end_on_exit=False)
        else:
            current = trace.get_current_span()
            context = current.get_span_context()
            if context.is_valid and not context.trace_flags.sampled:
                return nullcontext(current)
    return _span(tracer, name, parent, kind, attributes, start_time)


@contextlib.contextmanager
def _span(
    tracer: trace.Tracer,
    name: str,
    parent: str | None,
    kind: SpanKind,
    attributes: Callable[[], Attributes] | None,
    start_time: int | None,
) -> Iterator[Span]:
    context = _context_of(parent) if parent else None
    with tracer.start_as_current_span(
        name, context=context, kind=kind, start_time=start_time
    ) as current:
        if attributes is not None and current.is_recording():
            current.set_attributes(attributes())
        yield current


def _context_of(parent: str) -> otel_context.Context | None:
    remote = _parent_context(parent)
    return None if remote is None else trace.set_span_in_context(NonRecordingSpan(remote))


def record_span(
    name: str,
    start_time: int,
    end_time: int,
    *,
    parent: str | None = None,
    attributes: Callable[[], Attributes] | None = None,
) -> None:
    """A span that already happened (``start_time``/``end_time`` in ns since the epoch),
    such as the wait in the queue; nothing when tracing is off."""
    tracer = _tracer
    if tracer is None:
        return
    remote = _parent_context(parent) if parent else None
    if _parent_based and remote is not None and not remote.trace_flags.sampled:
        return
    context = trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None
    done = tracer.start_span(name, context=context, start_time=start_time)
    if attributes is not None and done.is_recording():
        done.set_attributes(attributes())
    done.end(end_time=end_time)


def record_outcome(current: Span, outcome: str, error: str | None = None) -> None:
    """Mark ``current`` with how the work it covers ended (``mimir.outcome``), in error
    for ``failed`` (the error's text as the status description)."""
    if not current.is_recording():
        return
    current.set_attribute("mimir.outcome", outcome)
    if outcome == "failed":
        current.set_status(Status(StatusCode.ERROR, error))
