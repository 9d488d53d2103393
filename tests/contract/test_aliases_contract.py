"""The alias documents' contract (issue 14), run against MemoryAliases and FirestoreAliases on the emulator:
the one query returns exactly the non-active aliases with only the control fields; a change is a merge that
never overwrites a write it did not see."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tagrelay.adapters.aliases import FirestoreAliases, MemoryAliases
from tagrelay.core import control
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
    """Two parties at once (the owner's lock and the relay counting): the change is decided again on what
    the other wrote, never written over it unseen."""
    aliases.change_alias("a@example.org", lambda _: {"alias": "a@example.org"})
    asked: list[dict[str, Any] | None] = []

    def lock(record: dict[str, Any] | None) -> dict[str, Any] | None:
        asked.append(record)
        if len(asked) == 1:  # the relay records a new domain after our read, before our write
            aliases.change_alias("a@example.org", lambda _: {"domains": {"gitlab.com": {"count": 1}}})
        return control.lock_change(record, "a@example.org", "hold", 10.0)

    _, written = aliases.change_alias("a@example.org", lock)
    assert len(asked) == 2 and asked[1] is not None and "domains" in asked[1]
    assert written is not None and written["allowed"] == ["gitlab.com"]
