"""Log text that cannot forge log lines.

A request's path, a header, a pipeline's name or an error message quoting them reach
the logs; a newline, carriage return or terminal escape (``%0a``, ``%0d``, ``%1b`` in
a URL) among them would start a fake log line or recolour a terminal.
:func:`printable` writes such characters as ``\\xNN`` and keeps every other
character, accents and scripts included; :class:`PrintableFormatter` applies it to
every record's message, so that each record is one line whatever its arguments hold.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

__all__ = ["PrintableFormatter", "printable", "request_id_var"]

#: The id of the API request being served (set by the server's request middleware), for
#: log lines written below the routes (SPARQL SERVICE/LOAD decisions).
request_id_var: ContextVar[str | None] = ContextVar("mimir_request_id", default=None)

#: C0 controls (newline, CR, tab, ESC ...), DEL, the C1 controls (U+0080-U+009F: NEL,
#: CSI ...) and the Unicode line and paragraph separators: everything that breaks a
#: line (``str.splitlines``) or drives a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` with control characters written as ``\\xNN`` (``\\u2028``).

    For every value that came from a request before it is logged. Idempotent: the
    result holds no control character.
    """
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(_escape, text)


class PrintableFormatter(logging.Formatter):
    """A formatter whose records are one line each: the message (with its arguments)
    passes through :func:`printable`. A traceback still follows on its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))
