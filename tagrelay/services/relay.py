"""The relay service: Pub/Sub delivery → dedupe → route → rewrite → send through Mailgun.

The retry idiom of Cloud Functions: raise to be redelivered, return to stop.

- A delivery record in the ledger (alias, targets, Message-ID or body hash)
  makes a redelivered message that was already sent a no-op, and lets only one
  instance send a message at a time (a lease that runs out if that instance dies).
- Transient failures (Mailgun 429/5xx/timeouts, the ledger, the key store)
  raise, so Pub/Sub redelivers with backoff, until the message has used up its
  attempts or is older than the max-age guard; then it is dead-lettered instead
  of spinning forever. (The emulator ignores retry and dead-letter policies, so
  the relay counts attempts itself; in production the subscription's own
  dead-letter policy is the backstop.)
- Permanent failures (Mailgun 4xx, no route any more, not a tagrelay message)
  go to the dead-letter topic with the reason and are acknowledged.

Nothing is dropped without a record: a dead-letter publish that fails raises too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tagrelay.core import spam
from tagrelay.core.envelope import Delivery, delivery_key, from_cloud_event_data
from tagrelay.core.errors import (
    Busy,
    ClaimMissing,
    LedgerUnavailable,
    PermanentError,
    SchemaError,
    TransientError,
    Unrewritable,
)
from tagrelay.core.log import event
from tagrelay.core.notice import build_notice
from tagrelay.core.ports import ClaimStore, DeadLetters, Ledger, Sender
from tagrelay.core.reply import ReplyDesk
from tagrelay.core.rewrite import rewrite
from tagrelay.core.routes import Reject, Routes, normalize

MAX_INLINE_WAIT_SECONDS = 10.0  # longest Retry-After honoured by sleeping before the redelivery
LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    status: str  # "sent", "duplicate" or "dead-lettered"
    detail: str


@dataclass(frozen=True)
class Limits:
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    send_timeout_seconds: float = 60.0  # the lease outlives one Mailgun call


@dataclass(frozen=True)
class Failure:
    """What giving up on one message needs."""

    key: str
    data: bytes  # what came through Pub/Sub, for the dead letter
    original: bytes  # the whole message, for the owner's notice
    attributes: dict[str, str]
    pubsub_id: str
    notify: str


class Relay:
    def __init__(
        self,
        routes: Routes,
        sender: Sender,
        deadletters: DeadLetters,
        ledger: Ledger,
        claims: ClaimStore | None = None,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        replies: ReplyDesk | None = None,
    ) -> None:
        self._routes = routes
        self._sender = sender
        self._deadletters = deadletters
        self._ledger = ledger
        self._claims = claims
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._replies = replies  # None: no reply key, forwarded copies keep the sender's Reply-To

    def handle_event_data(self, data: Any) -> Outcome:
        """Handle the data of a Pub/Sub CloudEvent; raises TransientError to be redelivered."""
        try:
            delivery = from_cloud_event_data(data)
        except SchemaError as exc:
            raw = json.dumps(data, default=str).encode("utf-8")
            return self._dead_letter(raw, {}, f"not a tagrelay message: {exc}", "")
        return self.handle(delivery)

    def handle(self, delivery: Delivery) -> Outcome:
        message = delivery.envelope
        fields = {"alias": message.recipient, "message_id": message.message_id, "pubsub_id": delivery.pubsub_id}
        attributes = {**message.attributes(), "original_pubsub_id": delivery.pubsub_id}
        # Dead letters carry what came through Pub/Sub: for a claim check, the header block
        # and the claim attribute (the object stays for replay), never the 25 MB message.
        carried = message.mime
        if message.claim:
            try:
                if self._claims is None:
                    raise ClaimMissing("a claim-checked message, and no claim store is configured")
                message = replace(message, mime=self._claims.get(message.claim))
            except ClaimMissing as exc:
                return self._dead_letter(carried, attributes, exc.reason, delivery.pubsub_id)
        # A reverse address routes as its alias; the owner's reply goes to the correspondent (issue 13).
        found = self._replies.identify(message.recipient) if self._replies is not None else None
        route_to = message.recipient if found is None else found.alias
        resolved = self._routes.resolve(route_to) if route_to else Reject(message.recipient, "reply address: no alias")
        if isinstance(resolved, Reject):
            reason = f"no route any more: {resolved.reason}"
            return self._dead_letter(carried, attributes, reason, delivery.pubsub_id)
        plan = None
        if found is not None and self._replies is not None:
            plan = self._replies.plan(found, message.mime, message.sender, resolved.targets)
        targets = (plan.correspondent,) if plan is not None and plan.correspondent else resolved.targets

        key = delivery_key(message.recipient, targets, message.message_id, message.mime)
        info = {"alias": message.recipient, "message_id": message.message_id, "targets": ",".join(targets)}
        lease = self._limits.send_timeout_seconds + LEASE_MARGIN_SECONDS
        begin = self._ledger.begin_delivery(key, lease, info, retake_dead=bool(message.replay))
        if begin.state == "done":
            event(
                logging.INFO,
                "already handled: not sent again",
                stage="relay",
                outcome="duplicate",
                mailgun_id=begin.detail,
                **fields,
            )
            return Outcome("duplicate", begin.detail)
        if begin.state == "busy":
            event(logging.INFO, "another instance is sending it", stage="relay", outcome="retry", **fields)
            raise Busy("delivery in progress elsewhere")

        failed = Failure(key, carried, message.mime, attributes, delivery.pubsub_id, resolved.rule.notify)
        try:
            seen = spam.verdict(message.spam_flag, message.spam_score)
            tag = seen.describe() if spam.decide(resolved.rule.spam, seen) == "tag" else ""
            alias = normalize(route_to) or route_to
            if self._replies is not None:
                mime = self._replies.compose(
                    plan, message.mime, alias, message.sender, resolved.targets,
                    resolved.rule.reply_name, self._routes.domains, spam_tag=tag,
                )  # fmt: skip
            else:
                mime = rewrite(message.mime, alias, message.sender, spam_tag=tag).mime
            mailgun_id = self._sender.send_mime(targets, mime)
        except Unrewritable as exc:
            return self._give_up(failed, f"cannot rewrite: {exc.reason}")
        except PermanentError as exc:
            return self._give_up(failed, exc.reason)
        except TransientError as exc:
            self._release(key)
            age = self._age(delivery)
            if begin.attempts >= self._limits.max_attempts or (age is not None and age > self._limits.max_age_seconds):
                return self._give_up(
                    failed, f"gave up after {begin.attempts} attempts in {age or 0:.0f}s: {exc.reason}"
                )
            event(logging.WARNING, f"will retry: {exc.reason}", stage="relay", outcome="retry", **fields)
            wait = getattr(exc, "retry_after", None)
            if wait:
                self._sleep(min(float(wait), MAX_INLINE_WAIT_SECONDS))
            raise

        self._record(key, "sent", mailgun_id)
        if self._replies is not None:
            self._replies.sent(plan, normalize(route_to) or route_to, message.mime, message.sender)
        if message.claim:
            self._drop_claim(message.claim)
        event(
            logging.INFO,
            "sent",
            stage="relay",
            outcome="sent",
            mailgun_id=mailgun_id,
            targets=list(targets),
            reason="fallback: the forward address would be invalid" if resolved.fallback_used else "",
            **fields,
        )
        return Outcome("sent", mailgun_id)

    def _age(self, delivery: Delivery) -> float | None:
        if delivery.publish_time is None:
            return None
        return self._clock() - delivery.publish_time.timestamp()

    def _give_up(self, failed: Failure, reason: str) -> Outcome:
        try:
            outcome = self._dead_letter(failed.data, failed.attributes, reason, failed.pubsub_id)
        except TransientError:
            self._release(failed.key)
            raise
        self._record(failed.key, "dead", reason)
        if failed.notify:
            self._notify(failed, reason)
        return outcome

    def _notify(self, failed: Failure, reason: str) -> None:
        """Tell the owner, with the original attached; a failure here is only logged (the dead letter exists)."""
        alias = failed.attributes.get("recipient", "")
        try:
            self._sender.send_mime([failed.notify], build_notice(failed.original, alias, reason, failed.notify))
        except (TransientError, PermanentError) as exc:
            event(
                logging.WARNING, f"notice not sent: {exc.reason}", stage="relay", alias=alias, outcome="notice failed"
            )
            return
        event(logging.INFO, "owner notified", stage="relay", alias=alias, outcome="notified", targets=[failed.notify])

    def _record(self, key: str, state: Any, detail: str) -> None:
        """Record the end of a delivery. If the ledger fails here, the message is still
        acknowledged: the only duplicate left is a redelivery Pub/Sub makes on its own
        after the lease, the one narrow window the README names."""
        try:
            self._ledger.delivery_done(key, state, detail)
        except LedgerUnavailable as exc:
            event(logging.ERROR, f"{state} but not recorded: {exc.reason}", stage="relay", outcome=state)

    def _drop_claim(self, ref: str) -> None:
        """The message is sent: its claim-check object can go (the lifecycle rule is the backstop)."""
        if self._claims is None:
            return
        try:
            self._claims.delete(ref)
        except (ClaimMissing, TransientError) as exc:
            event(logging.WARNING, f"claim-check object left for the lifecycle rule: {exc.reason}", stage="relay")

    def _release(self, key: str) -> None:
        try:
            self._ledger.release_delivery(key)
        except LedgerUnavailable as exc:
            event(logging.WARNING, f"lease not released (it runs out): {exc.reason}", stage="relay")

    def _dead_letter(self, data: bytes, attributes: dict[str, str], reason: str, pubsub_id: str) -> Outcome:
        self._deadletters.put(data, attributes, reason)
        event(
            logging.ERROR,
            f"dead-lettered: {reason}",
            stage="relay",
            outcome="dead-lettered",
            reason=reason,
            alias=attributes.get("recipient", ""),
            message_id=attributes.get("message_id", ""),
            pubsub_id=pubsub_id,
        )
        return Outcome("dead-lettered", reason)


class PubSubDeadLetters:
    """Dead letters published to their own topic, with the reason as an attribute."""

    def __init__(self, publisher: Any, clock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._clock = clock

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        stamped = {
            **attributes,
            "deadletter_reason": reason[:1000],
            "deadlettered_at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
        }
        self._publisher.publish(data, stamped)
