"""Sending through the Mailgun API (``messages.mime``), with error classification.

200 → the Mailgun id. 429 → transient, with the delay Mailgun asked for.
5xx, timeouts and connection errors → transient. 401 → the key may have
rotated: refetch it once and try again, then transient (a bad key must not lose
mail). Any other 4xx → MailgunRejected, permanent. Every call has a timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

from tagrelay.errors import MailgunRejected, MailgunTransient
from tagrelay.secrets import Secret

CONNECT_TIMEOUT_SECONDS = 5.0


class MailgunClient:
    def __init__(
        self, session: requests.Session, api_base: str, domain: str, key: Secret, timeout: float = 60.0
    ) -> None:
        self._session = session
        self._url = f"{api_base.rstrip('/')}/v3/{domain}/messages.mime"
        self._key = key
        self._timeout = (CONNECT_TIMEOUT_SECONDS, timeout)

    def send_mime(self, to: Sequence[str], mime: bytes) -> str:
        """Send a complete MIME message to ``to``; return Mailgun's message id."""
        response = self._post(to, mime, self._key.get())
        if response.status_code == 401 and self._key.rotatable:
            response = self._post(to, mime, self._key.refresh())
        return _outcome(response)

    def _post(self, to: Sequence[str], mime: bytes, key: str) -> requests.Response:
        try:
            return self._session.post(
                self._url,
                auth=("api", key),
                data={"to": list(to)},
                files={"message": ("message.mime", mime, "message/rfc822")},
                timeout=self._timeout,
            )
        except requests.Timeout:
            raise MailgunTransient("Mailgun did not answer in time") from None
        except requests.ConnectionError:
            raise MailgunTransient("cannot connect to Mailgun") from None
        except requests.RequestException as exc:
            raise MailgunTransient(f"request to Mailgun failed ({type(exc).__name__})") from None


def _outcome(response: requests.Response) -> str:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json()
        except ValueError:
            body = {}
        return str(body.get("id", "")) if isinstance(body, dict) else ""
    detail = _message(response)
    if status == 429:
        raise MailgunTransient(f"Mailgun rate limit: {detail}", retry_after=retry_after(response))
    if status == 401:
        raise MailgunTransient("Mailgun refused the API key (401); check MAILGUN_API_KEY")
    if status >= 500 or status in (408, 409):
        raise MailgunTransient(f"Mailgun answered {status}: {detail}")
    raise MailgunRejected(f"Mailgun answered {status}: {detail}", status)


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:300]
    return response.reason or ""


def retry_after(response: requests.Response) -> float | None:
    """Seconds to wait, from Retry-After (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
