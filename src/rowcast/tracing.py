"""Optional OpenTelemetry spans around capture, delivery and handling (``rowcast[otel]``).

With ``opentelemetry-api`` installed (``pip install 'rowcast[otel]'``) rowcast makes
spans with the tracer ``rowcast``; they go wherever the application's OpenTelemetry
SDK sends them (without an SDK configured, OpenTelemetry's own no-op tracer makes
nothing, at next to no cost). Without the package, nothing is imported or done.

``rowcast.capture``
    one per transaction a relay reads: from the transaction's commit time to the
    moment the relay had it, so its length is the capture latency. Attributes
    ``rowcast.source``, ``rowcast.txid``, ``rowcast.position``, ``rowcast.changes``,
    ``rowcast.change_ids``.
``rowcast.deliver``
    one per batch a relay delivers to its sinks (retries included): ``rowcast.sinks``,
    ``rowcast.changes``, ``rowcast.position`` (the last), ``rowcast.change_ids``.
``rowcast.handle``
    one per call of a consumer's handler: ``rowcast.changes``, ``rowcast.positions``,
    ``rowcast.change_ids``; an error status and the exception when the handler raises.

A change carries the same id everywhere (`rowcast.sinks.change_id`): search a trace
backend for one id in ``rowcast.change_ids`` to follow it from the database to the
handler. Attributes are computed only for spans that are recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .change import Change

__all__ = ["captured", "delivery", "handle"]

_MAX_IDS = 1000  # change ids kept on one span; a bigger batch keeps its first ones


def _tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("rowcast")


_TRACER: Any = _tracer()


def _ids(transactions: Sequence[Sequence[Change]]) -> list[str]:
    from .sinks.base import change_id

    ids: list[str] = []
    for transaction in transactions:
        for index, change in enumerate(transaction):
            if len(ids) >= _MAX_IDS:
                return ids
            ids.append(str(change_id(change, index)))
    return ids


def captured(transaction: Sequence[Change]) -> None:
    """A ``rowcast.capture`` span for `transaction`, from its commit time to now."""
    if _TRACER is None or not transaction:
        return
    last = transaction[-1]
    start = int(last.ts * 1e9) if last.ts else time.time_ns()
    span = _TRACER.start_span("rowcast.capture", start_time=min(start, time.time_ns()))
    if span.is_recording():
        span.set_attributes(
            {
                "rowcast.source": last.source or "",
                "rowcast.txid": str(last.txid),
                "rowcast.position": str(last.position),
                "rowcast.changes": len(transaction),
                "rowcast.change_ids": _ids([transaction]),
            }
        )
    span.end()


def delivery(batch: Sequence[Sequence[Change]], sinks: Sequence[str]) -> Callable[[], None]:
    """Start a ``rowcast.deliver`` span for delivering `batch` to `sinks`: the function
    that ends it. Not made the current span (a relay has two batches out at once)."""
    if _TRACER is None:
        return _nothing
    span = _TRACER.start_span("rowcast.deliver")
    if span.is_recording():
        span.set_attributes(
            {
                "rowcast.sinks": list(sinks),
                "rowcast.changes": sum(len(t) for t in batch),
                "rowcast.position": str(batch[-1][-1].position) if batch else "",
                "rowcast.change_ids": _ids(batch),
            }
        )
    end: Callable[[], None] = span.end
    return end


def _nothing() -> None:
    pass


def handle(handler: Callable[[list[Change]], object], changes: list[Change], batch: Any) -> None:
    """``handler(changes)`` in a ``rowcast.handle`` span; `batch` holds the deliveries
    (their ``id`` is the change id)."""
    if _TRACER is None:
        handler(changes)
        return
    with _TRACER.start_as_current_span("rowcast.handle") as span:
        if span.is_recording():
            span.set_attributes(
                {
                    "rowcast.changes": len(changes),
                    "rowcast.positions": sorted({str(c.position) for c in changes}),
                    "rowcast.change_ids": [d.id for d in batch][:_MAX_IDS],
                }
            )
        handler(changes)
