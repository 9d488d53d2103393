"""Mailgun's events for a two-target delivery, in any order, duplicated, with dead-letter replays in between
(MemoryLedger, and the relay's rule for whom a replay is sent to: every target but ``Begin.spared``).

What must hold, whatever the order (review of issue 12):
- no duplicate: a target gets a new copy only when every earlier copy sent to it failed;
- no lost failure: the first permanent failure of a target's latest copy is applied and dead-letters it
  (``failed_now``); a failure of an older copy is stale;
- a replay after such a failure is taken, and sent to every target whose latest copy failed;
- an event never lowers a record that Mailgun accepted below ``sent``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.events import ORDER, Event

KEY = "f" * 64
TARGETS = ("a@x.example", "b@x.example")
INFO = {"alias": "team@example.org", "targets": ",".join(TARGETS)}
KINDS = ("delivered", "failed", "temporary", "complained")

# "replay": sent and recorded; "replay-racing": an event arrives while the replay's send is in flight (before its
# sent write; index 9 is the send in flight); "replay-failing": Mailgun answers 503 (surely not accepted), released.
ops = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["replay", "replay-failing"]), st.just(0), st.just(""), st.just("")),
        st.tuples(
            st.just("replay-racing"), st.sampled_from([0, 1, 9]), st.sampled_from(TARGETS), st.sampled_from(KINDS)
        ),
        st.tuples(st.just("event"), st.integers(0, 4), st.sampled_from(TARGETS), st.sampled_from(KINDS)),
    ),
    max_size=30,
)


@dataclass
class Model:
    ledger: MemoryLedger = field(default_factory=lambda: MemoryLedger(clock=lambda: 1_700_000_000.0))
    sends: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    issued: dict[tuple[int, str], list[str]] = field(default_factory=dict)
    tokens: int = 0

    def latest(self, target: str) -> int:
        return max(i for i, (_, to) in enumerate(self.sends) if target in to)

    def failed(self, send: int, target: str) -> bool:
        return "failed" in self.issued.get((send, target), [])

    def send(self, replay: bool, during: tuple[int, str, str] | None = None, failing: bool = False) -> bool:
        begin = self.ledger.begin_delivery(KEY, 60, INFO, retake_dead=replay)
        if begin.state != "go":
            return False
        to = tuple(t for t in TARGETS if t not in begin.spared) or TARGETS
        if failing:
            self.ledger.release_delivery(KEY)
            return True
        for target in to:  # no duplicate
            earlier = [i for i, (_, sent_to) in enumerate(self.sends) if target in sent_to]
            assert all(self.failed(i, target) for i in earlier), (target, self.sends, self.issued)
        mailgun_id = f"<{len(self.sends)}@mailgun.example>"
        self.sends.append((mailgun_id, to))
        if during is not None:
            index, target, kind = during
            self.event(len(self.sends) - 1 if index == 9 else index % len(self.sends), target, kind)
        fields = {"mailgun_id": mailgun_id, "attributes": {"recipient": "team@example.org"}, "message": b"m"}
        self.ledger.delivery_done(KEY, "sent", mailgun_id, fields)
        return True

    def event(self, send: int, target: str, kind: str) -> None:
        mailgun_id, to = self.sends[send]
        seen = self.issued.setdefault((send, target), [])
        if target not in to or ("failed" in seen and kind != "failed"):
            return  # Mailgun says nothing about a copy it never had, nor anything after its permanent failure
        if kind == "failed" and any(k in seen for k in ("delivered", "complained")):
            return
        if kind == "complained" and "delivered" not in seen:
            return
        first_failure = kind == "failed" and "failed" not in seen and send == self.latest(target)
        seen.append(kind)
        before = str(self.ledger.deliveries[KEY]["state"])
        name = "failed" if kind == "temporary" else kind
        event = Event(kind, name, KEY, target, mailgun_id, 1.0, severity="permanent" if kind == "failed" else "")  # type: ignore[arg-type]
        self.tokens += 1
        recorded = self.ledger.record_event(event, f"t{self.tokens}", 1e10, lambda change, record: None)
        if first_failure:  # no lost failure
            assert recorded.outcome == "applied" and recorded.change is not None and recorded.change.failed_now
        if kind == "failed" and send != self.latest(target):
            assert recorded.outcome == "stale"
        after = str(self.ledger.deliveries[KEY]["state"])
        if ORDER.get(before, 0) >= ORDER["sent"]:
            assert ORDER.get(after, 0) >= ORDER["sent"], (before, after)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_events_and_replays_in_any_order_neither_duplicate_nor_lose(steps: list[tuple[str, int, str, str]]) -> None:
    model = Model()
    assert model.send(replay=False)
    for op, index, target, kind in steps:
        if op == "event":
            model.event(index % len(model.sends), target, kind)
            continue
        owed = [t for t in TARGETS if model.failed(model.latest(t), t)]
        sends = len(model.sends)
        during = (index, target, kind) if op == "replay-racing" else None
        went = model.send(replay=True, during=during, failing=op == "replay-failing")
        assert went == bool(owed), (owed, model.sends, model.issued)
        if went and len(model.sends) > sends:
            assert set(owed) <= set(model.sends[sends][1])
