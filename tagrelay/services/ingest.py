"""The ingest service: Mailgun route POST → verified → published → answered.

Statuses (Mailgun treats 200 as done, 406 as "do not retry", anything else as
a failure it retries for about 8 hours):

- 200 published and acknowledged by Pub/Sub, or a retry of a post already published;
- 400 not a Mailgun form at all;
- 401 bad or missing signature, a timestamp outside the window, or a token
  reused for a different message;
- 406 signed, but never deliverable (no route, blocked alias, loop, too large);
- 503 Pub/Sub, the ledger or the key store unavailable, or the same post is
  being published by another instance right now: Mailgun retries.

Never a bare 500 for anything a client sent: every failure maps to one of these.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tagrelay.core import envelope, spam
from tagrelay.core.config import IngestConfig
from tagrelay.core.errors import (
    BadRequest,
    BadSignature,
    Busy,
    LedgerUnavailable,
    RejectedInput,
    SecretUnavailable,
    TransientError,
    Undeliverable,
)
from tagrelay.core.headers import count, header_fields
from tagrelay.core.inbound import (
    EVENT_SNIFF_BYTES,
    EVENT_WEBHOOK_HINT,
    Body,
    InboundMessage,
    check_route_key,
    check_signature,
    form_digest,
    looks_like_event_webhook,
    media_type,
    parse_form,
    route_post_problem,
    to_inbound,
)
from tagrelay.core.log import event
from tagrelay.core.ports import ClaimStore, KeySource, Ledger, Publisher
from tagrelay.core.rewrite import carries_loop_marker
from tagrelay.core.routes import Reject

MAX_RECEIVED_HEADERS = 25
TOKEN_KEEP_MARGIN_SECONDS = 3600  # replay records outlive the retry horizon by this much
PUBLISH_LEASE_MARGIN_SECONDS = 30
CLAIM_LEASE_SECONDS = 60  # a claim-check upload of 25 MB may take this long


@dataclass(frozen=True)
class Response:
    status: int
    text: str


class Ingest:
    def __init__(
        self,
        config: IngestConfig,
        signing_key: KeySource,
        publisher: Publisher,
        ledger: Ledger,
        claims: ClaimStore | None = None,
        clock: Callable[[], float] = time.time,
        route_keys: Sequence[KeySource] = (),
    ) -> None:
        self.config = config
        self._key = signing_key
        self._publisher = publisher
        self._ledger = ledger
        self._claims = claims
        self._clock = clock
        self._route_keys = tuple(route_keys)  # current first, then the previous one during a rotation
        self._unauthenticated = RefusalSummary(clock)

    def handle(self, content_type: str, body: Body, route_key: str | None = None) -> Response:
        """Answer one POST (its body whole, or as a stream of chunks). Never raises for anything the client sent.

        ``route_key`` is the route URL's ``k``. The order is the perimeter: a JSON
        event webhook is named (400, at most EVENT_SNIFF_BYTES read); the route key
        (when configured) before a byte of a form is read; the signature before any
        large value is decoded; only then the message.
        """
        alias = ""
        signed = False

        def authenticate(fields: Mapping[str, str]) -> None:
            nonlocal signed
            check_signature(fields, self._key.get().encode("utf-8"), now, self.config.max_age_seconds)
            signed = True

        try:
            if media_type(content_type) == "application/json":
                raise BadRequest(_json_refusal(content_type, body))
            now = self._clock()
            if self._route_keys:
                check_route_key(route_key, self._accepted_route_keys())
            form = parse_form(content_type, body, self.config.max_body_bytes, authenticate)
            problem = route_post_problem(set(form.fields) | set(form.files))
            if problem:
                raise BadRequest(problem)
            alias = form.text("recipient")[:200]
            stamp = int(form.text("timestamp"))
            message = to_inbound(form, stamp)
            self._check_deliverable(message)
            pubsub_id, attributes = self._publish_once(message, form_digest(form), now)
        except RejectedInput as exc:
            if signed:
                event(
                    logging.WARNING,
                    f"refused: {exc.reason}",
                    stage="ingest",
                    alias=alias,
                    outcome=f"http {exc.status}",
                    reason=exc.reason,
                )
            else:
                self._unauthenticated.refused(exc)
            return Response(exc.status, exc.reason)
        except Busy as exc:
            event(logging.INFO, f"busy: {exc.reason}", stage="ingest", alias=alias, outcome="http 503")
            return Response(503, "busy with the same post, retry later")
        except TransientError as exc:
            event(logging.ERROR, f"unavailable: {exc.reason}", stage="ingest", alias=alias, outcome="http 503")
            return Response(503, "temporarily unavailable, retry later")
        if not pubsub_id:
            return Response(200, "already queued")
        event(
            logging.INFO,
            "published",
            stage="ingest",
            alias=message.recipient,
            message_id=attributes.get("message_id", ""),
            pubsub_id=pubsub_id,
            outcome="published",
        )
        return Response(200, "queued")

    def _accepted_route_keys(self) -> list[str]:
        """The current key (SecretUnavailable: 503, Mailgun retries) and the previous one when it can be read."""
        current, *previous = self._route_keys
        keys = [current.get()]
        for source in previous:
            with contextlib.suppress(SecretUnavailable):  # a missing previous key only narrows what is accepted
                keys.append(source.get())
        return keys

    def _publish_once(self, message: InboundMessage, digest: str, now: float) -> tuple[str, dict[str, str]]:
        """Publish unless this token was already published ("" for an identical retry).

        A message over Pub/Sub's size cap goes to the claim-check bucket first and
        only its header block travels through Pub/Sub.
        """
        token = message.token
        lease = self.config.publish_timeout + PUBLISH_LEASE_MARGIN_SECONDS + CLAIM_LEASE_SECONDS
        keep = self.config.max_age_seconds + TOKEN_KEEP_MARGIN_SECONDS
        replay_state = self._ledger.claim_token(token, digest, lease, keep)
        if replay_state == "conflict":
            raise BadSignature("token reused for a different message")
        if replay_state == "busy":
            raise Busy("the same post is being published right now")
        if replay_state == "duplicate":
            message_id = envelope.message_id_of(message.mime)
            event(
                logging.INFO,
                "identical retry: already published",
                stage="ingest",
                outcome="duplicate",
                alias=message.recipient,
                message_id=message_id,
            )
            return "", {}
        try:
            ref = self._claims.put(message.mime) if self._claims and len(message.mime) > envelope.MAX_DATA_BYTES else ""
            data, attributes = envelope.encode(message, datetime.fromtimestamp(now, UTC), claim=ref)
            pubsub_id = self._publisher.publish(data, attributes)
        except TransientError:
            self._forget(token)
            raise
        try:
            self._ledger.token_published(token)
        except LedgerUnavailable as exc:
            # Published but not recorded: a retry after the lease may publish again,
            # and the relay's delivery record keeps the duplicate from being sent.
            event(
                logging.WARNING,
                f"published but not recorded: {exc.reason}",
                stage="ingest",
                pubsub_id=pubsub_id,
                outcome="published",
                alias=message.recipient,
                message_id=attributes.get("message_id", ""),
            )
        return pubsub_id, attributes

    def _forget(self, token: str) -> None:
        """Drop the claim so Mailgun's retry publishes; if that fails, the lease runs out instead."""
        with contextlib.suppress(LedgerUnavailable):
            self._ledger.release_token(token)

    def _check_deliverable(self, message: InboundMessage) -> None:
        recipient, mime = message.recipient, message.mime
        resolved = self.config.routes.resolve(recipient)
        if isinstance(resolved, Reject):
            raise Undeliverable(resolved.reason)
        seen = spam.verdict(message.spam_flag, message.spam_score)
        if spam.decide(resolved.rule.spam, seen) == "refuse":
            raise Undeliverable(f"spam refused by the route's policy ({seen.describe()})")
        domain = recipient.rpartition("@")[2]
        fields = header_fields(mime)
        if carries_loop_marker(fields, domain):
            raise Undeliverable(f"mail loop: already forwarded for {domain.lower()}")
        if count(fields, "received") > MAX_RECEIVED_HEADERS:
            raise Undeliverable(f"mail loop: more than {MAX_RECEIVED_HEADERS} Received headers")
        if len(mime) > envelope.MAX_DATA_BYTES and self._claims is None:
            raise Undeliverable(
                f"message of {len(mime)} bytes is over the {envelope.MAX_DATA_BYTES} byte Pub/Sub limit "
                "and no claim-check bucket is set (TAGRELAY_CLAIM_BUCKET)"
            )


SUMMARY_SECONDS = 60.0  # at most one WARNING line per this many seconds about unauthenticated posts
REASON_CHARS = 120


def _json_refusal(content_type: str, body: Body) -> str:
    """Why a JSON post is refused: an event webhook is named, at the cost of reading at most its first 64 KiB."""
    head = bytearray()
    pieces = [body] if isinstance(body, bytes) else body
    for piece in pieces:
        head += piece[: EVENT_SNIFF_BYTES + 1 - len(head)]
        if len(head) > EVENT_SNIFF_BYTES:
            break
    if looks_like_event_webhook(content_type, bytes(head)):
        return EVENT_WEBHOOK_HINT
    return "expected a Mailgun route post (a form), got JSON"


def _printable(text: str, limit: int = REASON_CHARS) -> str:
    """Text safe to log: control characters escaped, cut to ``limit`` characters."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[:limit] + "…"


class RefusalSummary:
    """Logs refusals of unauthenticated posts without letting their senders write the log.

    Each refusal is one INFO line (status and tagrelay's reason, escaped and cut,
    no alias: nothing the sender chose is trusted before the signature). At most
    one WARNING line per SUMMARY_SECONDS counts them, so unsigned traffic neither
    floods the log at WARNING nor goes unnoticed.
    """

    def __init__(self, clock: Callable[[], float], every: float = SUMMARY_SECONDS) -> None:
        self._clock = clock
        self._every = every
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._next = float("-inf")

    def refused(self, exc: RejectedInput) -> None:
        reason = _printable(exc.reason)
        event(logging.INFO, f"refused before authentication: {reason}", stage="ingest", outcome=f"http {exc.status}")
        with self._lock:
            self._counts[exc.status] = self._counts.get(exc.status, 0) + 1
            now = self._clock()
            if now < self._next:
                return
            counts, self._counts, self._next = self._counts, {}, now + self._every
        total = sum(counts.values())
        by_status = ", ".join(f"{count} × {status}" for status, count in sorted(counts.items()))
        event(
            logging.WARNING,
            f"{total} unauthenticated post(s) refused ({by_status}); next summary in {self._every:g}s at most",
            stage="ingest",
            outcome="refused unauthenticated",
        )
