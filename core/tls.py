"""TLS for the API: the server's certificate check at start, and the one ``verify``
argument every HTTP client of the API uses.

Clients verify ``https://`` servers against the default CAs (certifi's bundle, what httpx
uses), or against a private CA: ``MIMIR_CA_FILE`` (a PEM file), or the console profile's
CA file. :func:`api_verify` makes the argument; :func:`describe_http_error` turns a failed
call into one line that says what went wrong (an untrusted certificate, plain HTTP to a
TLS port) instead of a traceback.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CA_FILE_ENV", "TlsError", "api_verify", "check_server_files", "describe_http_error"]

#: The environment variable naming the PEM file of a private CA that API clients trust.
CA_FILE_ENV = "MIMIR_CA_FILE"


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used (the message names the file)."""


def _readable(path: Path, what: str) -> None:
    if not path.is_file():
        raise TlsError(f"{what} {path}: no such file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TlsError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


def check_server_files(cert: str | Path, key: str | Path) -> None:
    """Raise :class:`TlsError` unless ``cert`` and ``key`` are readable PEM files and the
    key belongs to the certificate (what uvicorn would find out only after binding)."""
    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    _readable(cert_path, "TLS certificate")
    _readable(key_path, "TLS key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsError(
                f"TLS key {key_path} does not match the certificate {cert_path}"
            ) from None
        raise TlsError(
            f"cannot load TLS certificate {cert_path} with key {key_path}: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise TlsError(f"cannot load TLS certificate {cert_path}: {exc}") from None


def api_verify(
    ca_file: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | bool:
    """The ``verify=`` argument of an httpx client of the API.

    ``ca_file`` (else ``$MIMIR_CA_FILE``): trust that CA as well as the default ones;
    neither: ``True`` (the default CAs). A CA file that cannot be loaded raises
    :class:`TlsError` naming it.
    """
    env = os.environ if environ is None else environ
    chosen = str(ca_file or "").strip() or (env.get(CA_FILE_ENV) or "").strip()
    if not chosen:
        return True
    path = Path(chosen).expanduser()
    _readable(path, "CA file")
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"CA file {path}: not a PEM certificate ({exc})") from None
    return context


def describe_http_error(exc: BaseException, url: str) -> str:
    """One line for an HTTP client error reaching ``url``: names an untrusted certificate
    (and how to trust it) and plain HTTP sent to a TLS port."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "verification failed"
            return (
                f"the TLS certificate of {url} is not trusted ({reason}): point "
                f"{CA_FILE_ENV} (or the profile's CA file) at the CA that signed it"
            )
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {url} failed: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if url.startswith("http://") and (
        "disconnected without sending a response" in text or "Connection reset" in text
    ):
        return f"cannot reach {url}: {text} (if the server serves HTTPS, use an https:// URL)"
    return f"cannot reach {url}: {text}"
