"""Delivery records, token bindings and refusal records.

Four collections, each with an ``expires_at`` field that a Firestore TTL policy
uses to delete old records, so the database does not grow without bound:

``tagrelay_deliveries`` (one per alias, targets and SHA-256 of the message bytes)
    ``state`` ``sending`` (with a lease from ``leased_at`` to ``lease_until``), ``retry``, ``sent`` (with the Mailgun
    id) or ``dead``, and the number of ``attempts``; then, from Mailgun's events
    (issue 12), ``delivered``, ``failed`` (permanent) or ``complained``. A
    redelivered message that is ``sent``, ``delivered``, ``complained``,
    ``failed`` or ``dead`` is acknowledged without sending; a dead-letter replay
    retakes ``dead`` and ``failed``; an expired lease is taken over; a live one
    means another instance is sending it right now. The fields:

    - from the relay: ``alias``, ``message_id``, ``targets`` (comma-separated),
      ``attempts``, ``lease_until``, ``detail`` (the Mailgun id, or why it is dead);
      with ``sent``, in the same write: ``mailgun_id`` (exactly as the API returned
      it, with ``<>``), ``pubsub_id``, ``received_at`` (Pub/Sub publish time) and
      ``sent_at`` (epoch seconds), ``attributes`` (the Pub/Sub attributes, for the
      dead letter of a later permanent failure) and the kept copy: ``message``
      (what came through Pub/Sub, up to KEEP_INLINE_BYTES) or ``blob`` (a
      ``sent/`` object in the claim-check bucket); a claim-checked message keeps
      its ``claim`` object instead (named in ``attributes``). The copy is dropped
      when every target's ``delivered`` arrived.
    - from events (:mod:`tagrelay.core.events`): ``recipients`` (recipient ->
      ``{state, reason, code, at}``, plus ``severity`` for a temporary failure),
      and of the last event that changed something ``event_at``, ``reason``,
      ``code``, ``severity``, ``event_message``.
    - ``unsure_since``/``unsure_until`` (epoch seconds, 0 when none): a send that may have
      reached Mailgun unseen (issue 12), kept until the relay resolves it through Mailgun's
      events. Taking over an expired ``sending`` lease adds that lease's window (the instance
      may have died inside the send). ``begin_delivery`` answers it as ``Begin.doubt``.
    - ``updated_at`` (epoch seconds) on every write; ``expires_at`` (the TTL) 8 days after the last start or event.

``tagrelay_event_tokens`` (one per event webhook token, until its timestamp is stale)
    Spent in the same commit that applies the event: a replayed post is refused.

``tagrelay_tokens`` (one per Mailgun token)
    ``digest``: the message the token was first seen with. Written in the same
    atomic commit that starts the first delivery of that message, so of two
    messages racing under one token exactly one is bound; the other is a
    "conflict" and is never delivered. (Ingest keeps no state: issue 11.)

``tagrelay_refusals`` (one per refused signed message, 7 days)
    reason, alias, sender, size, time and the message itself (inline when small,
    else in the claim-check bucket under ``refusals/``), and ``released`` once
    ``tagrelay refusals release`` published it again.

``begin_delivery`` first commits the creation of both records (the common case: a
new message, one round trip and no read); if either exists, it reads both in one
call and commits its writes in one batch whose every write carries a precondition
(create only if absent, update only if unchanged since the read): if anything
changed in between, nothing is written and the decision is taken again. ``FirestoreLedger`` talks to
Firestore (or its emulator); ``MemoryLedger`` is its in-memory twin with the same
rules (``tests/contract`` runs one suite against both).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tagrelay.adapters import firestore
from tagrelay.adapters.lazy import Lazy
from tagrelay.core import events
from tagrelay.core.errors import ClaimMissing, LedgerUnavailable, TransientError
from tagrelay.core.events import Change, Event, Recorded
from tagrelay.core.ports import Begin, ClaimStore, DeliveryState, Doubt, Record, Refusal

TOKENS = "tagrelay_tokens"
DELIVERIES = "tagrelay_deliveries"
REFUSALS = "tagrelay_refusals"
EVENT_TOKENS = "tagrelay_event_tokens"
EVENT_ROUNDS = 4  # read-decide-commit rounds of one event before answering "busy" (503)
LEDGER_TIMEOUT_SECONDS = 5.0
DELIVERY_KEEP_SECONDS = 8 * 24 * 3600  # past Pub/Sub's 7-day retention
TOKEN_KEEP_SECONDS = DELIVERY_KEEP_SECONDS  # a redelivery within Pub/Sub's retention still finds its binding
REFUSAL_KEEP_SECONDS = 7 * 24 * 3600
INLINE_REFUSAL_BYTES = 512 * 1024  # Firestore documents are capped at 1 MiB; bigger messages go to the bucket
BEGIN_ROUNDS = 4  # read-decide-commit rounds before answering "busy"


def document_id(text: str) -> str:
    """A safe Firestore document id for any string (tokens and keys are hashed)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def refusal_id(refusal: Refusal, token: str = "") -> str:
    """Deterministic: the same refused post (a retry after a 503) is one record, not two."""
    digest = hashlib.sha256(refusal.message).hexdigest()
    return document_id(f"{refusal.alias.lower()}\n{token}\n{digest}\n{refusal.reason}")[:32]


def _expiry(now: float, keep_seconds: float) -> datetime:
    return datetime.fromtimestamp(now + keep_seconds, UTC)


def _decide_delivery(record: dict[str, Any], now: float, retake_dead: bool) -> DeliveryState:
    state = record.get("state")
    if retake_dead and events.retakes(record):
        return "go"  # a dead-letter replay: dead, or a target failed permanently
    if state in ("sent", "dead", *events.FINAL):
        return "done"
    if state == "sending" and float(record.get("lease_until", 0)) > now:
        return "busy"
    return "go"


def _doubt(record: dict[str, Any]) -> Doubt | None:
    """What a record taken over leaves unresolved: its recorded unsure send, and, for a ``sending``
    record (its lease ran out: a live one is "busy"), that whole lease (it may have died mid-send).
    A record Mailgun's answer or its events proved accepted (a replay retaking ``failed``) leaves none:
    its send is known, and the Events API would find that send under the same delivery key."""
    if events.accepted(record):
        return None
    since = float(record.get("unsure_since") or 0)
    recorded = Doubt(since, max(since, float(record.get("unsure_until") or 0))) if since > 0 else None
    if record.get("state") != "sending":
        return recorded
    leased_at = float(record.get("leased_at") or record.get("updated_at") or 0)
    return Doubt(leased_at, max(leased_at, float(record.get("lease_until") or 0))).widen(recorded)


def _unsure_fields(doubt: Doubt | None) -> dict[str, float]:
    return {"unsure_since": doubt.since if doubt else 0.0, "unsure_until": doubt.until if doubt else 0.0}


@dataclass(frozen=True)
class _Plan:
    """What one begin_delivery round decided, from the two records it read."""

    begin: Begin
    write_token: bool = False
    record: dict[str, Any] | None = None  # the delivery record to write when begin.state == "go"


def _plan(
    token_record: dict[str, Any] | None,
    delivery: dict[str, Any] | None,
    now: float,
    lease_seconds: float,
    info: dict[str, str],
    retake_dead: bool,
    digest: str,
    check_token: bool,
) -> _Plan:
    previous = str(delivery.get("state", "")) if delivery is not None else ""
    if check_token and token_record is not None and token_record.get("digest") != digest:
        return _Plan(Begin("conflict", 0, str(token_record.get("digest", "")), previous))
    write_token = check_token and token_record is None
    attempts = int(delivery.get("attempts", 0)) if delivery is not None else 0
    doubt = None
    carried: dict[str, dict[str, Any]] = {}
    if delivery is not None:
        decision = _decide_delivery(delivery, now, retake_dead)
        if decision != "go":
            return _Plan(Begin(decision, attempts, str(delivery.get("detail", "")), previous), write_token)
        doubt = _doubt(delivery)
        carried = events.carried_over(delivery)
    record = {
        **info,
        "state": "sending",
        "leased_at": now,
        "lease_until": now + lease_seconds,
        "attempts": attempts + 1,
        "mailgun_id": "",  # a new send: events of an earlier one (before a replay) are stale
        "earlier_ids": events.earlier_ids(delivery) if delivery is not None else [],
        "recipients": carried,  # a replay: the targets that did not fail, not sent to again
        "updated_at": now,
        "expires_at": _expiry(now, DELIVERY_KEEP_SECONDS),
        **_unsure_fields(doubt),  # kept until resolved: this instance may die too
    }
    earlier = tuple(events.earlier_ids(delivery)) if delivery is not None and doubt is not None else ()
    begin = Begin("go", attempts + 1, "", previous, doubt, tuple(sorted(t.lower() for t in carried)), earlier)
    return _Plan(begin, write_token, record)


def _done_over(record: dict[str, Any], done: dict[str, Any]) -> dict[str, Any] | None:
    """The relay's end-of-send write over ``record``: ``sent`` keeps a higher state an event set first;
    ``dead`` does not overwrite a record an event showed Mailgun accepted (None: nothing to write)."""
    if done["state"] == "sent":
        return events.sent_fields(record, {**done, **_unsure_fields(None)})  # a send known: no doubt left
    return None if events.accepted(record) else done


def _copy_kept(done: Mapping[str, Any], written: Mapping[str, Any] | None) -> bool:
    """Whether the kept copy a ``sent`` write carried was stored (False: the record was delivered already)."""
    carried = "message" in done or "blob" in done
    return not carried or written is None or "message" in written or "blob" in written


def _merge(record: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """An update as Firestore applies it: top-level fields replaced, None deletes one."""
    for name, value in fields.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value


def _token_record(digest: str, now: float) -> dict[str, Any]:
    return {"digest": digest, "bound_at": now, "expires_at": _expiry(now, TOKEN_KEEP_SECONDS)}


def _refusal_record(refusal: Refusal, now: float) -> dict[str, Any]:
    return {
        "reason": refusal.reason[:1000],
        "alias": refusal.alias[:300],
        "sender": refusal.sender[:600],
        "size": len(refusal.message),
        "kind": refusal.kind,
        "attributes": dict(refusal.attributes or {}),
        "at": now,
        "released": "",
        "expires_at": _expiry(now, REFUSAL_KEEP_SECONDS),
    }


class MemoryLedger:
    """The in-memory twin of FirestoreLedger (same rules), for unit tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.refusals: dict[str, dict[str, Any]] = {}
        self.event_tokens: dict[str, float] = {}

    def begin_delivery(
        self,
        key: str,
        lease_seconds: float,
        info: dict[str, str],
        retake_dead: bool = False,
        token: str = "",
        digest: str = "",
        ignore_token: bool = False,
    ) -> Begin:
        with self._lock:
            now = self._clock()
            check = bool(token) and not ignore_token
            plan = _plan(
                self.tokens.get(token) if check else None,
                self.deliveries.get(key),
                now,
                lease_seconds,
                info,
                retake_dead,
                digest,
                check,
            )
            if plan.begin.state == "go":
                if plan.write_token:
                    self.tokens[token] = _token_record(digest, now)
                assert plan.record is not None
                self.deliveries.setdefault(key, {}).update(plan.record)  # as Firestore's update: other fields stay
            return plan.begin

    def delivery_done(
        self, key: str, state: Literal["sent", "dead"], detail: str, fields: Mapping[str, Any] | None = None
    ) -> bool:
        with self._lock:
            record = self.deliveries.get(key)
            if record is None:
                return True
            done = {**(fields or {}), "state": state, "detail": detail, "lease_until": 0, "updated_at": self._clock()}
            update = _done_over(record, done)
            if update is not None:
                record.update(update)
            return _copy_kept(done, update)

    def record_event(
        self,
        event: Event,
        token: str,
        token_expires: float,
        before_commit: Callable[[Change, dict[str, Any]], None],
    ) -> Recorded:
        with self._lock:
            if token in self.event_tokens:
                return Recorded("replayed")
            record = self.deliveries.get(event.key) if event.key else None
            if record is None:
                self.event_tokens[token] = token_expires
                return Recorded("unknown")
            seen = dict(record)
            change = events.apply(seen, event, self._clock())
            if change.outcome == "early":
                return Recorded("early", change, seen)
            if change.fields:
                before_commit(change, seen)
                _merge(record, change.fields)
            self.event_tokens[token] = token_expires
            return Recorded(change.outcome, change, seen)

    def release_delivery(self, key: str, doubt: Doubt | None = None, attempted: bool = True) -> None:
        with self._lock:
            record = self.deliveries.get(key)
            if record is not None and not events.accepted(record):
                record.update(state="retry", lease_until=0, updated_at=self._clock(), **_unsure_fields(doubt))
                if not attempted:
                    record["attempts"] = int(record.get("attempts", 0)) - 1

    def recent_deliveries(self, limit: int) -> list[Record]:
        with self._lock:
            ordered = sorted(self.deliveries.items(), key=lambda kv: -float(kv[1].get("updated_at", 0)))
            return [Record(k, dict(v)) for k, v in ordered[:limit]]

    def record_refusal(self, refusal: Refusal, token: str = "") -> str:
        with self._lock:
            ident = refusal_id(refusal, token)
            if ident not in self.refusals:
                self.refusals[ident] = {**_refusal_record(refusal, self._clock()), "message": bytes(refusal.message)}
            return ident

    def recent_refusals(self, limit: int) -> list[Record]:
        with self._lock:
            ordered = sorted(self.refusals.items(), key=lambda kv: -float(kv[1]["at"]))
            return [Record(k, {n: v for n, v in r.items() if n != "message"}) for k, r in ordered[:limit]]

    def refusal_message(self, ident: str) -> bytes:
        with self._lock:
            if ident not in self.refusals:
                raise KeyError(ident)
            return bytes(self.refusals[ident]["message"])

    def mark_released(self, ident: str, released: str) -> dict[str, Any] | None:
        """Mark a refusal released; the record, or None when it is unknown or was released already."""
        with self._lock:
            record = self.refusals.get(ident)
            if record is None or record.get("released"):
                return None
            record["released"] = released
            return {n: v for n, v in record.items() if n != "message"}

    def unmark_released(self, ident: str) -> None:
        with self._lock:
            if ident in self.refusals:
                self.refusals[ident]["released"] = ""


class FirestoreLedger:
    """The ledger on Firestore: reads in one call, writes in one batch with preconditions, each with a timeout."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        timeout: float = LEDGER_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
        blobs: ClaimStore | None = None,
    ) -> None:
        self._client = Lazy(client_factory)
        self._timeout = timeout
        self._clock = clock
        self._blobs = blobs  # where refused messages too large for a document go
        # The update time of this instance's lease write per delivery key, and the record it wrote, until its
        # sent write: the precondition that makes that write lose to an event that came first.
        self._leases: dict[str, Any] = {}

    def _db(self) -> Any:
        return self._client.get()

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One Firestore call with a bounded retry and timeout; outages become LedgerUnavailable.

        AlreadyExists and FailedPrecondition are answers (the record exists, someone
        else changed it first), not outages, so they pass through to the caller.
        """
        return firestore.call(
            operation, *args, timeout=self._timeout, answers=("AlreadyExists", "FailedPrecondition"), **kwargs
        )

    def _read(self, refs: list[Any]) -> dict[str, Any]:
        db = self._db()
        snapshots = self._call(lambda **kw: list(db.get_all(refs, **kw)))
        return {s.reference.path: s for s in snapshots}

    def begin_delivery(
        self,
        key: str,
        lease_seconds: float,
        info: dict[str, str],
        retake_dead: bool = False,
        token: str = "",
        digest: str = "",
        ignore_token: bool = False,
    ) -> Begin:
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition

        db = self._db()
        ref = db.collection(DELIVERIES).document(key)
        check = bool(token) and not ignore_token
        token_ref = db.collection(TOKENS).document(document_id(token)) if check else None
        # The common case first: neither record exists. Two creates in one commit, no read
        # (one round trip); if either exists the commit writes nothing and the records are read.
        now = self._clock()
        first = _plan(None, None, now, lease_seconds, info, retake_dead, digest, check)
        assert first.record is not None
        batch = db.batch()
        if token_ref is not None:
            batch.create(token_ref, _token_record(digest, now))
        batch.create(ref, first.record)
        try:
            self._leased(key, self._call(batch.commit), first.record)
            return first.begin
        except (AlreadyExists, FailedPrecondition):
            pass
        begin = Begin("busy", 0)
        for _ in range(BEGIN_ROUNDS):
            snapshots = self._read([ref] + ([token_ref] if token_ref is not None else []))
            delivery_snap = snapshots.get(ref.path)
            token_snap = snapshots.get(token_ref.path) if token_ref is not None else None
            delivery = delivery_snap.to_dict() if delivery_snap is not None and delivery_snap.exists else None
            bound = token_snap.to_dict() if token_snap is not None and token_snap.exists else None
            now = self._clock()
            plan = _plan(bound, delivery, now, lease_seconds, info, retake_dead, digest, check)
            begin = plan.begin
            if begin.state != "go":
                return begin
            assert plan.record is not None
            batch = db.batch()
            if plan.write_token and token_ref is not None:
                batch.create(token_ref, _token_record(digest, now))
            if delivery is None:
                batch.create(ref, plan.record)
            else:
                assert delivery_snap is not None
                batch.update(ref, plan.record, option=db.write_option(last_update_time=delivery_snap.update_time))
            try:
                self._leased(key, self._call(batch.commit), plan.record)
                return begin
            except (AlreadyExists, FailedPrecondition):
                continue  # someone wrote first: decide again on what they wrote
        return Begin("busy", begin.attempts, "", begin.previous)

    def delivery_done(
        self, key: str, state: Literal["sent", "dead"], detail: str, fields: Mapping[str, Any] | None = None
    ) -> bool:
        """One update with a precondition (nothing wrote since this instance's lease), so an event that came
        first is never overwritten; only then is the record read and merged (:func:`_done_over`)."""
        done = {**(fields or {}), "state": state, "detail": detail, "lease_until": 0, "updated_at": self._clock()}
        return _copy_kept(done, self._write_over(key, lambda record: _done_over(record, done)))

    def _write_over(self, key: str, decide: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Write ``decide(record)`` (None: nothing) to the delivery record: first on the lease write's update
        time, without a read; if something wrote since (an event), on what a read finds, with a precondition.
        Returns what was written (None: nothing)."""
        from google.api_core.exceptions import FailedPrecondition, NotFound

        db = self._db()
        ref = db.collection(DELIVERIES).document(key)
        leased = self._leases.pop(key, None)
        if leased is not None:
            leased, seen = leased
            mine = decide(dict(seen))  # the record as this instance's lease wrote it
            try:
                if mine is not None:
                    self._call(ref.update, mine, option=db.write_option(last_update_time=leased))
                return mine
            except FailedPrecondition:
                pass  # an event (or another instance) wrote first: decide on what is there
        for _ in range(BEGIN_ROUNDS):
            snapshot = self._call(ref.get)
            if not snapshot.exists:
                return None
            update = decide(snapshot.to_dict() or {})
            if update is None:
                return None
            try:
                self._call(ref.update, update, option=db.write_option(last_update_time=snapshot.update_time))
                return update
            except (FailedPrecondition, NotFound):
                continue
        raise LedgerUnavailable("the delivery record kept changing under concurrent events")

    def record_event(
        self,
        event: Event,
        token: str,
        token_expires: float,
        before_commit: Callable[[Change, dict[str, Any]], None],
    ) -> Recorded:
        """Spend the token and apply the event in one commit: a read of both documents, then a batch
        whose writes carry preconditions (token: create; record: unchanged since the read)."""
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition
        from google.cloud import firestore as fs

        db = self._db()
        token_ref = db.collection(EVENT_TOKENS).document(document_id(token))
        ref = db.collection(DELIVERIES).document(event.key) if event.key else None
        token_record = {"expires_at": datetime.fromtimestamp(token_expires, UTC), "key": event.key}
        for _ in range(EVENT_ROUNDS):
            snapshots = self._read([token_ref] + ([ref] if ref is not None else []))
            used = snapshots.get(token_ref.path)
            if used is not None and used.exists:
                return Recorded("replayed")
            snapshot = snapshots.get(ref.path) if ref is not None else None
            batch = db.batch()
            batch.create(token_ref, token_record)
            if snapshot is None or not snapshot.exists:
                result = Recorded("unknown")
            else:
                record = snapshot.to_dict() or {}
                change = events.apply(record, event, self._clock())
                if change.outcome == "early":
                    return Recorded("early", change, record)
                if change.fields:
                    before_commit(change, record)
                    update = {k: (fs.DELETE_FIELD if v is None else v) for k, v in change.fields.items()}
                    update["expires_at"] = _expiry(self._clock(), DELIVERY_KEEP_SECONDS)
                    assert ref is not None
                    batch.update(ref, update, option=db.write_option(last_update_time=snapshot.update_time))
                result = Recorded(change.outcome, change, record)
            try:
                self._call(batch.commit)
                return result
            except AlreadyExists:
                return Recorded("replayed")  # the same post, racing itself
            except FailedPrecondition:
                continue  # the record changed since the read: decide again
        raise LedgerUnavailable("the delivery record kept changing under concurrent events")

    def _leased(self, key: str, results: Any, record: dict[str, Any]) -> None:
        """Remember the lease write's update time (the delivery record is the batch's last write) and what it
        wrote (the fields a later decision reads: state, ids, recipients, targets)."""
        if len(self._leases) > 1000:  # leases given up without a sent write (retries, dead letters)
            self._leases.clear()
        written = list(results or [])
        if written and getattr(written[-1], "update_time", None) is not None:
            self._leases[key] = (written[-1].update_time, record)

    def release_delivery(self, key: str, doubt: Doubt | None = None, attempted: bool = True) -> None:
        from google.cloud.firestore import Increment

        released: dict[str, Any] = {"state": "retry", "lease_until": 0, "updated_at": self._clock()}
        released.update(_unsure_fields(doubt))
        if not attempted:  # the lease that only waited does not count
            released["attempts"] = Increment(-1)
        self._write_over(key, lambda record: None if events.accepted(record) else released)

    def recent_deliveries(self, limit: int) -> list[Record]:
        from google.cloud import firestore

        query = self._db().collection(DELIVERIES).order_by("updated_at", direction=firestore.Query.DESCENDING)
        documents = self._call(query.limit(limit).get)
        return [Record(d.id, d.to_dict() or {}) for d in documents]

    # -- refusals ----------------------------------------------------------------------

    def record_refusal(self, refusal: Refusal, token: str = "") -> str:
        """Keep a refusal: metadata and the message (inline, or in the bucket when large). Idempotent."""
        from google.api_core.exceptions import AlreadyExists

        ident = refusal_id(refusal, token)
        record = _refusal_record(refusal, self._clock())
        if len(refusal.message) <= INLINE_REFUSAL_BYTES:
            record["message"] = bytes(refusal.message)
        elif self._blobs is not None:
            try:
                record["blob"] = self._blobs.put(refusal.message, prefix="refusals/")
            except TransientError as exc:
                raise LedgerUnavailable(f"refused message not stored: {exc.reason}") from None
        else:
            record["message"] = bytes(refusal.message[:INLINE_REFUSAL_BYTES])
            record["truncated"] = True
        ref = self._db().collection(REFUSALS).document(ident)
        with contextlib.suppress(AlreadyExists):  # the same refused post, recorded by an earlier try
            self._call(ref.create, record)
        return ident

    def recent_refusals(self, limit: int) -> list[Record]:
        from google.cloud import firestore

        query = self._db().collection(REFUSALS).order_by("at", direction=firestore.Query.DESCENDING)
        documents = self._call(query.limit(limit).get)
        return [Record(d.id, {n: v for n, v in (d.to_dict() or {}).items() if n != "message"}) for d in documents]

    def refusal_message(self, ident: str) -> bytes:
        snapshot = self._call(self._db().collection(REFUSALS).document(ident).get)
        if not snapshot.exists:
            raise KeyError(ident)
        record = snapshot.to_dict() or {}
        if record.get("blob"):
            if self._blobs is None:
                raise LedgerUnavailable("the refused message is in the claim-check bucket; no bucket configured")
            try:
                return self._blobs.get(str(record["blob"]))
            except ClaimMissing:
                raise KeyError(ident) from None
        return bytes(record.get("message", b""))

    def mark_released(self, ident: str, released: str) -> dict[str, Any] | None:
        from google.api_core.exceptions import FailedPrecondition

        ref = self._db().collection(REFUSALS).document(ident)
        snapshot = self._call(ref.get)
        if not snapshot.exists:
            return None
        record = snapshot.to_dict() or {}
        if record.get("released"):
            return None
        try:
            option = self._db().write_option(last_update_time=snapshot.update_time)
            self._call(ref.update, {"released": released}, option=option)
        except FailedPrecondition:
            return None  # another release got there first
        return {n: v for n, v in record.items() if n != "message"}

    def unmark_released(self, ident: str) -> None:
        self._call(self._db().collection(REFUSALS).document(ident).update, {"released": ""})


def default_firestore(project: str) -> Callable[[], Any]:
    def create() -> Any:
        from google.cloud import firestore

        return firestore.Client(project=project)

    return create
