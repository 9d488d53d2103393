"""The collaborators a service takes, as Protocols: what a service needs, not who provides it.

Adapters (``tagrelay.adapters``) implement these against Google Cloud and Mailgun;
tests pass in-memory twins or real clients pointed at emulators and stand-ins.
Services import only this module and the rest of the core, never an adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from tagrelay.core.control import Snapshot
    from tagrelay.core.events import Change, Event, Recorded

DeliveryState = Literal["go", "done", "busy", "conflict"]


@dataclass(frozen=True)
class Doubt:
    """Earlier sends of a delivery that may have reached Mailgun without the relay learning it (issue 12):
    a send that timed out or lost its connection after the request was written, or a lease that ran out
    while the delivery was ``sending`` (the instance died or was killed, perhaps inside the send).

    Mailgun accepted such a send, if at all, between ``since`` and ``until`` (epoch seconds): from the
    start of the earliest unsure attempt to the end of the latest (its recorded failure, or its lease).
    """

    since: float
    until: float

    def widen(self, other: Doubt | None) -> Doubt:
        """Both windows in one (the earliest start, the latest end)."""
        if other is None:
            return self
        return Doubt(min(self.since, other.since), max(self.until, other.until))


@dataclass(frozen=True)
class Begin:
    state: DeliveryState  # "conflict": the token is bound to another message's digest (never deliver)
    attempts: int  # including this one, when state is "go"
    detail: str = ""  # the Mailgun id (or the dead-letter reason) when done; the bound digest on conflict
    previous: str = ""  # the record's state before this call ("" when new): "sent", "dead", "sending", ...
    doubt: Doubt | None = None  # when "go": an earlier send may have been accepted (ask Mailgun first)
    # When "go" retakes a record after a target failed (a dead-letter replay): the targets an earlier send
    # went to that did not fail (lower case); the replay is sent to the failed ones only.
    spared: tuple[str, ...] = ()
    # With a doubt: the Mailgun ids of the sends a dead-letter replay followed (``earlier_ids``); accepted under
    # the same delivery key, they are never taken for the send in doubt.
    earlier: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A signed message refused (406 at ingest, or never delivered by the relay), kept for review."""

    reason: str
    alias: str
    sender: str
    message: bytes  # the message as received (for a parsed form that could not be rebuilt: a form summary)
    kind: str = "message"  # "message" (releasable) or "form" (a summary only)
    attributes: dict[str, str] | None = None  # the Pub/Sub attributes, when the relay refused it


@dataclass(frozen=True)
class Record:
    key: str
    data: dict[str, Any]


class RefusalLog(Protocol):
    """Where refusals of signed mail are kept (7 days); returns the refusal id (the same post, the same id)."""

    def record_refusal(self, refusal: Refusal, token: str = "") -> str: ...


class Ledger(RefusalLog, Protocol):
    """Delivery records (each binding its Mailgun token to the message digest) and refusal records.

    ``begin_delivery`` starts a delivery in one atomic write: the token is bound to
    ``digest`` if it is not bound yet (first binding wins; a token bound to another
    digest answers "conflict" and starts nothing, unless ``ignore_token``), and the
    delivery record takes a lease ("go"), or is already done, or is leased elsewhere.
    A "go" carries the record's ``Doubt`` (kept in the record until a release clears
    it): a recorded unsure send, and a ``sending`` lease that ran out.

    ``release_delivery`` ends a lease without a result: ``doubt`` is what stays unresolved
    (None: nothing this delivery sent can have reached Mailgun); ``attempted=False`` says the
    lease sent nothing (it waited for Mailgun's events), so it does not count as an attempt.
    """

    def begin_delivery(
        self,
        key: str,
        lease_seconds: float,
        info: dict[str, str],
        retake_dead: bool = False,
        token: str = "",
        digest: str = "",
        ignore_token: bool = False,
    ) -> Begin: ...
    def delivery_done(
        self, key: str, state: Literal["sent", "dead"], detail: str, fields: Mapping[str, Any] | None = None
    ) -> bool:
        """Record the end of a send. ``fields`` go along in the same write (with ``sent``: the Mailgun
        id, times, Pub/Sub id and attributes, and the kept copy); events that came first keep their state.
        False when the kept copy in ``fields`` was not stored (events already said delivered to every
        target): the caller drops what it uploaded for it."""
        ...

    def release_delivery(self, key: str, doubt: Doubt | None = None, attempted: bool = True) -> None: ...
    def recent_deliveries(self, limit: int) -> list[Record]: ...


class EventLedger(Protocol):
    """Where Mailgun's events land: the delivery records and the used webhook tokens (issue 12).

    ``record_event`` spends ``token`` (first use wins; a used one answers "replayed" and writes
    nothing) and applies ``event`` to the record ``event.key`` with
    :func:`tagrelay.core.events.apply`, in one write with a precondition. ``before_commit``
    runs with the change and the record it was decided on before anything is written (a
    raise writes nothing); it may run again if the record changed meanwhile.
    """

    def record_event(
        self,
        event: Event,
        token: str,
        token_expires: float,
        before_commit: Callable[[Change, dict[str, Any]], None],
    ) -> Recorded: ...


class Publisher(Protocol):
    """Publishes one message and returns its Pub/Sub id once acknowledged (BusUnavailable otherwise)."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str: ...


class KeySource(Protocol):
    """A key that may rotate: ``get`` serves the current value (SecretUnavailable when it cannot)."""

    def get(self) -> str: ...


class ClaimStore(Protocol):
    """Where messages too large for Pub/Sub wait: ``put`` returns a reference for ``get`` and ``delete``.

    Every ``put`` makes a new object (never shared by two posts), so one delivery
    deleting its object can never take another delivery's data.
    """

    def put(self, data: bytes, prefix: str = "claims/") -> str: ...
    def get(self, ref: str) -> bytes: ...
    def delete(self, ref: str) -> None: ...


# A message as bytes, or as pieces sent one after the other (a new header block and a view of
# the body as received: a 25 MB body is never copied to be sent).
Mime = bytes | tuple[bytes | memoryview, ...]


def whole(mime: Mime) -> bytes:
    """The message in one piece (a copy when it came in pieces)."""
    return mime if isinstance(mime, bytes) else b"".join(mime)


DELIVERY_VARIABLE = "tagrelay-delivery"


class Sender(Protocol):
    """Sends a complete MIME message; returns the provider's message id.

    ``variables`` travel with the message as Mailgun user variables (``v:`` parameters)
    and come back in every event about it: ``DELIVERY_VARIABLE`` carries the delivery
    key, so an event maps to exactly one delivery record (issue 12).
    """

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str: ...


class SentLog(Protocol):
    """What Mailgun accepted, from its Events API (MailgunTransient when it cannot be asked).

    ``find_accepted`` answers the Mailgun id (as the send API returns it, ``<...>``) of an
    ``accepted`` event for ``recipient`` since ``since`` (epoch seconds) whose
    ``DELIVERY_VARIABLE`` user variable is ``delivery`` and whose id is not in ``skip`` (earlier sends of
    the same delivery, before a dead-letter replay); None when there is none.
    """

    def find_accepted(self, recipient: str, delivery: str, since: float, skip: Collection[str] = ()) -> str | None: ...


class StoredMessages(Protocol):
    """Fetches a message Mailgun stored (a ``store(notify=...)`` route) by its storage URL."""

    def fetch_stored(self, url: str) -> bytes: ...


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


# -- control of an alias without a redeploy (issue 14) -------------------------------------

AliasChange = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class AliasRecords(Protocol):
    """The alias documents (``tagrelay_aliases``; LedgerUnavailable when the store does not answer).

    ``controlled`` returns the control fields of every alias whose state is not active, in one
    query. ``change_alias`` reads one alias document, asks ``change`` for the fields to merge
    (None: leave it), and writes them only if the document did not change since the read
    (read again and asked again if it did); it returns the record before and the fields written.
    """

    def controlled(self) -> list[dict[str, Any]]: ...
    def read_alias(self, alias: str) -> dict[str, Any] | None: ...
    def change_alias(self, alias: str, change: AliasChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]: ...


class ControlStates(Protocol):
    """The control states ingest decides from, through a short cache (LedgerUnavailable when unknown)."""

    def current(self) -> Snapshot: ...


# -- what each alias receives (issue 14) ---------------------------------------------------


class AliasInsight(Protocol):
    """The per-alias record of ``tagrelay_aliases`` (LedgerUnavailable when the store does not answer).

    ``observe`` applies one message's write (a ``tagrelay.core.insight.Write``) in one round
    trip and returns the whole record, read after the write, only when ``domain`` was new
    to the alias (its count became 1), else None. ``claim_leak`` creates the marker of a
    flagged (alias, domain) once: False when it exists (another relay flagged it first).
    ``count_notice`` counts one flag against the day's notice limits, atomically (racing relays
    get distinct counts), and answers (flags of this alias that day, flags of every alias that day).
    """

    def observe(self, alias: str, write: Any, domain: str) -> dict[str, Any] | None: ...
    def update(self, alias: str, write: Any) -> None: ...
    def claim_leak(self, alias: str, domain: str, evidence: dict[str, Any]) -> bool: ...
    def count_notice(self, alias: str, day: str) -> tuple[int, int]: ...
