"""The events service: a Mailgun event webhook → the delivery record's state, dead letters, notices.

Statuses (Mailgun treats 200 as done and 406 as "rejected, do not retry"; anything else it
retries for about 8 hours, except the ``delivered`` notification; whether a retry is signed afresh
Mailgun does not say, so the timestamp window, ``TAGRELAY_EVENT_MAX_AGE_SECONDS``, covers those 8 hours):

- 200 handled, or ignored: not about one of our forwards (no ``tagrelay-delivery`` variable,
  no such delivery record), a duplicate, out of order, about an earlier send of the message,
  or an event we do not act on (``accepted``, ``opened``...);
- 400 not a Mailgun event webhook: not JSON, no signature object, over 256 KiB;
- 401 bad or missing signature, a timestamp outside the window, or a replayed post (a token
  already used: spent in the same commit that applies its event);
- 406 signed, but its ``event-data`` is not an event (a retry would fail the same way);
- 503 Firestore, Pub/Sub (the dead letter) or the key store unavailable, a permanent failure
  that came before the relay recorded what it sent (the retry finds it), and any unexpected
  error after the signature (logged CRITICAL): Mailgun retries, nothing is dropped.

Never a 500. A permanent failure is published to the dead-letter topic with the original message
and its Pub/Sub attributes (as the relay's own dead letters, so ``tagrelay deadletters replay``
sends it again) before the record says ``failed``; then the route's ``notify`` address gets the
owner notice. A failure because the target is on a Mailgun suppression list is logged at ERROR
with the fix. Delivered to every target: the kept copy is dropped.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tagrelay.core.config import EventsConfig
from tagrelay.core.errors import (
    BadRequest,
    BadSignature,
    ClaimMissing,
    PermanentError,
    RejectedInput,
    TransientError,
)
from tagrelay.core.events import Change, Event, read_event, read_post, token_expiry
from tagrelay.core.inbound import media_type
from tagrelay.core.log import event as log
from tagrelay.core.notice import build_notice
from tagrelay.core.ports import ClaimStore, DeadLetters, EventLedger, KeySource, Sender
from tagrelay.core.routes import Forward


class NotYetSent(TransientError):
    """A permanent failure arrived before the relay's ``sent`` write kept the message: 503, Mailgun retries."""


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


@dataclass
class _Kept:
    """What the before-commit step found, for the notice after the commit."""

    original: bytes = b""
    reason: str = ""


class Events:
    def __init__(
        self,
        config: EventsConfig,
        signing_key: KeySource,
        ledger: EventLedger,
        deadletters: DeadLetters,
        sender: Sender,
        claims: ClaimStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._key = signing_key
        self._ledger = ledger
        self._deadletters = deadletters
        self._sender = sender
        self._claims = claims
        self._clock = clock

    def handle(self, content_type: str, body: bytes) -> Answer:
        """Answer one webhook post (its body read whole, at most MAX_BODY_BYTES). Never raises."""
        signed = False
        try:
            if media_type(content_type) != "application/json":
                raise BadRequest("expected a Mailgun event webhook (JSON); ingest takes route posts")
            now = self._clock()
            signature, data = read_post(body, self._key.get().encode("utf-8"), now, self.config.max_age_seconds)
            signed = True
            return self._handle(
                read_event(data), signature.token, token_expiry(signature.timestamp, self.config.max_age_seconds)
            )
        except RejectedInput as exc:
            level = logging.WARNING if signed else logging.INFO  # unsigned posts must not flood WARNING
            log(level, f"refused: {exc.reason}", stage="events", outcome=f"http {exc.status}", reason=exc.reason)
            return Answer(exc.status, exc.reason)
        except TransientError as exc:
            level = logging.INFO if isinstance(exc, NotYetSent) else logging.ERROR
            log(level, f"unavailable: {exc.reason}", stage="events", outcome="http 503", reason=exc.reason)
            return Answer(503, "temporarily unavailable, retry later")
        except Exception as exc:  # never a 500: before the signature a 400, after it a 503 (Mailgun retries)
            status = 503 if signed else 400
            log(
                logging.CRITICAL if signed else logging.ERROR,
                f"unexpected {type(exc).__name__} on an event post",
                stage="events",
                outcome=f"http {status}",
            )
            return Answer(status, "could not handle this event" if signed else "could not read this post")

    def _handle(self, event: Event, token: str, expires: float) -> Answer:
        kept = _Kept()

        def before_commit(change: Change, record: dict[str, Any]) -> None:
            # Once per post: a commit round lost to a concurrent write decides again, and must not publish again.
            if change.failed_now and not kept.reason:
                self._dead_letter(event, record, kept)

        recorded = self._ledger.record_event(event, token, expires, before_commit)
        record = recorded.record or {}
        fields = {
            "stage": "events",
            "alias": str(record.get("alias", "")),
            "message_id": str(record.get("message_id", "")),
            "mailgun_id": event.mailgun_id,
        }
        if recorded.outcome == "replayed":
            raise BadSignature("token already used: a replayed event post")
        if recorded.outcome == "early":
            raise NotYetSent("a permanent failure before the relay recorded the send; retry")
        if recorded.outcome == "unknown" or not event.key:
            why = "no tagrelay-delivery variable" if not event.key else "no such delivery record"
            log(logging.INFO, f"{event.name} ignored: not one of our forwards ({why})", outcome="ignored", **fields)
            return Answer(200, "ignored")
        change = recorded.change
        assert change is not None
        if recorded.outcome != "applied":
            log(
                logging.INFO,
                f"{event.name} for {event.recipient}: {recorded.outcome}, the record stays {change.before}",
                outcome=recorded.outcome,
                **fields,
            )
            return Answer(200, recorded.outcome)
        self._after(event, change, record, kept, fields)
        return Answer(200, change.after)

    def _after(self, event: Event, change: Change, record: dict[str, Any], kept: _Kept, fields: dict[str, str]) -> None:
        """Log the change; after a permanent failure, the owner's notice; after delivery, drop the kept copy."""
        if change.failed_now:
            if event.suppression:
                log(
                    logging.ERROR,
                    f"forward target {event.recipient} is on Mailgun's {event.suppression} list ({event.reason}): "
                    f"every message to it is dropped. Fix: tagrelay suppressions clear {shlex.quote(event.recipient)}, "
                    "then tagrelay deadletters replay",
                    outcome="suppressed",
                    reason=event.describe(),
                    **fields,
                )
            else:
                log(
                    logging.ERROR,
                    f"permanent failure for {event.recipient}: {event.describe()}",
                    outcome="failed",
                    reason=event.describe(),
                    **fields,
                )
            self._notify(event, record, kept)
        elif change.complained_now:
            log(logging.WARNING, f"{event.recipient} marked a forward as spam", outcome="complained", **fields)
        else:
            log(
                logging.INFO,
                f"{event.name} for {event.recipient}: {change.before} → {change.after}",
                outcome=change.after if event.kind != "temporary" else "temporary failure",
                reason=event.describe() if event.kind == "temporary" else "",
                **fields,
            )
        if "message" in change.fields and change.fields["message"] is None:
            self._drop_kept(record)

    def _original(self, record: dict[str, Any], whole: bool) -> tuple[bytes, str]:
        """What was kept (as it came through Pub/Sub, or with ``whole`` the message itself) and a note when not."""
        attributes = record.get("attributes") or {}
        ref = str(record.get("blob", "") or (attributes.get("claim", "") if whole else ""))
        if ref:
            if self._claims is None:
                return b"", "the kept copy is in the claim-check bucket and no bucket is configured"
            try:
                return self._claims.get(ref), ""
            except ClaimMissing:
                return b"", "the kept copy is gone"
        if "message" in record:
            return bytes(record["message"]), ""
        return b"", "the message was not kept"

    def _dead_letter(self, event: Event, record: dict[str, Any], kept: _Kept) -> None:
        """Publish the failure as the relay would its own: the original and its attributes (raises to retry)."""
        data, note = self._original(record, whole=False)
        attributes = {str(k): str(v) for k, v in (record.get("attributes") or {}).items()}
        if not attributes:  # not kept: at least say whose it was
            attributes = {"recipient": str(record.get("alias", "")), "message_id": str(record.get("message_id", ""))}
        if record.get("pubsub_id"):
            attributes["original_pubsub_id"] = str(record["pubsub_id"])
        reason = f"Mailgun: permanent failure for {event.recipient}: {event.describe()}"
        if note:
            reason += f" ({note})"
        self._deadletters.put(data, attributes, reason)
        kept.original = data
        kept.reason = reason

    def _notify(self, event: Event, record: dict[str, Any], kept: _Kept) -> None:
        """The route's owner notice (a failure is only logged: the dead letter exists)."""
        alias = str(record.get("alias", ""))
        resolved = self.config.routes.resolve(alias)
        notify = resolved.rule.notify if isinstance(resolved, Forward) else ""
        fields = {"stage": "events", "alias": alias, "mailgun_id": event.mailgun_id}
        if not notify:
            log(
                logging.WARNING,
                "no notify address on the route: the owner is not told",
                outcome="not notified",
                **fields,
            )
            return
        original = kept.original
        attributes = record.get("attributes") or {}
        if attributes.get("claim"):
            original, _ = self._original(record, whole=True)
        try:
            self._sender.send_mime([notify], build_notice(original, alias, kept.reason, notify))
        except Exception as exc:  # the dead letter exists; a notice must not undo that
            why = exc.reason if isinstance(exc, (TransientError, PermanentError)) else type(exc).__name__
            log(logging.WARNING, f"notice not sent: {why}", outcome="notice failed", **fields)
            return
        log(logging.INFO, "owner notified", outcome="notified", targets=[notify], **fields)

    def _drop_kept(self, record: dict[str, Any]) -> None:
        """Delivered to every target: the copy kept for a bounce goes (the lifecycle rule is the backstop)."""
        attributes = record.get("attributes") or {}
        for ref in (str(record.get("blob", "")), str(attributes.get("claim", ""))):
            if ref and self._claims is not None:
                try:
                    self._claims.delete(ref)
                except Exception as exc:  # cleanup: whatever fails, the lifecycle rule deletes it
                    why = exc.reason if isinstance(exc, (ClaimMissing, TransientError)) else type(exc).__name__
                    log(logging.WARNING, f"kept copy left for the lifecycle rule: {why}", stage="events")
