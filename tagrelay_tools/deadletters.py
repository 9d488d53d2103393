"""The dead-letter topic, read through its hold subscription: list and replay.

Messages get there two ways: the relay publishes permanent failures itself with
a ``deadletter_reason`` attribute, and in production the trigger subscription's
dead-letter policy forwards retry-exhausted messages (Pub/Sub then adds
``CloudPubSubDeadLetterSourceDeliveryCount``). ``list`` looks without taking:
it pulls everything, then hands it back (ack deadline 0). ``replay`` publishes
each message to the inbound topic again, marked ``replay`` so the relay delivers
it even though its delivery record says dead, and only then acknowledges it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

PULL_BATCH = 100
PULL_TIMEOUT_SECONDS = 10.0
MAX_MESSAGES = 10_000
DROPPED_ATTRIBUTES = ("deadletter_reason", "deadlettered_at", "original_pubsub_id")


@dataclass(frozen=True)
class DeadLetter:
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None

    @property
    def reason(self) -> str:
        if "deadletter_reason" in self.attributes:
            return self.attributes["deadletter_reason"]
        count = self.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount")
        return f"retries exhausted ({count} deliveries)" if count else "unknown (no reason attribute)"

    def age_seconds(self, now: datetime) -> float | None:
        return (now - self.publish_time).total_seconds() if self.publish_time else None

    def replay_attributes(self) -> dict[str, str]:
        kept = {k: v for k, v in self.attributes.items() if k not in DROPPED_ATTRIBUTES and not k.startswith("Cloud")}
        return {**kept, "replay": str(int(self.attributes.get("replay", "0") or 0) + 1)}


def rows(letters: list[DeadLetter], now: datetime) -> list[tuple[str, str, str, str]]:
    """(recipient, message id, age, reason) for printing, oldest first."""

    def age(letter: DeadLetter) -> float:
        return letter.age_seconds(now) or 0.0

    return [
        (
            letter.attributes.get("recipient", "?"),
            letter.attributes.get("message_id", ""),
            _human(age(letter)),
            letter.reason,
        )
        for letter in sorted(letters, key=age, reverse=True)
    ]


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


class DeadLetterQueue:
    def __init__(self, subscriber: Any, subscription_path: str) -> None:
        self._subscriber = subscriber
        self._path = subscription_path

    def take_all(self) -> list[DeadLetter]:
        """Pull every message (bounded); the caller must ack or give back each one."""
        letters: list[DeadLetter] = []
        while len(letters) < MAX_MESSAGES:
            response = self._subscriber.pull(
                subscription=self._path,
                max_messages=PULL_BATCH,
                return_immediately=True,
                timeout=PULL_TIMEOUT_SECONDS,
            )
            if not response.received_messages:
                break
            for received in response.received_messages:
                message = received.message
                publish_time = message.publish_time
                letters.append(
                    DeadLetter(
                        received.ack_id,
                        bytes(message.data),
                        dict(message.attributes),
                        publish_time.astimezone(UTC) if publish_time else None,
                    )
                )
        return letters

    def give_back(self, letters: list[DeadLetter]) -> None:
        for start in range(0, len(letters), PULL_BATCH):
            ids = [letter.ack_id for letter in letters[start : start + PULL_BATCH]]
            self._subscriber.modify_ack_deadline(
                subscription=self._path, ack_ids=ids, ack_deadline_seconds=0, timeout=PULL_TIMEOUT_SECONDS
            )

    def acknowledge(self, letters: list[DeadLetter]) -> None:
        for start in range(0, len(letters), PULL_BATCH):
            ids = [letter.ack_id for letter in letters[start : start + PULL_BATCH]]
            self._subscriber.acknowledge(subscription=self._path, ack_ids=ids, timeout=PULL_TIMEOUT_SECONDS)

    def replay(self, publish: Callable[[bytes, dict[str, str]], str], match: Callable[[DeadLetter], bool]) -> int:
        """Re-publish the matching dead letters to the inbound topic; give the others back."""
        letters = self.take_all()
        done: set[str] = set()
        try:
            for letter in letters:
                if match(letter):
                    publish(letter.data, letter.replay_attributes())
                    self.acknowledge([letter])
                    done.add(letter.ack_id)
        finally:
            self.give_back([letter for letter in letters if letter.ack_id not in done])
        return len(done)
