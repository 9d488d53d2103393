"""What the Mailgun stand-in does after it accepts a message: events, webhooks, suppressions.

Every shape follows Mailgun's documentation (each page cited where it is used):

Events (https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/events/get-v3-domain_name-events,
and the user manual's "Events" pages: event types, event structure, time range, query options):
    Every send records, per recipient, an ``accepted`` event and then the outcome: ``delivered``,
    ``failed`` (``severity`` ``permanent`` or ``temporary``, a ``reason`` and a ``delivery-status``
    with ``code`` and ``message``), or ``complained`` after ``delivered``. An event carries ``id``,
    ``event``, ``timestamp`` (epoch seconds, float), ``recipient``, ``user-variables`` (the ``v:``
    parameters of the send) and ``message.headers.message-id`` (the Mailgun id without ``<>``).
    ``GET /v3/<domain>/events`` filters by ``event``, ``recipient``, ``begin``/``end`` (epoch
    seconds or RFC 2822), ``ascending`` (``yes``/``no``) and ``limit`` (at most 300) and answers
    ``{"items": [...], "paging": {"next": URL, "previous": URL, "first": URL, "last": URL}}``; the
    ``next`` URL fetches the following page and an empty ``items`` ends the walk.

Webhooks (https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/domain-webhooks,
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads and
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks):
    ``GET /v3/domains/<domain>/webhooks`` answers ``{"webhooks": {"delivered": {"urls": [...]}, ...}}``;
    ``POST`` (form ``id``, one or more ``url``) creates one, ``PUT .../webhooks/<id>`` (form ``url``)
    replaces its URLs, ``DELETE .../webhooks/<id>`` removes it. Webhook ids are ``accepted``,
    ``delivered``, ``permanent_fail``, ``temporary_fail``, ``complained``, ``opened``, ``clicked``,
    ``unsubscribed``. Each event is POSTed as JSON ``{"signature": {"timestamp", "token",
    "signature"}, "event-data": {...}}`` where ``signature`` is the hex HMAC-SHA256 of
    ``timestamp + token`` under the HTTP webhook signing key. A 2xx or 406 answer ends it; any
    other answer (or none) is retried (Mailgun: for about 8 hours; the stand-in: 3 times).

Suppressions (https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/bounces,
.../complaints, .../unsubscribe):
    ``GET /v3/<domain>/{bounces,complaints,unsubscribes}`` lists ``{"items": [...], "paging": {...}}``
    (a bounce: ``address``, ``code``, ``error``, ``created_at``; a complaint: ``address``,
    ``created_at``; an unsubscribe: ``address``, ``tags``, ``created_at``), ``GET .../<address>``
    answers one or 404 ``{"message": "Address not found in bounces table"}``, ``DELETE
    .../<address>`` removes it. A send to a suppressed address is accepted by the API and then
    fails permanently with reason ``suppress-bounce`` / ``suppress-complaint`` /
    ``suppress-unsubscribe`` and the message "Not delivering to previously bounced address"
    (or unsubscribed / complained). A permanent bounce adds the address to ``bounces``; a
    complaint adds it to ``complaints``.

Control (the stand-in's own API, for the tests and the local stack):
    ``POST /_standin/outcomes`` ``{"recipient": A, "event": "failed", "severity": "permanent",
    "reason": "bounce", "code": 550, "message": "...", "times": 1}`` scripts what the next sends
    to ``A`` do (``event`` ``delivered``, ``failed`` or ``complained``; ``times`` absent: until
    replaced; ``{"recipient": A}`` alone clears it). ``POST /_standin/suppressions/<list>``
    ``{"address": A}`` suppresses an address. ``POST /_standin/webhooks/post`` ``{"event-data":
    {...}}`` or ``{"id": EVENT_ID}`` posts one (signed) event to the registered URLs again,
    for duplicate and out-of-order tests; ``GET /_standin/webhooks/posts`` lists each post made
    and the status it got. ``POST /_standin/webhooks/config`` ``{"delay": S, "sign_key": K}``
    delays every webhook post by ``S`` seconds (events arriving late).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import requests

WEBHOOK_IDS = (
    "accepted",
    "delivered",
    "permanent_fail",
    "temporary_fail",
    "complained",
    "opened",
    "clicked",
    "unsubscribed",
)
SUPPRESSION_LISTS = ("bounces", "complaints", "unsubscribes")
MAX_EVENTS_LIMIT = 300
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_SECONDS = 0.5
_SUPPRESSED = {
    "bounces": ("suppress-bounce", 605, "Not delivering to previously bounced address"),
    "complaints": ("suppress-complaint", 607, "Not delivering to a user who marked your messages as spam"),
    "unsubscribes": ("suppress-unsubscribe", 606, "Not delivering to unsubscribed address"),
}


def webhook_id(event_data: dict[str, Any]) -> str:
    """The webhook an event goes to: ``failed`` splits by severity (Mailgun's webhook ids)."""
    kind = str(event_data.get("event", ""))
    if kind == "failed":
        return "permanent_fail" if event_data.get("severity") == "permanent" else "temporary_fail"
    return kind


def signed_payload(event_data: dict[str, Any], key: str, now: float | None = None) -> dict[str, Any]:
    """A webhook body as Mailgun posts it: the event and a fresh signature over timestamp + token."""
    stamp = str(int(time.time() if now is None else now))
    token = secrets.token_hex(25)
    digest = hmac.new(key.encode("utf-8"), (stamp + token).encode("ascii"), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": digest}, "event-data": event_data}


def parse_time(value: str) -> float | None:
    """``begin``/``end`` as Mailgun takes them: epoch seconds or an RFC 2822 date."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class Mailbox:
    """The stand-in's memory of what happened after ``messages.mime`` accepted a message."""

    def __init__(self, domain: str, base_url: Callable[[], str], sign_key: str) -> None:
        self.domain = domain
        self.base_url = base_url
        self.sign_key = sign_key
        self.lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.suppressions: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SUPPRESSION_LISTS}
        self.webhooks: dict[str, list[str]] = {}
        self.posts: list[dict[str, Any]] = []
        self.delay = 0.0

    # -- sends -------------------------------------------------------------------------

    def accepted(self, to: list[str], mailgun_id: str, headers: dict[str, str], variables: dict[str, str]) -> None:
        """Record a send: per recipient ``accepted``, then its outcome; post both to the webhooks."""
        bare_id = mailgun_id.strip("<>")
        for recipient in to:
            base = {
                "recipient": recipient.lower(),
                "user-variables": dict(variables),
                "message": {"headers": {**headers, "message-id": bare_id, "to": recipient}},
            }
            with self.lock:
                accepted = self._event(base, "accepted")
                outcome = self._outcome(recipient.lower(), base)
            self.post_later([accepted, *outcome])

    def _event(self, base: dict[str, Any], kind: str, **extra: Any) -> dict[str, Any]:
        event = {"id": secrets.token_urlsafe(16), "event": kind, "timestamp": time.time(), **base, **extra}
        self.events.append(event)
        return event

    def _outcome(self, recipient: str, base: dict[str, Any]) -> list[dict[str, Any]]:
        for name, (reason, code, message) in _SUPPRESSED.items():
            if recipient in self.suppressions[name]:
                status = {"code": code, "message": message, "description": message, "attempt-no": 1}
                return [self._event(base, "failed", severity="permanent", reason=reason, **{"delivery-status": status})]
        plan = self.outcomes.get(recipient)
        if plan is not None and "times" in plan:
            plan["times"] -= 1
            if plan["times"] <= 0:
                del self.outcomes[recipient]
        kind = plan.get("event", "delivered") if plan else "delivered"
        if kind == "failed" and plan is not None:
            severity = str(plan.get("severity", "permanent"))
            code = int(plan.get("code", 550 if severity == "permanent" else 421))
            message = str(plan.get("message", "5.1.1 The email account that you tried to reach does not exist"))
            status = {"code": code, "message": message, "description": "", "attempt-no": 1}
            reason = str(plan.get("reason", "bounce"))
            failed = self._event(base, "failed", severity=severity, reason=reason, **{"delivery-status": status})
            if severity == "permanent":
                self._suppress("bounces", recipient, code=code, error=message)
            return [failed]
        status = {"code": 250, "message": "OK", "description": "", "attempt-no": 1}
        delivered = self._event(base, "delivered", **{"delivery-status": status})
        if kind != "complained":
            return [delivered]
        self._suppress("complaints", recipient)
        return [delivered, self._event(base, "complained")]

    def _suppress(self, name: str, address: str, code: int = 550, error: str = "") -> None:
        created = time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())
        item: dict[str, Any] = {"address": address, "created_at": created}
        if name == "bounces":
            item.update(code=str(code), error=error)
        if name == "unsubscribes":
            item["tags"] = ["*"]
        self.suppressions[name][address] = item

    # -- webhooks ----------------------------------------------------------------------

    def post_later(self, events: list[dict[str, Any]]) -> None:
        """Post events to their webhooks in order, off the request thread (Mailgun posts asynchronously)."""
        if events:
            threading.Thread(target=self._post_all, args=(events,), daemon=True).start()

    def _post_all(self, events: list[dict[str, Any]]) -> None:
        if self.delay:
            time.sleep(self.delay)
        for event in events:
            with self.lock:
                urls = list(self.webhooks.get(webhook_id(event), []))
            for url in urls:
                self._post(url, event)

    def _post(self, url: str, event: dict[str, Any]) -> None:
        status = 0
        for attempt in range(WEBHOOK_ATTEMPTS):
            try:
                response = requests.post(
                    url, json=signed_payload(event, self.sign_key), timeout=WEBHOOK_TIMEOUT_SECONDS
                )
                status = response.status_code
            except requests.RequestException:
                status = 0
            if 200 <= status < 300 or status == 406:
                break
            if attempt + 1 < WEBHOOK_ATTEMPTS:
                time.sleep(WEBHOOK_RETRY_SECONDS)
        with self.lock:
            self.posts.append({"url": url, "event": event.get("event"), "id": event.get("id"), "status": status})

    def repost(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Post one event again (by ``id``) or a given ``event-data``; None if the id is unknown."""
        event = body.get("event-data")
        if not isinstance(event, dict):
            with self.lock:
                event = next((e for e in self.events if e["id"] == body.get("id")), None)
        if event is None:
            return None
        with self.lock:
            urls = list(self.webhooks.get(webhook_id(event), []))
        for url in urls:
            self._post(url, event)
        return event

    # -- Events API --------------------------------------------------------------------

    def query(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """``GET /v3/<domain>/events``: the filtered page and its paging URLs."""
        try:
            limit = int(params.get("limit", "100"))
            skip = int(params.pop("_skip", "0"))
        except ValueError:
            return 400, {"message": "limit must be an integer"}
        if not 0 < limit <= MAX_EVENTS_LIMIT:
            return 400, {"message": f"limit must be between 1 and {MAX_EVENTS_LIMIT}"}
        begin = parse_time(params["begin"]) if "begin" in params else None
        end = parse_time(params["end"]) if "end" in params else None
        if ("begin" in params and begin is None) or ("end" in params and end is None):
            return 400, {"message": "begin and end must be epoch seconds or an RFC 2822 date"}
        ascending = params.get("ascending", "no" if begin is None else "yes") == "yes"
        with self.lock:
            found = [e for e in self.events if _matches(e, params, begin, end)]
        found.sort(key=lambda e: float(e["timestamp"]), reverse=not ascending)
        page = found[skip : skip + limit]
        return 200, {"items": page, "paging": self._paging(params, skip + len(page))}

    def _paging(self, params: dict[str, str], skip: int) -> dict[str, str]:
        def url(offset: int) -> str:
            token = base64.urlsafe_b64encode(json.dumps({**params, "_skip": str(offset)}).encode()).decode("ascii")
            return f"{self.base_url()}/v3/{self.domain}/events/{token}"

        return {"next": url(skip), "previous": url(0), "first": url(0), "last": url(skip)}

    def query_page(self, token: str) -> tuple[int, dict[str, Any]]:
        """A ``paging`` URL's page."""
        try:
            params = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        except ValueError:
            return 404, {"message": "page not found"}
        return self.query({str(k): str(v) for k, v in params.items()})

    # -- suppressions API --------------------------------------------------------------

    def suppression_list(self, name: str) -> dict[str, Any]:
        with self.lock:
            items = list(self.suppressions[name].values())
        return {"items": items, "paging": {}}

    def suppression(self, name: str, address: str) -> dict[str, Any] | None:
        with self.lock:
            return self.suppressions[name].get(address.lower())

    def unsuppress(self, name: str, address: str) -> bool:
        with self.lock:
            return self.suppressions[name].pop(address.lower(), None) is not None

    def suppress(self, name: str, address: str) -> None:
        with self.lock:
            self._suppress(name, address.lower())

    def script(self, plan: dict[str, Any]) -> None:
        recipient = str(plan.get("recipient", "")).lower()
        with self.lock:
            if set(plan) == {"recipient"}:
                self.outcomes.pop(recipient, None)
            else:
                self.outcomes[recipient] = dict(plan)

    # -- webhooks API ------------------------------------------------------------------

    def webhook_list(self) -> dict[str, Any]:
        with self.lock:
            return {"webhooks": {name: {"urls": list(urls)} for name, urls in self.webhooks.items()}}

    def set_webhook(self, name: str, urls: list[str]) -> None:
        with self.lock:
            self.webhooks[name] = list(urls)

    def delete_webhook(self, name: str) -> bool:
        with self.lock:
            return self.webhooks.pop(name, None) is not None


def _matches(event: dict[str, Any], params: dict[str, str], begin: float | None, end: float | None) -> bool:
    stamp = float(event["timestamp"])
    if begin is not None and end is not None and begin > end:
        begin, end = end, begin
    if begin is not None and stamp < begin:
        return False
    if end is not None and stamp > end:
        return False
    if "event" in params and event["event"] not in params["event"].split(" OR "):
        return False
    return not ("recipient" in params and event["recipient"] != params["recipient"].lower())
