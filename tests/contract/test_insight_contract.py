"""The alias insight store (tagrelay.adapters.insight): the same rules on the Firestore emulator and the twin."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.counts import CallCounter, firestore_factory
from tagrelay.adapters.insight import FirestoreInsight, MemoryInsight
from tagrelay.core import insight
from tagrelay.core.insight import Sighting
from tagrelay.core.ports import AliasInsight

AT = 1_767_225_600.0 + 40 * 86400  # 2026-02-10
ALIAS = "shop@example.org"


@pytest.fixture
def emulator(firestore_host: str) -> Iterator[str]:
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = firestore_host
    try:
        yield "contract-insight-" + uuid.uuid4().hex[:8]  # a fresh database per test
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


@pytest.fixture(params=["memory", "firestore"])
def store(request: pytest.FixtureRequest) -> AliasInsight:
    if request.param == "memory":
        return MemoryInsight()
    project = request.getfixturevalue("emulator")

    def client() -> Any:
        from google.cloud import firestore as fs

        return fs.Client(project=project)

    return FirestoreInsight(client)


def seen(address: str, at: float = AT, spam: bool = False) -> Sighting:
    return Sighting(ALIAS, at, address, address, "s", "", address, True, spam)


def lookup(store: AliasInsight) -> dict[str, Any]:
    found = store.lookup(ALIAS)  # type: ignore[attr-defined]
    assert found is not None
    return dict(found)


def test_counts_days_and_dotted_domains_are_recorded(store: AliasInsight) -> None:
    first = insight.write_for(seen("a@mail.github.com"))
    assert store.observe(ALIAS, first, "github.com") is not None  # new: the record is read
    assert store.observe(ALIAS, insight.write_for(seen("b@github.com", AT + 60)), "github.com") is None
    assert store.observe(ALIAS, insight.write_for(seen("x@spam.example", AT + 120, spam=True)), "") is None
    record = lookup(store)
    assert record["alias"] == ALIAS
    assert (record["messages"], record["spam"]) == (3, 1)
    assert (record["first_seen"], record["last_seen"]) == (AT, AT + 120)
    assert record["domains"] == {"github.com": {"count": 2, "first_seen": AT}}  # one key, dots and all
    assert record["days"] == {"2026-02-10": 3}


def test_day_buckets_older_than_31_days_are_deleted_by_the_next_write(store: AliasInsight) -> None:
    store.observe(ALIAS, insight.write_for(seen("a@github.com", AT - 35 * 86400)), "github.com")
    store.observe(ALIAS, insight.write_for(seen("a@github.com", AT - 3 * 86400)), "github.com")
    store.observe(ALIAS, insight.write_for(seen("a@github.com", AT)), "github.com")
    assert sorted(lookup(store)["days"]) == ["2026-02-07", "2026-02-10"]


def test_a_leak_marker_is_claimed_once_even_by_racing_relays(store: AliasInsight) -> None:
    wins: list[bool] = []
    threads = [
        threading.Thread(target=lambda: wins.append(store.claim_leak(ALIAS, "x.example", {"at": AT}))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]


def test_a_domain_first_seen_by_two_racing_relays_is_new_to_exactly_one(store: AliasInsight) -> None:
    store.observe(ALIAS, insight.write_for(seen("a@github.com")), "github.com")
    answers: list[object] = []

    def run() -> None:
        answers.append(store.observe(ALIAS, insight.write_for(seen("a@new.example", AT + 5)), "new.example"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for a in answers if a is not None) == 1
    assert lookup(store)["domains"]["new.example"]["count"] == 3


def test_a_known_sender_costs_one_commit_and_a_new_one_a_commit_and_a_read(emulator: str) -> None:
    counter = CallCounter()
    store = FirestoreInsight(firestore_factory(emulator, counter))
    store.observe(ALIAS, insight.write_for(seen("a@github.com")), "github.com")
    calls, documents = counter.take()
    assert (calls, documents) == ({"Commit": 1, "BatchGetDocuments": 1}, {"writes": 1, "reads": 1})
    store.observe(ALIAS, insight.write_for(seen("b@github.com", AT + 1)), "github.com")
    assert counter.take() == ({"Commit": 1}, {"writes": 1})


def test_notice_counters_give_racing_relays_distinct_counts_per_alias_and_in_all(store: AliasInsight) -> None:
    answers: list[tuple[int, int]] = []
    lock = threading.Lock()

    def run(alias: str) -> None:
        found = store.count_notice(alias, "2026-02-10")
        with lock:
            answers.append(found)

    threads = [threading.Thread(target=run, args=(a,)) for a in (ALIAS, ALIAS, ALIAS, "other@example.org")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(all_count for _, all_count in answers) == [1, 2, 3, 4]  # across aliases: one counter
    assert sorted(alias_count for alias_count, _ in answers) == [1, 1, 2, 3]  # per alias: its own
    assert store.count_notice(ALIAS, "2026-02-11") == (1, 1)  # a new day starts again


def test_counting_a_notice_is_one_commit(emulator: str) -> None:
    counter = CallCounter()
    store = FirestoreInsight(firestore_factory(emulator, counter))
    assert store.count_notice(ALIAS, "2026-02-10") == (1, 1)
    assert counter.take() == ({"Commit": 1}, {"writes": 2})
