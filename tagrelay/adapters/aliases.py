"""Alias documents (``tagrelay_aliases``): the control fields ingest reads and the owner writes.

Schema in :mod:`tagrelay.core.aliases`, control fields in :mod:`tagrelay.core.control`.
One document per alias, id ``sha256(alias_key)`` (``tagrelay.adapters.ledger.document_id``).

- :meth:`FirestoreAliases.controlled` is the one query ingest makes, at most once per cache
  period per instance (``tagrelay.core.control.ControlCache``): every document whose ``state``
  is ``locked`` or ``blocked`` (an ``in`` filter on one field: no composite index), with only
  the control fields selected (the relay's ``domains`` map is not shipped to ingest).
- :meth:`FirestoreAliases.change_alias` is a read and a write in one transaction (tried again
  when aborted): two owners (or an owner and a block link) never overwrite each other's decision
  unseen, and the relay's insight writes to the same document wait for it instead of failing it
  (a precondition on the update time lost to every message of a flood: a sender could keep the
  owner from blocking). The transaction's begin and commit run under the client's default
  timeouts (60 s), its read under this adapter's.

Every call goes through ``tagrelay.adapters.firestore.call`` (bounded retry, timeout; outages
become LedgerUnavailable). ``MemoryAliases`` is the in-memory twin with the same rules.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tagrelay.adapters import firestore
from tagrelay.adapters.lazy import Lazy
from tagrelay.adapters.ledger import document_id
from tagrelay.core.errors import LedgerUnavailable
from tagrelay.core.ports import AliasChange

ALIASES = "tagrelay_aliases"
CONTROL_FIELDS = ("alias", "state", "lock_mode", "allowed", "state_changed_at", "unblocked_at")
CONTROLLED_STATES = ["locked", "blocked"]
ALIASES_TIMEOUT_SECONDS = 3.0  # ingest waits for the query on the one post that refreshes the cache
CHANGE_ROUNDS = 4


def _merge(record: dict[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    return {**(record or {}), **fields}


class MemoryAliases:
    """The in-memory twin of FirestoreAliases, for unit tests (``records`` keyed by alias)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.queries = 0  # how many times controlled() was called (the cache's round trips)
        self.down = False  # True: every call raises LedgerUnavailable, as an outage would
        self._versions: dict[str, int] = {}  # per alias, bumped by every write (Firestore's update time)

    def _check(self) -> None:
        if self.down:
            raise LedgerUnavailable("Firestore (aliases) failed (ServiceUnavailable)")

    def controlled(self) -> list[dict[str, Any]]:
        with self._lock:
            self.queries += 1
            self._check()
            return [
                {k: v for k, v in r.items() if k in CONTROL_FIELDS}
                for r in self.records.values()
                if r.get("state") in CONTROLLED_STATES
            ]

    def read_alias(self, alias: str) -> dict[str, Any] | None:
        with self._lock:
            self._check()
            record = self.records.get(alias)
            return dict(record) if record is not None else None

    def change_alias(self, alias: str, change: AliasChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Like Firestore's: read, decide outside the lock, write only if nobody wrote in between."""
        for _ in range(CHANGE_ROUNDS):
            with self._lock:
                self._check()
                before = self.records.get(alias)
                snapshot = dict(before) if before is not None else None
                version = self._versions.get(alias, 0)
            fields = change(dict(snapshot) if snapshot is not None else None)
            if fields is None:
                return snapshot, None
            with self._lock:
                if self._versions.get(alias, 0) != version:
                    continue  # changed in between: decide again
                self.records[alias] = _merge(self.records.get(alias), fields)
                self._versions[alias] = version + 1
                return snapshot, fields
        raise LedgerUnavailable(f"the alias document kept changing ({CHANGE_ROUNDS} tries); try again")


class FirestoreAliases:
    """Alias documents on Firestore (or its emulator); every call bounded by a timeout."""

    def __init__(self, client_factory: Callable[[], Any], timeout: float = ALIASES_TIMEOUT_SECONDS) -> None:
        self._client = Lazy(client_factory)
        self._timeout = timeout

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return firestore.call(
            operation,
            *args,
            timeout=self._timeout,
            answers=("AlreadyExists", "FailedPrecondition"),
            what="Firestore (aliases)",
            **kwargs,
        )

    def _ref(self, alias: str) -> Any:
        return self._client.get().collection(ALIASES).document(document_id(alias))

    def controlled(self) -> list[dict[str, Any]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            self._client.get()
            .collection(ALIASES)
            .where(filter=FieldFilter("state", "in", CONTROLLED_STATES))
            .select(list(CONTROL_FIELDS))
        )
        return [d.to_dict() or {} for d in self._call(query.get)]

    def read_alias(self, alias: str) -> dict[str, Any] | None:
        snapshot = self._call(self._ref(alias).get)
        return (snapshot.to_dict() or {}) if snapshot.exists else None

    def change_alias(self, alias: str, change: AliasChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One transaction: its read locks the document (Firestore's server-side transactions are
        pessimistic), so the relay's insight writes wait for the decision instead of failing it: a
        sender flooding the alias cannot keep its owner from blocking it. Two control changes at once
        still never overwrite each other unseen (the later one is decided again on what the first wrote)."""
        from google.cloud import firestore as fs

        client = self._client.get()
        ref = self._ref(alias)

        @fs.transactional
        def run(transaction: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            snapshot = self._call(ref.get, transaction=transaction)
            before = (snapshot.to_dict() or {}) if snapshot.exists else None
            fields = change(dict(before) if before is not None else None)
            if fields is not None:
                transaction.set(ref, fields, merge=True)
            return before, fields

        def attempt(retry: Any = None, timeout: float | None = None) -> Any:
            return run(client.transaction(max_attempts=CHANGE_ROUNDS))

        try:
            found: tuple[dict[str, Any] | None, dict[str, Any] | None] = self._call(attempt)
        except ValueError:  # every attempt aborted by a concurrent change
            raise LedgerUnavailable(f"the alias document kept changing ({CHANGE_ROUNDS} tries); try again") from None
        return found
