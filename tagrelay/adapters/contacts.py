"""Contact records: who wrote to each alias, and the pair each reverse address stands for.

Collection ``tagrelay_contacts``, one document per (alias, correspondent), keyed by
the contact id of its reverse address (``tagrelay.core.reverse.contact_id``, which
does not change when the reply key rotates)::

    alias, correspondent        the pair (lower case)
    first_seen, last_seen       seconds since the epoch
    received, replied           messages forwarded to the owner / replies sent as the alias
    blocked                     true: the reverse address refuses with 406 (set it by hand,
                                or with ``tagrelay contact --block``)

Counts are informational: a message the relay sends twice after a crash between the
send and the record counts twice. ``FirestoreContacts`` talks to Firestore (or its
emulator); ``MemoryContacts`` is its in-memory twin with the same rules.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from tagrelay.adapters import firestore
from tagrelay.adapters.lazy import Lazy
from tagrelay.core.ports import Contact, ContactCount

CONTACTS = "tagrelay_contacts"
CONTACTS_TIMEOUT_SECONDS = 5.0
DIRECTIONS: tuple[ContactCount, ...] = ("received", "replied")


def _contact(key: str, data: dict[str, Any]) -> Contact:
    return Contact(
        key=key,
        alias=str(data.get("alias", "")),
        correspondent=str(data.get("correspondent", "")),
        blocked=bool(data.get("blocked", False)),
        received=int(data.get("received", 0)),
        replied=int(data.get("replied", 0)),
        first_seen=float(data.get("first_seen", 0.0)),
        last_seen=float(data.get("last_seen", 0.0)),
    )


def _fresh(alias: str, correspondent: str, now: float) -> dict[str, Any]:
    return {
        "alias": alias.lower(),
        "correspondent": correspondent.lower(),
        "first_seen": now,
        "last_seen": now,
        "received": 0,
        "replied": 0,
        "blocked": False,
    }


class MemoryContacts:
    """The in-memory twin of FirestoreContacts, for unit tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}

    def remember(self, key: str, alias: str, correspondent: str) -> None:
        with self._lock:
            self.records.setdefault(key, _fresh(alias, correspondent, self._clock()))

    def lookup(self, key: str) -> Contact | None:
        with self._lock:
            record = self.records.get(key)
            return _contact(key, record) if record is not None else None

    def count(self, key: str, direction: ContactCount) -> None:
        with self._lock:
            record = self.records.get(key)
            if record is not None:
                record[direction] = int(record.get(direction, 0)) + 1
                record["last_seen"] = self._clock()

    def list_alias(self, alias: str, limit: int) -> list[Contact]:
        with self._lock:
            found = [_contact(k, v) for k, v in self.records.items() if v.get("alias") == alias.lower()]
        return sorted(found, key=lambda c: -c.last_seen)[:limit]

    def block(self, key: str, blocked: bool = True) -> None:
        with self._lock:
            self.records[key]["blocked"] = blocked


class FirestoreContacts:
    """Contact records on Firestore: every call bounded by a timeout; outages become LedgerUnavailable."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        timeout: float = CONTACTS_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = Lazy(client_factory)
        self._timeout = timeout
        self._clock = clock

    def _ref(self, key: str) -> Any:
        return self._client.get().collection(CONTACTS).document(key)

    def _call(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        answers = ("AlreadyExists", "NotFound")  # answers, not outages
        return firestore.call(
            operation, *args, timeout=self._timeout, answers=answers, what="Firestore (contacts)", **kwargs
        )

    def remember(self, key: str, alias: str, correspondent: str) -> None:
        from google.api_core.exceptions import AlreadyExists

        with contextlib.suppress(AlreadyExists):  # a record is never overwritten: its counts and block stay
            self._call(self._ref(key).create, _fresh(alias, correspondent, self._clock()))

    def lookup(self, key: str) -> Contact | None:
        snapshot = self._call(self._ref(key).get)
        return _contact(key, snapshot.to_dict() or {}) if snapshot.exists else None

    def count(self, key: str, direction: ContactCount) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import firestore

        with contextlib.suppress(NotFound):  # deleted by hand meanwhile: nothing to count on
            self._call(self._ref(key).update, {direction: firestore.Increment(1), "last_seen": self._clock()})

    def list_alias(self, alias: str, limit: int) -> list[Contact]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._client.get().collection(CONTACTS).where(filter=FieldFilter("alias", "==", alias.lower()))
        documents = self._call(query.limit(limit).get)
        return sorted((_contact(d.id, d.to_dict() or {}) for d in documents), key=lambda c: -c.last_seen)

    def block(self, key: str, blocked: bool = True) -> None:
        self._call(self._ref(key).update, {"blocked": blocked})
