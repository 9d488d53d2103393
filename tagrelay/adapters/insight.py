"""The per-alias records of ``tagrelay_aliases`` (insight fields) and the leak markers.

``tagrelay_aliases/<sha256(alias)>``: the schema is in ``tagrelay.core.aliases`` and
``tagrelay.core.insight``. One message is one merge ``set`` whose counters are
transforms (``Increment``, ``Minimum``, ``Maximum``), so racing relays never lose a
count and no read is needed: the commit answers the new ``domains.<d>.count``, and
only when it is 1 is the document read (the leak check). A domain with dots is one
map key: ``set`` takes nested maps key by key (never split on dots), and the field
deletes name their path with ``FieldPath`` (quoted with backquotes on the wire).

``tagrelay_alias_leaks/<sha256(alias \\n domain)>``: created (precondition: absent)
when a leak is flagged, so of two relays that flag the same domain at once exactly
one notifies the owner. The day's notice counters live in the same collection
(``<sha256("notices" \\n day)>`` for every alias, ``<sha256("notices" \\n day \\n alias)>`` per
alias): one commit of two ``Increment`` writes per flag, whose answers are the new counts.

``FirestoreInsight`` talks to Firestore through ``tagrelay.adapters.firestore.call``
(a timeout on every call); ``MemoryInsight`` is its in-memory twin with the same rules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tagrelay.adapters import firestore
from tagrelay.adapters.lazy import Lazy
from tagrelay.adapters.ledger import document_id
from tagrelay.core.insight import Write, apply, count_path
from tagrelay.core.ports import Record

ALIASES = "tagrelay_aliases"
LEAK_MARKERS = "tagrelay_alias_leaks"
INSIGHT_TIMEOUT_SECONDS = 5.0
# A marker only has to outlive a race (the domain is in the alias's ``domains`` from then on, so never
# new again); ``expires_at`` lets a Firestore TTL policy on the collection delete it.
MARKER_KEEP_SECONDS = 30 * 24 * 3600


def leak_id(alias: str, domain: str) -> str:
    return document_id(f"{alias}\n{domain}")


def notice_id(day: str, alias: str = "") -> str:
    """The day's notice counter: of one alias, or (no alias) of every alias."""
    return document_id(f"notices\n{day}\n{alias}" if alias else f"notices\n{day}")


class MemoryInsight:
    """The in-memory twin of FirestoreInsight, for unit tests and the leak benchmark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.markers: dict[str, dict[str, Any]] = {}
        self.notices: dict[str, int] = {}
        self.round_trips = 0

    def observe(self, alias: str, write: Write, domain: str) -> dict[str, Any] | None:
        with self._lock:
            self.round_trips += 1
            record = self.records[document_id(alias)] = apply(self.records.get(document_id(alias), {}), write)
            path = count_path(domain) if domain else None
            if path is None or path not in write.increments:
                return None
            count = record.get("domains", {}).get(domain, {}).get("count")
            if count != 1:
                return None
            self.round_trips += 1
            return apply(record, Write())

    def update(self, alias: str, write: Write) -> None:
        with self._lock:
            self.round_trips += 1
            self.records[document_id(alias)] = apply(self.records.get(document_id(alias), {}), write)

    def claim_leak(self, alias: str, domain: str, evidence: dict[str, Any]) -> bool:
        with self._lock:
            self.round_trips += 1
            key = leak_id(alias, domain)
            if key in self.markers:
                return False
            self.markers[key] = {"alias": alias, "domain": domain, **evidence}
            return True

    def count_notice(self, alias: str, day: str) -> tuple[int, int]:
        with self._lock:
            self.round_trips += 1
            counts = [notice_id(day, alias), notice_id(day)]
            for key in counts:
                self.notices[key] = self.notices.get(key, 0) + 1
            return self.notices[counts[0]], self.notices[counts[1]]

    def aliases(self, limit: int) -> list[Record]:
        with self._lock:
            return [Record(k, apply(v, Write())) for k, v in list(self.records.items())[:limit]]

    def lookup(self, alias: str) -> dict[str, Any] | None:
        with self._lock:
            found = self.records.get(document_id(alias))
            return apply(found, Write()) if found is not None else None


class FirestoreInsight:
    """Alias records on Firestore: every call bounded by a timeout; outages become LedgerUnavailable."""

    def __init__(self, client_factory: Callable[[], Any], timeout: float = INSIGHT_TIMEOUT_SECONDS) -> None:
        self._client = Lazy(client_factory)
        self._timeout = timeout

    def _ref(self, alias: str) -> Any:
        return self._client.get().collection(ALIASES).document(document_id(alias))

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return firestore.call(
            operation,
            *args,
            timeout=self._timeout,
            answers=("AlreadyExists",),
            what="Firestore (aliases)",
            **kwargs,
        )

    def _write(self, alias: str, write: Write) -> Any:
        """One merge set; returns the commit's WriteResult (with the transform results)."""
        from google.cloud import firestore as fs

        data: dict[str, Any] = {}
        for path, value in write.sets.items():
            _nest(data, path, value)
        for path, by in write.increments.items():
            _nest(data, path, fs.Increment(by))
        for path, low in write.minimums.items():
            _nest(data, path, fs.Minimum(low))
        for path, high in write.maximums.items():
            _nest(data, path, fs.Maximum(high))
        for path in write.deletes:
            _nest(data, path, fs.DELETE_FIELD)
        return self._call(self._ref(alias).set, data, merge=True)

    def observe(self, alias: str, write: Write, domain: str) -> dict[str, Any] | None:
        result = self._write(alias, write)
        path = count_path(domain) if domain else None
        if path is None or path not in write.increments:
            return None
        values = list(getattr(result, "transform_results", ()) or ())
        order = write.transforms()
        if len(values) != len(order):  # not answered as expected: read to be sure (never miss a new domain)
            record = self.lookup(alias)
            entry = ((record or {}).get("domains") or {}).get(domain) or {}
            return record if entry.get("count") == 1 else None
        answered = values[order.index(path)]
        if int(getattr(answered, "integer_value", 0)) != 1:
            return None
        return self.lookup(alias)

    def update(self, alias: str, write: Write) -> None:
        self._write(alias, write)

    def claim_leak(self, alias: str, domain: str, evidence: dict[str, Any]) -> bool:
        from google.api_core.exceptions import AlreadyExists

        ref = self._client.get().collection(LEAK_MARKERS).document(leak_id(alias, domain))
        try:
            expires = datetime.now(UTC) + timedelta(seconds=MARKER_KEEP_SECONDS)
            self._call(ref.create, {"alias": alias, "domain": domain, **evidence, "expires_at": expires})
        except AlreadyExists:
            return False
        return True

    def count_notice(self, alias: str, day: str) -> tuple[int, int]:
        """One commit: both counters incremented; their new values come back as the transform results."""
        from google.cloud import firestore as fs

        client = self._client.get()
        expires = datetime.now(UTC) + timedelta(seconds=MARKER_KEEP_SECONDS)
        refs = [client.collection(LEAK_MARKERS).document(notice_id(day, name)) for name in (alias, "")]
        batch = client.batch()
        for ref in refs:
            batch.set(ref, {"count": fs.Increment(1), "day": day, "expires_at": expires}, merge=True)
        results = self._call(batch.commit)
        counts = []
        for ref, result in zip(refs, results, strict=True):
            values = list(getattr(result, "transform_results", ()) or ())
            if values:
                counts.append(int(getattr(values[0], "integer_value", 0)))
            else:  # not answered as expected: read it (a retried commit may count one flag twice: never fewer)
                snapshot = self._call(ref.get)
                counts.append(int((snapshot.to_dict() or {}).get("count", 0)) if snapshot.exists else 0)
        return counts[0], counts[1]

    def lookup(self, alias: str) -> dict[str, Any] | None:
        snapshot = self._call(self._ref(alias).get)
        return dict(snapshot.to_dict() or {}) if snapshot.exists else None

    def aliases(self, limit: int) -> list[Record]:
        documents = self._call(self._client.get().collection(ALIASES).limit(limit).get)
        return [Record(d.id, dict(d.to_dict() or {})) for d in documents]


def _nest(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    current = data
    for part in path[:-1]:
        current = current.setdefault(part, {})
    current[path[-1]] = value
