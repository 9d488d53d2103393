"""The relay service: Pub/Sub delivery → route → rewrite → send through Mailgun.

The retry idiom of Cloud Functions: raise to be redelivered, return to stop.

- transient failures (Mailgun 429/5xx/timeouts, the key store) raise, so
  Pub/Sub redelivers with backoff, until the message is older than the
  max-age guard; then it is dead-lettered instead of spinning forever;
- permanent failures (Mailgun 4xx, no route any more, not a tagrelay message)
  go to the dead-letter sink with the reason and are acknowledged.

Nothing is dropped without a record: a dead-letter publish that fails raises too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tagrelay.envelope import Delivery, SchemaError, from_cloud_event_data
from tagrelay.errors import PermanentError, TransientError
from tagrelay.log import event
from tagrelay.rewrite import rewrite
from tagrelay.routes import Reject, Routes, normalize

MAX_INLINE_WAIT_SECONDS = 10.0  # longest Retry-After honoured by sleeping before the redelivery


class Sender(Protocol):
    def send_mime(self, to: Sequence[str], mime: bytes) -> str: ...


class DeadLetters(Protocol):
    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: str  # "sent" or "dead-lettered"
    detail: str


class Relay:
    def __init__(
        self,
        routes: Routes,
        sender: Sender,
        deadletters: DeadLetters,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._routes = routes
        self._sender = sender
        self._deadletters = deadletters
        self._max_age = max_age_seconds
        self._clock = clock
        self._sleep = sleep

    def handle_event_data(self, data: Any) -> Outcome:
        """Handle the data of a Pub/Sub CloudEvent; raises TransientError to be redelivered."""
        try:
            delivery = from_cloud_event_data(data)
        except SchemaError as exc:
            raw = json.dumps(data, default=str).encode("utf-8") if not isinstance(data, bytes) else data
            return self._dead_letter(raw, {}, f"not a tagrelay message: {exc}", "")
        return self.handle(delivery)

    def handle(self, delivery: Delivery) -> Outcome:
        message = delivery.envelope
        fields = {"alias": message.recipient, "message_id": message.message_id, "pubsub_id": delivery.pubsub_id}
        attributes = {**message.attributes(), "original_pubsub_id": delivery.pubsub_id}
        resolved = self._routes.resolve(message.recipient)
        if isinstance(resolved, Reject):
            reason = f"no route any more: {resolved.reason}"
            return self._dead_letter(message.mime, attributes, reason, delivery.pubsub_id)
        try:
            rewritten = rewrite(message.mime, normalize(message.recipient) or message.recipient, message.sender)
        except ValueError as exc:
            return self._dead_letter(message.mime, attributes, f"cannot rewrite: {exc}", delivery.pubsub_id)
        try:
            mailgun_id = self._sender.send_mime(resolved.targets, rewritten.mime)
        except PermanentError as exc:
            return self._dead_letter(message.mime, attributes, exc.reason, delivery.pubsub_id)
        except TransientError as exc:
            age = self._age(delivery)
            if age is not None and age > self._max_age:
                return self._dead_letter(
                    message.mime, attributes, f"gave up after {age:.0f}s of retries: {exc.reason}", delivery.pubsub_id
                )
            event(logging.WARNING, f"will retry: {exc.reason}", stage="relay", outcome="retry", **fields)
            wait = getattr(exc, "retry_after", None)
            if wait:
                self._sleep(min(float(wait), MAX_INLINE_WAIT_SECONDS))
            raise
        event(
            logging.INFO,
            "sent",
            stage="relay",
            outcome="sent",
            mailgun_id=mailgun_id,
            targets=list(resolved.targets),
            reason="fallback: target was not a valid address" if resolved.fallback_used else "",
            **fields,
        )
        return Outcome("sent", mailgun_id)

    def _age(self, delivery: Delivery) -> float | None:
        if delivery.publish_time is None:
            return None
        return self._clock() - delivery.publish_time.timestamp()

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
