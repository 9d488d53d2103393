"""The alias documents' contract (issue 14), run against MemoryAliases and FirestoreAliases on the emulator:
the one query returns exactly the non-active aliases with only the control fields; a change is a merge that
never overwrites a write it did not see."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tagrelay.adapters.aliases import FirestoreAliases, MemoryAliases
from tagrelay.adapters.insight import FirestoreInsight
from tagrelay.core import control, insight
from tagrelay.core.ports import AliasRecords


def setter(fields: dict[str, Any]) -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    return lambda _: fields


@pytest.fixture(params=["memory", "firestore"])
def aliases(request: pytest.FixtureRequest) -> Iterator[AliasRecords]:
    if request.param == "memory":
        yield MemoryAliases()
        return
    host = request.getfixturevalue("firestore_host")
    project = "aliases-" + uuid.uuid4().hex[:8]  # a fresh database per test
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host
    from google.cloud import firestore

    try:
        yield FirestoreAliases(lambda: firestore.Client(project=project))
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


def test_controlled_returns_only_blocked_and_locked_aliases_with_their_control_fields(aliases: AliasRecords) -> None:
    seen = {"github.com": {"count": 4, "first_seen": 1.0}}
    for alias, state in (("a@example.org", "blocked"), ("b@example.org", "locked"), ("c@example.org", "active")):
        aliases.change_alias(alias, setter({"alias": alias, "state": state, "domains": seen}))
    aliases.change_alias("d@example.org", lambda _: {"alias": "d@example.org", "domains": seen})  # insight only
    found = sorted(aliases.controlled(), key=lambda r: str(r["alias"]))
    assert found == [{"alias": "a@example.org", "state": "blocked"}, {"alias": "b@example.org", "state": "locked"}]


def test_a_change_merges_into_what_the_relay_wrote_and_none_writes_nothing(aliases: AliasRecords) -> None:
    seen = {"github.com": {"count": 4, "first_seen": 1.0}}
    aliases.change_alias("a@example.org", lambda _: {"alias": "a@example.org", "domains": seen, "messages": 4})
    before, written = aliases.change_alias(
        "a@example.org", lambda r: control.lock_change(r, "a@example.org", "refuse", 10.0)
    )
    assert before is not None and before["messages"] == 4
    assert written is not None and written["allowed"] == ["github.com"]
    after = aliases.read_alias("a@example.org")
    assert after == {**before, **written}
    assert aliases.change_alias("a@example.org", lambda r: None) == (after, None)
    assert aliases.read_alias("nobody@example.org") is None


def test_a_write_in_between_is_seen_before_the_change_is_made(aliases: AliasRecords) -> None:
    """Two parties at once (the owner's lock and another change): the lock is decided on what the document
    held when it was written, and neither write is lost. The twin decides again after the other's write;
    Firestore's transaction makes the other wait until the lock is committed."""
    aliases.change_alias("a@example.org", lambda _: {"alias": "a@example.org"})
    asked: list[dict[str, Any] | None] = []
    other = threading.Thread(
        target=lambda: aliases.change_alias("a@example.org", lambda _: {"domains": {"gitlab.com": {"count": 1}}})
    )

    def lock(record: dict[str, Any] | None) -> dict[str, Any] | None:
        asked.append(record)
        if len(asked) == 1:  # another write starts after our read, before our write
            other.start()
            other.join(0.5)
        return control.lock_change(record, "a@example.org", "hold", 10.0)

    _, written = aliases.change_alias("a@example.org", lock)
    other.join(10)
    assert written is not None and written["allowed"] == control.seen_domains(asked[-1])
    after = aliases.read_alias("a@example.org")
    assert after is not None and after["state"] == "locked" and after["domains"] == {"gitlab.com": {"count": 1}}


def test_the_relay_flooding_an_alias_cannot_keep_its_owner_from_blocking_it(firestore_host: str) -> None:
    """The relay writes the alias document once per message (the insight). A change read-then-written
    with a precondition on the document's update time lost that race every time under a flood of
    ~15 messages a second on the emulator (and sooner from an owner's laptop, further away)."""
    from google.cloud import firestore

    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = firestore_host
    try:
        client = firestore.Client(project="flood-" + uuid.uuid4().hex[:8])
        aliases, store, alias = FirestoreAliases(lambda: client), FirestoreInsight(lambda: client), "a@example.org"
        stop = threading.Event()
        counted: list[int] = []

        def flood() -> None:
            while not stop.is_set():
                seen = insight.Sighting(alias, time.time(), "a@github.com", "", "", "", "", True, False)
                store.observe(alias, insight.write_for(seen), "github.com")
                counted.append(1)

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            while len(counted) < 20:
                time.sleep(0.01)
            steps: list[Callable[[dict[str, Any] | None], dict[str, Any] | None]] = [
                lambda r: control.lock_change(r, alias, "hold", 10.0),
                lambda r: control.unlock_change(r, alias, 11.0),
                lambda r: control.block_change(r, alias, 12.0),
                lambda r: control.unblock_change(r, alias, 13.0),
            ]
            for step in steps:
                _, written = aliases.change_alias(alias, step)
                assert written is not None
        finally:
            stop.set()
            for t in threads:
                t.join()
        after = aliases.read_alias(alias)
        assert after is not None and after["state"] == "active" and after["unblocked_at"] == 13.0
        assert after["messages"] == len(counted)  # and no count lost to the owner's changes
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous
