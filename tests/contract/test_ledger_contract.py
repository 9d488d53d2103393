"""One contract for both ledgers: MemoryLedger (unit tests) and FirestoreLedger (on the Firestore
emulator) answer every method the same way, including the races that production only meets by chance:
two instances starting the same delivery, or two messages binding the same token, concurrently."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tagrelay.adapters.ledger import FirestoreLedger, MemoryLedger
from tagrelay.core.errors import LedgerUnavailable
from tagrelay.core.events import Change, Event
from tagrelay.core.ports import Begin, Doubt, Refusal

Ledger = MemoryLedger | FirestoreLedger
D1, D2 = "1" * 64, "2" * 64
INFO = {"alias": "a@example.org", "targets": "o@gmail.com"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "firestore"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[Clock], Ledger]]:
    """A factory of ledger instances sharing one store (two instances = two function instances)."""
    if request.param == "memory":
        shared: dict[int, MemoryLedger] = {}

        def memory(clock: Clock) -> Ledger:
            return shared.setdefault(0, MemoryLedger(clock=clock))

        yield memory
        return
    host = request.getfixturevalue("firestore_host")
    project = "contract-" + uuid.uuid4().hex[:8]  # a fresh database per test
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = host

    def firestore(clock: Clock) -> Ledger:
        from google.cloud import firestore as fs

        return FirestoreLedger(lambda: fs.Client(project=project), clock=clock)

    try:
        yield firestore
    finally:
        if previous is None:
            os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
        else:
            os.environ["FIRESTORE_EMULATOR_HOST"] = previous


def key() -> str:
    return uuid.uuid4().hex * 2


def test_a_new_delivery_goes_then_is_busy_then_done(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger, k = make(clock), key()
    assert ledger.begin_delivery(k, 60, INFO, token="t1", digest=D1) == Begin("go", 1, "", "")
    assert ledger.begin_delivery(k, 60, INFO, token="t1", digest=D1).state == "busy"
    ledger.delivery_done(k, "sent", "<id@mailgun>")
    assert ledger.begin_delivery(k, 60, INFO, token="t1", digest=D1) == Begin("done", 1, "<id@mailgun>", "sent")
    [record] = [r for r in ledger.recent_deliveries(10) if r.key == k]
    assert record.data["state"] == "sent" and record.data["alias"] == "a@example.org"
    assert record.data["expires_at"].timestamp() > clock.now + 7 * 24 * 3600


def test_an_expired_lease_is_taken_over_and_counts_an_attempt(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger, k = make(clock), key()
    start = clock.now
    assert ledger.begin_delivery(k, 60, INFO).attempts == 1
    clock.now += 61
    # The instance that held it may have died inside the send: its whole lease is in doubt (issue 12).
    assert ledger.begin_delivery(k, 60, INFO) == Begin("go", 2, "", "sending", Doubt(start, start + 60))


def test_a_recorded_doubt_comes_back_until_a_release_clears_it(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger, k = make(clock), key()
    assert ledger.begin_delivery(k, 60, INFO).doubt is None
    ledger.release_delivery(k, Doubt(clock.now - 5, clock.now))
    clock.now += 1
    assert ledger.begin_delivery(k, 60, INFO) == Begin("go", 2, "", "retry", Doubt(clock.now - 6, clock.now - 1))
    ledger.release_delivery(k, Doubt(clock.now - 6, clock.now - 1), attempted=False)  # waited, sent nothing
    assert ledger.begin_delivery(k, 60, INFO) == Begin("go", 2, "", "retry", Doubt(clock.now - 6, clock.now - 1))
    ledger.release_delivery(k)  # resolved, then a sure failure
    assert ledger.begin_delivery(k, 60, INFO) == Begin("go", 3, "", "retry", None)


def test_a_lease_run_out_while_in_doubt_widens_the_doubt(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger, k = make(clock), key()
    first = clock.now
    ledger.begin_delivery(k, 60, INFO)
    ledger.release_delivery(k, Doubt(first, first + 2))
    clock.now += 100
    assert ledger.begin_delivery(k, 60, INFO).doubt == Doubt(first, first + 2)
    clock.now += 61  # this instance died too
    assert ledger.begin_delivery(k, 60, INFO).doubt == Doubt(first, first + 160)


def test_a_dead_delivery_keeps_its_doubt_for_a_replay(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger, k = make(clock), key()
    ledger.begin_delivery(k, 60, INFO)
    ledger.release_delivery(k, Doubt(clock.now, clock.now + 1))
    ledger.begin_delivery(k, 60, INFO)
    ledger.delivery_done(k, "dead", "gave up: its events cannot tell")
    assert ledger.begin_delivery(k, 60, INFO, retake_dead=True).doubt == Doubt(clock.now, clock.now + 1)


def test_a_released_delivery_goes_again_at_once(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    ledger.begin_delivery(k, 60, INFO)
    ledger.release_delivery(k)
    assert ledger.begin_delivery(k, 60, INFO) == Begin("go", 2, "", "retry")


def test_dead_is_done_unless_retaken(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    ledger.begin_delivery(k, 60, INFO)
    ledger.delivery_done(k, "dead", "Mailgun answered 400")
    assert ledger.begin_delivery(k, 60, INFO) == Begin("done", 1, "Mailgun answered 400", "dead")
    assert ledger.begin_delivery(k, 60, INFO, retake_dead=True) == Begin("go", 2, "", "dead")


def test_sent_is_done_even_for_a_replay(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    ledger.begin_delivery(k, 60, INFO)
    ledger.delivery_done(k, "sent", "<id>")
    assert ledger.begin_delivery(k, 60, INFO, retake_dead=True).state == "done"


def test_first_binding_of_a_token_wins(make: Callable[[Clock], Ledger]) -> None:
    ledger = make(Clock())
    k1, k2, k3 = key(), key(), key()
    assert ledger.begin_delivery(k1, 60, INFO, token="tok", digest=D1).state == "go"
    assert ledger.begin_delivery(k2, 60, INFO, token="tok", digest=D2) == Begin("conflict", 0, D1, "")
    assert ledger.begin_delivery(k2, 60, INFO, token="tok", digest=D2).state == "conflict"  # and stays so
    # The same digest under the same token (another alias, a retry) is not a conflict.
    assert ledger.begin_delivery(k3, 60, INFO, token="tok", digest=D1).state == "go"
    # A release ignores the binding (the operator decided).
    assert ledger.begin_delivery(k2, 60, INFO, token="tok", digest=D2, ignore_token=True).state == "go"


def test_a_conflict_writes_nothing(make: Callable[[Clock], Ledger]) -> None:
    ledger = make(Clock())
    k1, k2 = key(), key()
    ledger.begin_delivery(k1, 60, INFO, token="tok2", digest=D1)
    ledger.begin_delivery(k2, 60, INFO, token="tok2", digest=D2)
    assert all(r.key != k2 for r in ledger.recent_deliveries(50))


def test_a_busy_delivery_does_not_bind_its_token(make: Callable[[Clock], Ledger]) -> None:
    """A binding is written only with a delivery that goes: never half of the atomic write."""
    ledger = make(Clock())
    k = key()
    ledger.begin_delivery(k, 60, INFO)  # leased, no token
    assert ledger.begin_delivery(k, 60, INFO, token="tok3", digest=D1).state == "busy"
    assert ledger.begin_delivery(key(), 60, INFO, token="tok3", digest=D2).state == "go"


def begin(k: str, token: str, digest: str) -> Callable[[Ledger], Begin]:
    return lambda ledger: ledger.begin_delivery(k, 60, INFO, token=token, digest=digest)


def _race(make: Callable[[Clock], Ledger], calls: list[Callable[[Ledger], Begin]]) -> list[Begin]:
    """Run each call on its own ledger instance (a separate client), all released at once."""
    clock = Clock()
    instances = [make(clock) for _ in calls]
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = calls[index](instances[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("racers", [2, 4])
def test_racing_for_the_same_delivery_exactly_one_goes(make: Callable[[Clock], Ledger], racers: int) -> None:
    for _ in range(3):
        k = key()
        results = _race(make, [begin(k, "", D1)] * racers)
        assert sorted(r.state for r in results) == ["busy"] * (racers - 1) + ["go"], results


def test_racing_two_messages_under_one_token_exactly_one_is_bound(make: Callable[[Clock], Ledger]) -> None:
    for round_ in range(3):
        token = f"race-{uuid.uuid4().hex}"
        k1, k2 = key(), key()
        results = _race(
            make,
            [
                begin(k1, token, D1),
                begin(k2, token, D2),
            ],
        )
        assert sorted(r.state for r in results) == ["conflict", "go"], (round_, results)
        winner = D1 if results[0].state == "go" else D2
        assert next(r for r in results if r.state == "conflict").detail == winner


def test_refusals_are_recorded_once_listed_and_released_once(make: Callable[[Clock], Ledger]) -> None:
    clock = Clock()
    ledger = make(clock)
    refusal = Refusal("mail loop: more than 25 Received headers", "a@example.org", "s@bank.example", b"raw\r\n")
    ident = ledger.record_refusal(refusal, token="t")
    assert ledger.record_refusal(refusal, token="t") == ident  # a retry of the same post: one record
    [record] = [r for r in ledger.recent_refusals(10) if r.key == ident]
    assert record.data["reason"] == refusal.reason and record.data["size"] == 5 and record.data["kind"] == "message"
    assert record.data["expires_at"].timestamp() == pytest.approx(clock.now + 7 * 24 * 3600)
    assert "message" not in record.data
    assert ledger.refusal_message(ident) == b"raw\r\n"
    assert ledger.mark_released(ident, "now") is not None
    assert ledger.mark_released(ident, "again") is None
    ledger.unmark_released(ident)
    assert ledger.mark_released(ident, "after a failed publish") is not None
    with pytest.raises(KeyError):
        ledger.refusal_message("no-such-refusal")
    assert ledger.mark_released("no-such-refusal", "x") is None


def test_racing_releases_release_once(make: Callable[[Clock], Ledger]) -> None:
    ledger = make(Clock())
    ident = ledger.record_refusal(Refusal("blocked", "a@example.org", "s@x.example", b"m"), token=uuid.uuid4().hex)
    instances = [make(Clock()) for _ in range(4)]
    barrier = threading.Barrier(4)
    results: list[Any] = [None] * 4

    def run(i: int) -> None:
        barrier.wait()
        results[i] = instances[i].mark_released(ident, f"r{i}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(r is not None for r in results) == 1, results


class CountingClient:
    """A real Firestore client that counts the reads begin_delivery makes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0
        self.commits = 0

    def get_all(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_all(*args, **kwargs)

    def batch(self) -> Any:
        self.commits += 1
        return self._client.batch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_new_message_costs_one_commit_and_no_read_on_firestore(firestore_host: str) -> None:
    """Issue 11's cost: a new delivery is one Firestore round trip (token binding and lease in one commit)."""
    from google.cloud import firestore as fs

    os.environ["FIRESTORE_EMULATOR_HOST"] = firestore_host
    try:
        counting = CountingClient(fs.Client(project="contract-count-" + uuid.uuid4().hex[:8]))
        ledger = FirestoreLedger(lambda: counting)
        assert ledger.begin_delivery(key(), 60, INFO, token="fresh", digest=D1).state == "go"
        assert (counting.commits, counting.reads) == (1, 0)
        assert ledger.begin_delivery(key(), 60, INFO, token="fresh", digest=D2).state == "conflict"
        assert (counting.commits, counting.reads) == (2, 1)  # the failed create, then one read of both records
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


# -- Mailgun's events (issue 12) -----------------------------------------------------------

MAILGUN_ID = "<1.contract@example.org>"
TARGET = "o@gmail.com"


def mailgun_event(k: str, kind: str, mailgun_id: str = MAILGUN_ID, recipient: str = TARGET) -> Event:
    name = "failed" if kind in ("failed", "temporary") else kind
    severity = {"failed": "permanent", "temporary": "temporary"}.get(kind, "")
    return Event(kind, name, k, recipient, mailgun_id, 1_700_000_001.0, severity=severity, reason=kind, code=550)  # type: ignore[arg-type]


def sent_delivery(ledger: Ledger, k: str) -> None:
    assert ledger.begin_delivery(k, 60, INFO).state == "go"
    fields = {"mailgun_id": MAILGUN_ID, "attributes": {"recipient": "a@example.org"}, "message": b"kept"}
    ledger.delivery_done(k, "sent", MAILGUN_ID, fields)


def record_of(ledger: Ledger, k: str) -> dict[str, Any]:
    [record] = [r.data for r in ledger.recent_deliveries(100) if r.key == k]
    return record


def nothing(change: Change, record: dict[str, Any]) -> None:
    return None


def test_events_move_a_sent_record_up_and_never_back(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    sent_delivery(ledger, k)
    assert record_of(ledger, k)["message"] == b"kept"
    outcomes = [
        ledger.record_event(mailgun_event(k, kind), uuid.uuid4().hex, 1e10, nothing).outcome
        for kind in ("temporary", "delivered", "delivered", "failed", "temporary", "complained", "delivered")
    ]
    assert outcomes == ["applied", "applied", "unchanged", "unchanged", "unchanged", "applied", "unchanged"]
    record = record_of(ledger, k)
    assert record["state"] == "complained" and "message" not in record  # dropped once delivered
    assert record["recipients"][TARGET]["state"] == "complained"
    assert ledger.begin_delivery(k, 60, INFO).state == "done"


def test_a_used_token_is_refused_and_writes_nothing(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    sent_delivery(ledger, k)
    token = uuid.uuid4().hex
    assert ledger.record_event(mailgun_event(k, "temporary"), token, 1e10, nothing).outcome == "applied"
    seen: list[Change] = []
    replayed = ledger.record_event(mailgun_event(k, "failed"), token, 1e10, lambda c, r: seen.append(c))
    assert (replayed.outcome, seen, record_of(ledger, k)["state"]) == ("replayed", [], "sent")
    # An event about no record (or none of ours) spends its token too.
    other = uuid.uuid4().hex
    assert ledger.record_event(mailgun_event(key(), "delivered"), other, 1e10, nothing).outcome == "unknown"
    assert ledger.record_event(mailgun_event("", "delivered"), other, 1e10, nothing).outcome == "replayed"


def test_a_failure_runs_before_commit_once_and_a_raise_writes_nothing(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    sent_delivery(ledger, k)

    def down(change: Change, record: dict[str, Any]) -> None:
        raise LedgerUnavailable("the dead letter could not be published")

    with pytest.raises(LedgerUnavailable):
        ledger.record_event(mailgun_event(k, "failed"), "t-down", 1e10, down)
    assert record_of(ledger, k)["state"] == "sent"
    calls: list[tuple[Change, dict[str, Any]]] = []
    done = ledger.record_event(mailgun_event(k, "failed"), "t-up", 1e10, lambda c, r: calls.append((c, r)))
    assert done.outcome == "applied" and len(calls) == 1
    change, seen = calls[0]
    assert change.failed_now and seen["message"] == b"kept" and seen["attributes"] == {"recipient": "a@example.org"}
    assert record_of(ledger, k)["state"] == "failed" and record_of(ledger, k)["message"] == b"kept"
    assert ledger.begin_delivery(k, 60, INFO).state == "done"
    retaken = ledger.begin_delivery(k, 60, INFO, retake_dead=True)
    assert (retaken.state, retaken.previous) == ("go", "failed")
    assert (record_of(ledger, k)["mailgun_id"], record_of(ledger, k)["recipients"]) == ("", {})


def test_an_event_before_the_sent_write_survives_it(make: Callable[[Clock], Ledger]) -> None:
    ledger, k = make(Clock()), key()
    assert ledger.begin_delivery(k, 60, INFO).state == "go"
    assert ledger.record_event(mailgun_event(k, "delivered"), uuid.uuid4().hex, 1e10, nothing).outcome == "applied"
    assert record_of(ledger, k)["mailgun_id"] == MAILGUN_ID  # adopted from the event
    ledger.delivery_done(k, "sent", MAILGUN_ID, {"mailgun_id": MAILGUN_ID, "sent_at": 5.0})
    record = record_of(ledger, k)
    assert (record["state"], record["mailgun_id"], record["sent_at"]) == ("delivered", MAILGUN_ID, 5.0)


def test_a_permanent_failure_before_anything_was_kept_is_early_and_writes_nothing(
    make: Callable[[Clock], Ledger],
) -> None:
    ledger, k = make(Clock()), key()
    ledger.begin_delivery(k, 60, INFO)
    token = uuid.uuid4().hex
    assert ledger.record_event(mailgun_event(k, "failed"), token, 1e10, nothing).outcome == "early"
    assert record_of(ledger, k)["state"] == "sending"
    sent_delivery_fields = {"mailgun_id": MAILGUN_ID, "attributes": {"recipient": "a"}, "message": b"m"}
    ledger.delivery_done(k, "sent", MAILGUN_ID, sent_delivery_fields)
    assert ledger.record_event(mailgun_event(k, "failed"), token, 1e10, nothing).outcome == "applied"  # not spent


def test_racing_duplicates_of_one_failure_fail_it_once(make: Callable[[Clock], Ledger]) -> None:
    """Mailgun may post the same event twice at once (each signed afresh): one commit moves the record."""
    clock = Clock()
    first = make(clock)
    k = key()
    sent_delivery(first, k)
    instances = [make(clock) for _ in range(4)]
    barrier = threading.Barrier(4)
    outcomes: list[str] = [""] * 4

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = instances[i].record_event(mailgun_event(k, "failed"), f"race-{i}-{k}", 1e10, nothing).outcome

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["applied", "unchanged", "unchanged", "unchanged"], outcomes
    assert record_of(first, k)["state"] == "failed"


def test_a_release_or_dead_after_an_event_proved_acceptance_does_not_undo_it(make: Callable[[Clock], Ledger]) -> None:
    """Mailgun accepted the send but the relay never heard (timeout, crash): its retry or give-up must not
    lower what the events already recorded, or the next redelivery would send a duplicate."""
    ledger, k1, k2 = make(Clock()), key(), key()
    ledger.begin_delivery(k1, 60, INFO)
    ledger.record_event(mailgun_event(k1, "delivered"), uuid.uuid4().hex, 1e10, nothing)
    ledger.release_delivery(k1)
    assert record_of(ledger, k1)["state"] == "delivered"
    assert ledger.begin_delivery(k1, 60, INFO).state == "done"
    ledger.begin_delivery(k2, 60, INFO)
    ledger.record_event(mailgun_event(k2, "temporary"), uuid.uuid4().hex, 1e10, nothing)
    ledger.delivery_done(k2, "dead", "gave up after 10 attempts")
    assert (record_of(ledger, k2)["state"], record_of(ledger, k2)["mailgun_id"]) == ("sent", MAILGUN_ID)
    # Without events, both still do what they did.
    k3 = key()
    ledger.begin_delivery(k3, 60, INFO)
    ledger.release_delivery(k3)
    assert record_of(ledger, k3)["state"] == "retry"
    ledger.begin_delivery(k3, 60, INFO)
    ledger.delivery_done(k3, "dead", "Mailgun answered 400")
    assert record_of(ledger, k3)["state"] == "dead"


def test_a_replay_retakes_a_bounce_keeps_what_was_delivered_and_the_old_sends_events_are_stale(
    make: Callable[[Clock], Ledger],
) -> None:
    """Review of issue 12: two targets, one bounced. The replay's lease names the earlier send's id
    (its late events are stale, never the replay's own early ones) and keeps the delivered target."""
    ledger, k = make(Clock()), key()
    info = {**INFO, "targets": f"{TARGET},p@gmail.com"}
    assert ledger.begin_delivery(k, 60, info).state == "go"
    ledger.delivery_done(k, "sent", MAILGUN_ID, {"mailgun_id": MAILGUN_ID, "attributes": {"r": "a"}, "message": b"m"})
    for kind, target in (("delivered", TARGET), ("failed", "p@gmail.com")):
        assert (
            ledger.record_event(mailgun_event(k, kind, recipient=target), uuid.uuid4().hex, 1e10, nothing).outcome
            == "applied"
        )
    retaken = ledger.begin_delivery(k, 60, info, retake_dead=True)
    assert (retaken.state, retaken.spared, retaken.doubt) == ("go", (TARGET,), None)
    late = ledger.record_event(mailgun_event(k, "delivered", recipient="p@gmail.com"), uuid.uuid4().hex, 1e10, nothing)
    assert late.outcome == "stale"
    record = record_of(ledger, k)
    assert (record["state"], record["mailgun_id"], record["earlier_ids"]) == ("sending", "", [MAILGUN_ID])
    assert list(record["recipients"]) == [TARGET]
    ledger.delivery_done(k, "sent", "<2@mailgun>", {"mailgun_id": "<2@mailgun>"})
    # the state the recipients tell (one delivered, one just sent), on both ledgers alike
    assert (record_of(ledger, k)["state"], record_of(ledger, k)["mailgun_id"]) == ("delivered", "<2@mailgun>")
    new = mailgun_event(k, "delivered", mailgun_id="<2@mailgun>", recipient="p@gmail.com")
    assert ledger.record_event(new, uuid.uuid4().hex, 1e10, nothing).outcome == "applied"
    record = record_of(ledger, k)
    assert record["state"] == "delivered" and "message" not in record


def test_a_sent_write_after_every_target_was_delivered_stores_no_copy_and_says_so(
    make: Callable[[Clock], Ledger],
) -> None:
    """Review of issue 12: the relay drops what it uploaded for a bounce when the record needs no copy."""
    ledger, k1, k2 = make(Clock()), key(), key()
    fields = {"mailgun_id": MAILGUN_ID, "attributes": {"r": "a"}, "message": b"kept"}
    assert ledger.begin_delivery(k1, 60, INFO).state == "go"
    assert ledger.record_event(mailgun_event(k1, "delivered"), uuid.uuid4().hex, 1e10, nothing).outcome == "applied"
    assert ledger.delivery_done(k1, "sent", MAILGUN_ID, fields) is False
    record = record_of(ledger, k1)
    assert (record["state"], record["attributes"], "message" in record) == ("delivered", {"r": "a"}, False)
    assert ledger.begin_delivery(k2, 60, INFO).state == "go"
    assert ledger.delivery_done(k2, "sent", MAILGUN_ID, fields) is True
    assert record_of(ledger, k2)["message"] == b"kept"
