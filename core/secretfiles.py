"""Secrets kept in files (a Docker or Kubernetes secret, ``MIMIR_*_FILE``): one reader.

:func:`read_secret_file` is what every ``…_FILE`` variable goes through
(``MIMIR_API_TOKEN_FILE`` in :mod:`mimir.core.settings`, ``MIMIR_REDIS_PASSWORD_FILE`` in
:mod:`mimir.core.queue.connection`): the file's text with surrounding whitespace (and
the trailing newline ``echo`` writes) stripped; a file that cannot be read or holds
nothing is a :class:`SecretFileError` naming the variable and the path, never the
contents.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SecretFileError", "read_secret_file"]


class SecretFileError(ValueError):
    """A ``…_FILE`` variable names a file that cannot be read or is empty. A
    ``ValueError``, so the commands that need the secret stop at startup with the message
    (never a traceback)."""


def read_secret_file(variable: str, path: str | Path) -> str:
    """The secret in the file ``variable`` names (``path``), whitespace stripped; raises
    :class:`SecretFileError` (``"VARIABLE=path: cannot read it (reason)"`` or
    ``"VARIABLE=path is empty"``) when it cannot be read or holds nothing."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretFileError(f"{variable}={file}: cannot read it ({reason})") from None
    if not text:
        raise SecretFileError(f"{variable}={file} is empty")
    return text
