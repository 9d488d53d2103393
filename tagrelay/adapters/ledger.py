"""Idempotency records: ingest replay records and relay delivery records.

Two collections, both with an ``expires_at`` field that a Firestore TTL policy
uses to delete old records, so the database does not grow without bound:

``tagrelay_tokens`` (one per Mailgun token, kept for the retry horizon)
    ``hash`` of the posted form, ``state`` ``publishing`` (with ``lease_until``)
    or ``published``. A Mailgun retry with the same token and the same content
    is answered 200 without publishing again; the same token with other content
    is refused. The first claim is a create-if-absent write, so of two
    concurrent identical posts exactly one publishes.

``tagrelay_deliveries`` (one per alias, targets and Message-ID or body hash)
    ``state`` ``sending`` (with a lease), ``retry``, ``sent`` (with the Mailgun
    id) or ``dead``, and the number of ``attempts``. A redelivered message that
    is already ``sent`` is acknowledged without sending; an expired lease is
    taken over; a live one means another instance is sending it right now.

Every change after the first write is conditional on the record's
``update_time`` (optimistic concurrency), so two instances never both take a
lease. ``FirestoreLedger`` talks to Firestore (or its emulator);
``MemoryLedger`` is its in-memory twin for unit tests, with the same rules.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from tagrelay.adapters.lazy import Lazy
from tagrelay.core.errors import LedgerUnavailable
from tagrelay.core.ports import Begin, DeliveryState, Record, TokenClaim

TOKENS = "tagrelay_tokens"
DELIVERIES = "tagrelay_deliveries"
LEDGER_TIMEOUT_SECONDS = 5.0
DELIVERY_KEEP_SECONDS = 8 * 24 * 3600  # past Pub/Sub's 7-day retention

def document_id(text: str) -> str:
    """A safe Firestore document id for any string (tokens and keys are hashed)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _expiry(now: float, keep_seconds: float) -> datetime:
    return datetime.fromtimestamp(now + keep_seconds, UTC)


def _decide_token(record: dict[str, Any], digest: str, now: float) -> TokenClaim:
    if record.get("hash") != digest:
        return "conflict"
    if record.get("state") == "published":
        return "duplicate"
    if float(record.get("lease_until", 0)) > now:
        return "busy"
    return "new"


def _decide_delivery(record: dict[str, Any], now: float, retake_dead: bool) -> DeliveryState:
    state = record.get("state")
    if state == "sent" or (state == "dead" and not retake_dead):
        return "done"
    if state == "sending" and float(record.get("lease_until", 0)) > now:
        return "busy"
    return "go"


class MemoryLedger:
    """The in-memory twin of FirestoreLedger (same rules), for unit tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, dict[str, Any]] = {}

    def claim_token(self, token: str, digest: str, lease_seconds: float, keep_seconds: float) -> TokenClaim:
        with self._lock:
            now = self._clock()
            record = self.tokens.get(token)
            claim: TokenClaim = "new" if record is None else _decide_token(record, digest, now)
            if claim == "new":
                self.tokens[token] = {
                    "hash": digest,
                    "state": "publishing",
                    "lease_until": now + lease_seconds,
                    "expires_at": _expiry(now, keep_seconds),
                }
            return claim

    def token_published(self, token: str) -> None:
        with self._lock:
            self.tokens[token]["state"] = "published"

    def release_token(self, token: str) -> None:
        with self._lock:
            self.tokens.pop(token, None)

    def begin_delivery(self, key: str, lease_seconds: float, info: dict[str, str], retake_dead: bool = False) -> Begin:
        with self._lock:
            now = self._clock()
            record = self.deliveries.get(key)
            if record is not None:
                decision = _decide_delivery(record, now, retake_dead)
                if decision != "go":
                    return Begin(decision, int(record.get("attempts", 0)), str(record.get("detail", "")))
            attempts = 1 + int(record.get("attempts", 0)) if record else 1
            self.deliveries[key] = {
                **info,
                "state": "sending",
                "lease_until": now + lease_seconds,
                "attempts": attempts,
                "updated_at": now,
                "expires_at": _expiry(now, DELIVERY_KEEP_SECONDS),
            }
            return Begin("go", attempts)

    def delivery_done(self, key: str, state: Literal["sent", "dead"], detail: str) -> None:
        with self._lock:
            self.deliveries[key].update(state=state, detail=detail, lease_until=0, updated_at=self._clock())

    def release_delivery(self, key: str) -> None:
        with self._lock:
            if key in self.deliveries:
                self.deliveries[key].update(state="retry", lease_until=0, updated_at=self._clock())

    def recent_deliveries(self, limit: int) -> list[Record]:
        with self._lock:
            ordered = sorted(self.deliveries.items(), key=lambda kv: -float(kv[1].get("updated_at", 0)))
            return [Record(k, dict(v)) for k, v in ordered[:limit]]


class FirestoreLedger:
    """The ledger on Firestore: single-document writes with preconditions, each with a timeout."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        timeout: float = LEDGER_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = Lazy(client_factory)
        self._timeout = timeout
        self._clock = clock

    def _db(self) -> Any:
        return self._client.get()

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Firestore call with a bounded retry and timeout; outages become LedgerUnavailable.

        AlreadyExists and FailedPrecondition are answers (the record exists, someone
        else changed it first), not outages, so they pass through to the caller.
        """
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition, GoogleAPIError
        from google.api_core.retry import Retry

        retry = Retry(initial=0.1, maximum=1.0, timeout=self._timeout)
        try:
            return operation(*args, retry=retry, timeout=self._timeout, **kwargs)
        except (AlreadyExists, FailedPrecondition):
            raise
        except GoogleAPIError as exc:
            raise LedgerUnavailable(f"Firestore failed ({type(exc).__name__})") from None

    def claim_token(self, token: str, digest: str, lease_seconds: float, keep_seconds: float) -> TokenClaim:
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition

        ref = self._db().collection(TOKENS).document(document_id(token))
        now = self._clock()
        fresh = {
            "hash": digest,
            "state": "publishing",
            "lease_until": now + lease_seconds,
            "expires_at": _expiry(now, keep_seconds),
        }
        try:
            self._call(ref.create, fresh)
            return "new"
        except AlreadyExists:
            pass
        snapshot = self._call(ref.get)
        if not snapshot.exists:
            return "busy"  # released between our two calls: the retry will create it
        claim = _decide_token(snapshot.to_dict() or {}, digest, now)
        if claim != "new":
            return claim
        try:
            option = self._db().write_option(last_update_time=snapshot.update_time)
            self._call(ref.update, {"lease_until": now + lease_seconds}, option=option)
        except (FailedPrecondition, AlreadyExists):
            return "busy"
        return "new"

    def token_published(self, token: str) -> None:
        ref = self._db().collection(TOKENS).document(document_id(token))
        self._call(ref.update, {"state": "published", "lease_until": 0})

    def release_token(self, token: str) -> None:
        ref = self._db().collection(TOKENS).document(document_id(token))
        self._call(ref.delete)

    def begin_delivery(self, key: str, lease_seconds: float, info: dict[str, str], retake_dead: bool = False) -> Begin:
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition

        ref = self._db().collection(DELIVERIES).document(key)
        now = self._clock()
        fresh = {
            **info,
            "state": "sending",
            "lease_until": now + lease_seconds,
            "attempts": 1,
            "updated_at": now,
            "expires_at": _expiry(now, DELIVERY_KEEP_SECONDS),
        }
        try:
            self._call(ref.create, fresh)
            return Begin("go", 1)
        except AlreadyExists:
            pass
        snapshot = self._call(ref.get)
        record = snapshot.to_dict() or {}
        decision = _decide_delivery(record, now, retake_dead) if snapshot.exists else "busy"
        attempts = int(record.get("attempts", 0))
        if decision != "go":
            return Begin(decision, attempts, str(record.get("detail", "")))
        try:
            option = self._db().write_option(last_update_time=snapshot.update_time)
            self._call(ref.update, {**fresh, "attempts": attempts + 1}, option=option)
        except (FailedPrecondition, AlreadyExists):
            return Begin("busy", attempts)
        return Begin("go", attempts + 1)

    def delivery_done(self, key: str, state: Literal["sent", "dead"], detail: str) -> None:
        ref = self._db().collection(DELIVERIES).document(key)
        self._call(ref.update, {"state": state, "detail": detail, "lease_until": 0, "updated_at": self._clock()})

    def release_delivery(self, key: str) -> None:
        ref = self._db().collection(DELIVERIES).document(key)
        self._call(ref.update, {"state": "retry", "lease_until": 0, "updated_at": self._clock()})

    def recent_deliveries(self, limit: int) -> list[Record]:
        from google.cloud import firestore

        query = self._db().collection(DELIVERIES).order_by("updated_at", direction=firestore.Query.DESCENDING)
        documents = self._call(query.limit(limit).get)
        return [Record(d.id, d.to_dict() or {}) for d in documents]


def default_firestore(project: str) -> Callable[[], Any]:
    def create() -> Any:
        from google.cloud import firestore

        return firestore.Client(project=project)

    return create
