"""Sending through the Mailgun API (``messages.mime``), with error classification.

200 → the Mailgun id. 429 → transient, with the delay Mailgun asked for.
5xx, timeouts and connection errors → transient. 401 → the key may have
rotated: refetch it once and try again, then transient (a bad key must not lose
mail). Any other 4xx → MailgunRejected, permanent. Every call has a timeout.

Whether a failed send may still have been accepted (issue 12): a refused connection, a
connect timeout or a failed DNS lookup happen before a byte of the request is written, and
an answer (429, 5xx) says Mailgun did not take it; those are MailgunTransient. A read timeout
or a connection lost once it was open (reset, closed without an answer, a broken TLS stream)
may come after Mailgun accepted the message: MailgunUnsure, so the relay asks the Events API
(``find_accepted``) before it sends again.

Sending options go as API parameters on every send (SENDING_OPTIONS), never as
``X-Mailgun-*`` headers in the MIME (the rewrite drops every such header a sender
wrote): Mailgun documents each ``o:`` parameter next to the SMTP header it stands
for, and says the parameter has priority over the domain setting
(https://documentation.mailgun.com/docs/mailgun/user-manual/sending-messages/pass-sending-options).
Tracking is off (it would rewrite links and add a pixel: the body must stay as the
sender wrote it, and the owner's reading is nobody's business); DKIM signing is on
(the forwarded copy passes DMARC at Gmail through our domain's signature).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from tagrelay.adapters.secrets import Secret
from tagrelay.core.errors import MailgunRejected, MailgunTransient, MailgunUnsure
from tagrelay.core.headers import has_control_chars
from tagrelay.core.ports import Mime
from tagrelay.core.resend import accepted_id

CONNECT_TIMEOUT_SECONDS = 5.0
# The Events API walk before a re-send (issue 12): one page holds at most 300 events; a small
# domain's accepted events to one target since an unsure send fit in a few. Past either bound
# the answer is "cannot tell" (transient), never "not found".
EVENTS_PAGE_LIMIT = 300
EVENTS_MAX_PAGES = 20
EVENTS_BUDGET_SECONDS = 20.0
EVENTS_READ_TIMEOUT_SECONDS = 10.0
SENDING_OPTIONS: tuple[tuple[str, str], ...] = (
    ("o:tracking", "no"),
    ("o:tracking-clicks", "no"),
    ("o:tracking-opens", "no"),
    ("o:dkim", "yes"),
)


class MailgunClient:
    def __init__(
        self, session: requests.Session, api_base: str, domain: str, key: Secret, timeout: float = 60.0
    ) -> None:
        self._session = session
        self._base = api_base.rstrip("/")
        self._url = f"{api_base.rstrip('/')}/v3/{domain}/messages.mime"
        self._events_url = f"{api_base.rstrip('/')}/v3/{domain}/events"
        self._key = key
        self._timeout = (CONNECT_TIMEOUT_SECONDS, timeout)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        """Send a complete MIME message to ``to`` (with ``variables`` as ``v:`` parameters); return Mailgun's id."""
        fields = [
            *(("to", address) for address in to),
            *SENDING_OPTIONS,
            *((f"v:{name}", value) for name, value in (variables or {}).items()),
        ]
        response = self._post(fields, mime, self._key.get())
        if response.status_code == 401 and self._key.rotatable:
            response = self._post(fields, mime, self._key.refresh())
        return _outcome(response)

    def _post(self, fields: list[tuple[str, str]], mime: Mime, key: str) -> requests.Response:
        body = MultipartBody(fields, "message", mime)
        try:
            return self._session.post(
                self._url,
                auth=("api", key),
                data=body,
                headers={"Content-Type": body.content_type},
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise send_failure(exc) from None

    def find_accepted(self, recipient: str, delivery: str, since: float, skip: Collection[str] = ()) -> str | None:
        """The Mailgun id of an ``accepted`` event to ``recipient`` since ``since`` whose user variables
        carry ``delivery``, other than those in ``skip`` (None: none in the whole range). Walks ``paging.next``
        until an empty page, at most EVENTS_MAX_PAGES pages in EVENTS_BUDGET_SECONDS; anything short of that whole walk
        (an error, a bound reached, a page URL off the API's host) is MailgunTransient, never "none".
        """
        deadline = time.monotonic() + EVENTS_BUDGET_SECONDS
        params: dict[str, str] | None = {
            "event": "accepted",
            "recipient": recipient,
            "begin": f"{since:.3f}",
            "ascending": "yes",
            "limit": str(EVENTS_PAGE_LIMIT),
        }
        url = self._events_url
        for _ in range(EVENTS_MAX_PAGES):
            page = self._events_page(url, params, deadline)
            items = page.get("items")
            if not isinstance(items, list):
                raise MailgunTransient("Mailgun's Events API answered a page without items")
            found = accepted_id(items, delivery, skip)
            if found is not None or not items:
                return found
            paging = page.get("paging")
            url = str(paging.get("next", "")) if isinstance(paging, dict) else ""
            params = None  # the next URL carries the query
            if not same_origin(url, self._base):
                raise MailgunTransient(f"Mailgun's Events API gave an unusable next page URL: {url[:120]!r}")
        raise MailgunTransient(f"Mailgun's Events API: still not at the end after {EVENTS_MAX_PAGES} pages")

    def _events_page(self, url: str, params: dict[str, str] | None, deadline: float) -> dict[str, Any]:
        response = self._get_events(url, params, self._key.get(), deadline)
        if response.status_code == 401 and self._key.rotatable:
            response = self._get_events(url, params, self._key.refresh(), deadline)
        if response.status_code != 200:
            raise MailgunTransient(f"Mailgun's Events API answered {response.status_code}: {_message(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MailgunTransient("Mailgun's Events API answered something other than a JSON object")
        return body

    def _get_events(
        self, url: str, params: dict[str, str] | None, key: str, deadline: float
    ) -> requests.Response:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MailgunTransient(f"Mailgun's Events API: no complete answer within {EVENTS_BUDGET_SECONDS:g}s")
        try:
            return self._session.get(
                url,
                params=params,
                auth=("api", key),
                timeout=(min(CONNECT_TIMEOUT_SECONDS, left), min(EVENTS_READ_TIMEOUT_SECONDS, left)),
            )
        except requests.RequestException as exc:
            raise MailgunTransient(f"Mailgun's Events API cannot be asked ({type(exc).__name__})") from None

    def fetch_stored(self, url: str) -> bytes:
        """The raw MIME of a message a ``store(notify=...)`` route kept at Mailgun (its ``message-url``).

        The API key goes only to Mailgun: an https URL on a ``mailgun.net`` host, or on
        the configured API base (the local stand-in). 404 is permanent (Mailgun keeps
        stored messages 3 days); 429, 5xx, timeouts are transient; 401 refetches the key once.
        """
        if not stored_url_allowed(url, self._base):
            raise MailgunRejected(f"not a Mailgun storage URL: {url[:120]!r}", 400)
        response = self._get_stored(url, self._key.get())
        if response.status_code == 401 and self._key.rotatable:
            response = self._get_stored(url, self._key.refresh())
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            mime = body.get("body-mime") if isinstance(body, dict) else None
            if not isinstance(mime, str) or not mime:
                raise MailgunRejected("Mailgun's stored message has no body-mime", 502)
            return mime.encode("utf-8", "surrogateescape")
        _outcome(response)  # raises for every non-2xx status
        raise MailgunRejected(f"Mailgun answered {response.status_code} for a stored message", response.status_code)

    def _get_stored(self, url: str, key: str) -> requests.Response:
        try:
            return self._session.get(
                url, auth=("api", key), headers={"Accept": "message/rfc2822"}, timeout=self._timeout
            )
        except requests.Timeout:
            raise MailgunTransient("Mailgun did not answer in time") from None
        except requests.RequestException as exc:
            raise MailgunTransient(f"request to Mailgun failed ({type(exc).__name__})") from None


def send_failure(exc: requests.RequestException) -> MailgunTransient:
    """A send that got no answer: MailgunUnsure unless it surely never reached Mailgun."""
    if isinstance(exc, requests.ConnectTimeout) or _never_connected(exc):
        return MailgunTransient(f"cannot connect to Mailgun ({type(exc).__name__})")
    if isinstance(exc, requests.Timeout):
        return MailgunUnsure("Mailgun did not answer in time; it may have accepted the message")
    return MailgunUnsure(f"the connection to Mailgun broke ({type(exc).__name__}); it may have accepted the message")


def _never_connected(exc: requests.RequestException) -> bool:
    """requests wraps a connection that never opened as ConnectionError(MaxRetryError(NewConnectionError...))."""
    cause = exc.args[0] if exc.args else None
    reason = cause.reason if isinstance(cause, MaxRetryError) else cause
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def same_origin(url: str, api_base: str) -> bool:
    """Whether ``url`` is on the API base's scheme and host (where the API key may go)."""
    parsed, base = urlsplit(url), urlsplit(api_base)
    if has_control_chars(url) or parsed.username or parsed.password:
        return False
    return bool(parsed.scheme) and (parsed.scheme, parsed.netloc) == (base.scheme, base.netloc)


def stored_url_allowed(url: str, api_base: str) -> bool:
    """Whether ``url`` may receive the API key: https on a Mailgun host, or the configured API base."""
    parsed, base = urlsplit(url), urlsplit(api_base)
    if has_control_chars(url) or parsed.username or parsed.password:
        return False
    if (parsed.scheme, parsed.netloc) == (base.scheme, base.netloc) and parsed.path.startswith("/v3/"):
        return True
    host = (parsed.hostname or "").lower()
    return parsed.scheme == "https" and (host == "mailgun.net" or host.endswith(".mailgun.net"))


class MultipartBody:
    """A multipart/form-data body streamed from its pieces, with a known length.

    requests would build the whole body in memory (a second copy of a 25 MB
    message); this hands http.client the form head, the message itself and the
    closing boundary in turn, and gives Content-Length up front.
    """

    BLOCK = 1 << 16

    def __init__(self, fields: list[tuple[str, str]], file_field: str, data: Mime) -> None:
        boundary = secrets.token_hex(16)
        for name, value in fields:
            if has_control_chars(value) or '"' in name + value:
                raise MailgunRejected(f"unusable form value for {name!r}", 400)
        head = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields
        )
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="message.mime"\r\n'
            "Content-Type: message/rfc822\r\n\r\n"
        )
        self.content_type = f"multipart/form-data; boundary={boundary}"
        self._pieces = [
            memoryview(head.encode("utf-8")),
            *(memoryview(piece) for piece in ((data,) if isinstance(data, bytes) else data)),
            memoryview(f"\r\n--{boundary}--\r\n".encode()),
        ]
        self._length = sum(len(piece) for piece in self._pieces)
        self._index = 0
        self._offset = 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (everything left when negative); b"" at the end."""
        wanted = self._length if size is None or size < 0 else size
        out: list[bytes] = []
        while wanted > 0 and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            chunk = piece[self._offset : self._offset + wanted]
            out.append(bytes(chunk))
            wanted -= len(chunk)
            self._offset += len(chunk)
            if self._offset >= len(piece):
                self._index, self._offset = self._index + 1, 0
        return b"".join(out)

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(self.BLOCK):
            yield block


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
