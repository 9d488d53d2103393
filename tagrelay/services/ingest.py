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
import time
from collections.abc import Callable
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
    TransientError,
    Undeliverable,
)
from tagrelay.core.headers import count, header_fields
from tagrelay.core.inbound import (
    Body,
    InboundMessage,
    check_signed,
    form_digest,
    is_mailgun_form,
    parse_form,
    to_inbound,
)
from tagrelay.core.log import event
from tagrelay.core.ports import ClaimStore, KeySource, Ledger, Publisher
from tagrelay.core.reply import ReplyDesk
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
        replies: ReplyDesk | None = None,
    ) -> None:
        self.config = config
        self._replies = replies
        self._key = signing_key
        self._publisher = publisher
        self._ledger = ledger
        self._claims = claims
        self._clock = clock

    def handle(self, content_type: str, body: Body) -> Response:
        """Answer one POST (its body whole, or as a stream of chunks). Never raises for anything the client sent."""
        alias = ""
        try:
            form = parse_form(content_type, body, self.config.max_body_bytes)
            if not is_mailgun_form(form):
                raise BadRequest("not a Mailgun route post (no recipient or message fields)")
            alias = form.text("recipient")[:200]
            now = self._clock()
            stamp = check_signed(form, self._key.get().encode("utf-8"), now, self.config.max_age_seconds)
            message = to_inbound(form, stamp)
            self._check_deliverable(message)
            pubsub_id, attributes = self._publish_once(message, form_digest(form), now)
        except RejectedInput as exc:
            event(
                logging.WARNING,
                f"refused: {exc.reason}",
                stage="ingest",
                alias=alias,
                outcome=f"http {exc.status}",
                reason=exc.reason,
            )
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
        resolved = self.config.routes.resolve(self._route_address(recipient))
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

    def _route_address(self, recipient: str) -> str:
        """The address to route: a reverse address routes as its alias (issue 13).

        Its MAC is checked before any lookup. A made-up or altered one that still names
        an alias goes on (the relay forwards it to that alias's owner, marked, which
        anyone could do by writing to the alias); one that names none, or whose contact
        is blocked, is refused with 406. A blocked alias is refused by the routes.
        """
        if self._replies is None:
            return recipient
        found = self._replies.identify(recipient)
        if found is None:
            return recipient
        if not found.alias:
            raise Undeliverable(f"reply address: {found.reason}")
        if found.contact is not None and found.contact.blocked:
            raise Undeliverable("reply address: the contact is blocked")
        return found.alias
