"""Keep secrets out of log lines: the one URL redaction (:func:`mimir.core.backup.redis_rdb.
redact_url`), which parses by hand so that any URL the settings accept is shown without its
password (``urlsplit`` of Python 3.11.2, Debian 12's, refuses a ``redis+sentinel://`` host
list with a bracketed IPv6 address)."""

from __future__ import annotations

from mimir.core.backup.redis_rdb import redact_url

__all__ = ["redact_url"]
