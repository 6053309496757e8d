"""Alert notifications: a webhook (JSON with a Slack-compatible ``text``) and e-mail (SMTP).

:func:`deliver` sends one event (``firing`` or ``resolved``) of one alert to one channel,
retrying with exponential backoff (:data:`ATTEMPTS` tries, 1 s, 2 s, 4 s, ... apart), and
answers every attempt made, for the alert's record.

- **Webhook**: ``POST`` of ``{"text": "...", "event": ..., "alert": {...}}``; any 2xx is
  delivered. The URL is checked against the outbound policy of :mod:`mimir.core.outbound`
  (``MIMIR_HTTP_ALLOW``/``MIMIR_HTTP_DENY`` and the built-in denials: cloud metadata, the
  API's own port, Redis), like a plugin's request: a rule is written by whoever holds the
  API token, the same trust as a pipeline. Redirects are not followed.
- **E-mail**: through ``MIMIR_SMTP_URL`` (``smtp://[user:pass@]host[:port]``, STARTTLS when
  the server offers it; ``smtps://`` for TLS from the first byte), ``From:``
  ``MIMIR_SMTP_FROM``. ``smtplib`` runs in a thread; the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from mimir.core.settings import Settings

__all__ = ["ATTEMPTS", "channel_target", "deliver", "message_text", "send_email", "send_webhook"]

logger = logging.getLogger(__name__)

#: Tries per channel and event; the waits between them double from :data:`FIRST_BACKOFF`.
ATTEMPTS = 5
FIRST_BACKOFF = 1.0
TIMEOUT = 10.0


def message_text(event: str, alert: dict[str, Any]) -> str:
    """The one-line text of a notification (Slack's ``text``, the e-mail subject)."""
    mark = "RESOLVED" if event == "resolved" else "FIRING"
    return f"[Mimir {mark}] {alert.get('rule_name', '')}: {alert.get('summary', '')}"


def _body(event: str, alert: dict[str, Any]) -> dict[str, Any]:
    return {"text": message_text(event, alert), "event": event, "alert": alert}


async def send_webhook(url: str, event: str, alert: dict[str, Any], settings: Settings) -> None:
    """POST the notification; raises on a refused URL, a network error or a non-2xx."""
    import httpx

    from mimir.core.outbound import OutboundPolicy

    policy = OutboundPolicy.from_settings(settings)
    # The hooks rewrite (MIMIR_HTTP_REWRITE) and check the URL before the request leaves.
    async with httpx.AsyncClient(
        timeout=TIMEOUT, follow_redirects=False, event_hooks=policy.event_hooks(url)
    ) as client:
        answer = await client.post(
            url,
            content=json.dumps(_body(event, alert), default=str).encode(),
            headers={"content-type": "application/json", "user-agent": "mimir-alerts"},
        )
    if not 200 <= answer.status_code < 300:
        raise RuntimeError(f"webhook answered HTTP {answer.status_code}")


def _email_text(event: str, alert: dict[str, Any]) -> str:
    lines = [
        message_text(event, alert),
        "",
        f"Rule:     {alert.get('rule_name')} ({alert.get('kind')})",
        f"State:    {alert.get('state')}",
        f"Started:  {alert.get('started_at')}",
    ]
    if alert.get("resolved_at"):
        lines.append(f"Resolved: {alert.get('resolved_at')}")
    lines += ["", "Details:", json.dumps(alert.get("details", {}), indent=2, default=str)]
    return "\n".join(lines) + "\n"


def _send_email_sync(
    smtp_url: str, sender: str, to: list[str], event: str, alert: dict[str, Any]
) -> None:
    parts = urlsplit(smtp_url)
    if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
        raise ValueError("MIMIR_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
    message = EmailMessage()
    message["Subject"] = message_text(event, alert)[:200]
    message["From"] = sender
    message["To"] = ", ".join(to)
    message.set_content(_email_text(event, alert))
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if parts.scheme == "smtps":
        smtp = smtplib.SMTP_SSL(parts.hostname, parts.port or 465, timeout=TIMEOUT, context=context)
    else:
        smtp = smtplib.SMTP(parts.hostname, parts.port or 25, timeout=TIMEOUT)
    with smtp:
        smtp.ehlo()
        if parts.scheme == "smtp" and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(message, from_addr=sender, to_addrs=to)


async def send_email(to: list[str], event: str, alert: dict[str, Any], settings: Settings) -> None:
    if not settings.smtp_url:
        raise RuntimeError("MIMIR_SMTP_URL is not set")
    await asyncio.to_thread(
        _send_email_sync, settings.smtp_url, settings.smtp_from, list(to), event, alert
    )


def channel_target(channel: dict[str, Any]) -> str:
    """How an attempt names its channel: a webhook's scheme, host and port; the e-mail
    recipients."""
    if channel.get("type") == "webhook":
        parts = urlsplit(str(channel.get("url", "")))
        # Never the query or user info of the URL (a Slack hook's secret is its path,
        # so only scheme, host and port are recorded).
        return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"
    return ", ".join(channel.get("to", []))


async def deliver(
    channel: dict[str, Any],
    event: str,
    alert: dict[str, Any],
    settings: Settings,
    *,
    attempts: int = ATTEMPTS,
    first_backoff: float = FIRST_BACKOFF,
    on_attempt: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    made: int = 0,
) -> list[dict[str, Any]]:
    """Send ``event`` of ``alert`` to ``channel``, retrying; answers every attempt (each
    also handed to ``on_attempt`` as it is made, to be recorded at once). ``made``: attempts
    already made before (a delivery resumed by another server), which number on."""
    record: list[dict[str, Any]] = []
    delay = first_backoff
    for attempt in range(1, attempts + 1):
        at = datetime.now(UTC).isoformat()
        try:
            if channel.get("type") == "webhook":
                await send_webhook(str(channel["url"]), event, alert, settings)
            elif channel.get("type") == "email":
                await send_email(list(channel.get("to", [])), event, alert, settings)
            else:
                raise ValueError(f"unknown channel type {channel.get('type')!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            record.append(
                {
                    "event": event,
                    "channel": channel.get("type"),
                    "target": channel_target(channel),
                    "attempt": made + attempt,
                    "at": at,
                    "ok": False,
                    "error": error,
                }
            )
            logger.warning(
                "alert %s: %s notification to %s failed (attempt %d/%d): %s",
                alert.get("id"),
                event,
                channel.get("type"),
                attempt,
                attempts,
                error,
            )
            if on_attempt is not None:
                await on_attempt(record[-1])
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
            continue
        record.append(
            {
                "event": event,
                "channel": channel.get("type"),
                "target": channel_target(channel),
                "attempt": made + attempt,
                "at": at,
                "ok": True,
                "error": None,
            }
        )
        if on_attempt is not None:
            await on_attempt(record[-1])
        break
    return record
