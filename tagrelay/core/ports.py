"""The collaborators a service takes, as Protocols: what a service needs, not who provides it.

Adapters (``tagrelay.adapters``) implement these against Google Cloud and Mailgun;
tests pass in-memory twins or real clients pointed at emulators and stand-ins.
Services import only this module and the rest of the core, never an adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

TokenClaim = Literal["new", "duplicate", "busy", "conflict"]
DeliveryState = Literal["go", "done", "busy"]


@dataclass(frozen=True)
class Begin:
    state: DeliveryState
    attempts: int  # including this one, when state is "go"
    detail: str = ""  # the Mailgun id when done


@dataclass(frozen=True)
class Record:
    key: str
    data: dict[str, Any]


class Ledger(Protocol):
    """Idempotency records: replay records per Mailgun token, delivery records per delivery."""

    def claim_token(self, token: str, digest: str, lease_seconds: float, keep_seconds: float) -> TokenClaim: ...
    def token_published(self, token: str) -> None: ...
    def release_token(self, token: str) -> None: ...
    def begin_delivery(
        self, key: str, lease_seconds: float, info: dict[str, str], retake_dead: bool = False
    ) -> Begin: ...
    def delivery_done(self, key: str, state: Literal["sent", "dead"], detail: str) -> None: ...
    def release_delivery(self, key: str) -> None: ...
    def recent_deliveries(self, limit: int) -> list[Record]: ...


class Publisher(Protocol):
    """Publishes one message and returns its Pub/Sub id once acknowledged (BusUnavailable otherwise)."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str: ...


class KeySource(Protocol):
    """A key that may rotate: ``get`` serves the current value (SecretUnavailable when it cannot)."""

    def get(self) -> str: ...


class ClaimStore(Protocol):
    """Where messages too large for Pub/Sub wait: ``put`` returns a reference for ``get`` and ``delete``."""

    def put(self, data: bytes) -> str: ...
    def get(self, ref: str) -> bytes: ...
    def delete(self, ref: str) -> None: ...


class Sender(Protocol):
    """Sends a complete MIME message; returns the provider's message id."""

    def send_mime(self, to: Sequence[str], mime: bytes) -> str: ...


class DeadLetters(Protocol):
    """Keeps a message that cannot be delivered, with the reason."""

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None: ...


# -- reply as the alias (issue 13) -------------------------------------------------------

ContactCount = Literal["received", "replied"]


@dataclass(frozen=True)
class Contact:
    """Who wrote to an alias: the pair a reverse address stands for, and what went each way."""

    key: str  # the contact id of the reverse address (tagrelay.core.reverse.contact_id)
    alias: str
    correspondent: str
    blocked: bool = False
    received: int = 0  # messages forwarded from the correspondent to the owner
    replied: int = 0  # replies sent from the owner to the correspondent
    first_seen: float = 0.0
    last_seen: float = 0.0


class Contacts(Protocol):
    """Contact records (LedgerUnavailable when the store does not answer).

    ``remember`` creates the record if it is not there (idempotent; never resets
    counts or ``blocked``); ``count`` adds one message in a direction.
    """

    def remember(self, key: str, alias: str, correspondent: str) -> None: ...
    def lookup(self, key: str) -> Contact | None: ...
    def count(self, key: str, direction: ContactCount) -> None: ...
    def list_alias(self, alias: str, limit: int) -> list[Contact]: ...
