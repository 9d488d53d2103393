"""The relay never sends again blind a message Mailgun may already have (issue 12): MemoryLedger, a
Mailgun twin that records what it accepted and answers the Events API from it, and a hand-set clock."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.errors import Busy, LedgerUnavailable, MailgunTransient, MailgunUnsure, Settling
from tagrelay.core.events import Event
from tagrelay.core.ports import DELIVERY_VARIABLE, Mime, whole
from tagrelay.services.relay import Limits, Relay
from tests.unit.test_relay import NOW, ROUTES, RecordingDeadLetters, Sleeps, event_data, with_attributes

SETTLE = 1800.0
SEND_TIMEOUT = 5.0
LEASE = SEND_TIMEOUT + 30.0  # Limits.send_timeout_seconds + the default lease margin


class Killed(BaseException):
    """The instance dies here (SIGKILL): nothing after it runs, not even the relay's error handling."""


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class MailgunTwin:
    """Sends (each planned outcome in turn) and the Events API over what it accepted.

    Plan entries: "ok"; "accept-then-timeout" (accepted, then MailgunUnsure: the answer was lost);
    "timeout" (MailgunUnsure, never accepted); "accept-then-die" / "die" (the instance is killed
    during the send, after or before Mailgun accepted it); an exception to raise.
    """

    clock: Clock
    plan: list[Any] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    queries: list[tuple[str, str, float]] = field(default_factory=list)
    events_down: bool = False
    calls: int = 0

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        self.calls += 1
        outcome = self.plan.pop(0) if self.plan else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome in ("timeout", "die"):
            raise MailgunUnsure("Mailgun did not answer in time") if outcome == "timeout" else Killed()
        ident = f"<{len(self.accepted) + 1}@mailgun.example>"
        record = {"to": list(to), "id": ident, "at": self.clock(), "variables": dict(variables or {})}
        self.accepted.append({**record, "mime": whole(mime)})
        if outcome == "accept-then-timeout":
            raise MailgunUnsure("Mailgun did not answer in time")
        if outcome == "accept-then-die":
            raise Killed()
        return ident

    def find_accepted(self, recipient: str, delivery: str, since: float, skip: Collection[str] = ()) -> str | None:
        self.queries.append((recipient, delivery, since))
        if self.events_down:
            raise MailgunTransient("Mailgun's Events API answered 503")
        for record in self.accepted:
            mine = record["variables"].get(DELIVERY_VARIABLE) == delivery and record["id"] not in skip
            if recipient in record["to"] and mine and record["at"] >= since:
                return str(record["id"])
        return None


@dataclass
class Setup:
    relay: Relay
    mailgun: MailgunTwin
    ledger: MemoryLedger
    deadletters: RecordingDeadLetters
    clock: Clock

    def record(self) -> dict[str, Any]:
        [record] = self.ledger.deliveries.values()
        return record

    def handle(self, data: dict[str, Any] | None = None) -> Any:
        return self.relay.handle_event_data(data or event_data())


def setup(plan: list[Any] | None = None, max_attempts: int = 10, max_age: float = 24 * 3600) -> Setup:
    clock = Clock()
    mailgun, ledger, deadletters = MailgunTwin(clock, list(plan or [])), MemoryLedger(clock), RecordingDeadLetters()
    limits = Limits(max_attempts, max_age, SEND_TIMEOUT, events_settle_seconds=SETTLE)
    relay = Relay(
        ROUTES, mailgun, deadletters, ledger, limits=limits, clock=clock, sleep=Sleeps(), sent_log=mailgun
    )  # fmt: skip
    return Setup(relay, mailgun, ledger, deadletters, clock)


def test_a_sure_failure_is_sent_again_without_asking_mailgun() -> None:
    s = setup([MailgunTransient("Mailgun answered 503")])
    with pytest.raises(MailgunTransient):
        s.handle()
    assert s.handle().status == "sent"
    assert (len(s.mailgun.accepted), s.mailgun.queries) == (1, [])


def test_an_answer_lost_after_mailgun_accepted_is_found_and_not_sent_again() -> None:
    s = setup(["accept-then-timeout"])
    with pytest.raises(MailgunUnsure):
        s.handle()
    record = s.record()
    assert (record["state"], record["unsure_since"], record["unsure_until"]) == ("retry", NOW, NOW)
    s.clock.now += 1  # Pub/Sub redelivers a second later
    outcome = s.handle()
    assert (outcome.status, outcome.detail) == ("duplicate", "<1@mailgun.example>")
    assert len(s.mailgun.accepted) == 1 and s.mailgun.calls == 1
    sent_key = s.mailgun.accepted[0]["variables"][DELIVERY_VARIABLE]
    assert s.mailgun.queries == [("owner+shop@gmail.com", sent_key, NOW - 60)]  # the key it was sent with
    assert (s.record()["state"], s.record()["detail"]) == ("sent", "<1@mailgun.example>")
    assert s.handle().status == "duplicate" and len(s.mailgun.queries) == 1  # sent now: no more questions


def test_not_found_waits_for_the_settle_time_then_sends_once() -> None:
    s = setup(["timeout"])
    with pytest.raises(MailgunUnsure):
        s.handle()
    for later in (1, 60, SETTLE - 1):
        s.clock.now = NOW + later
        with pytest.raises(Settling) as caught:
            s.handle()
        assert caught.value.wait_seconds == SETTLE - later
        assert s.mailgun.accepted == [] and s.record()["state"] == "retry"
    s.clock.now = NOW + SETTLE
    assert s.handle().status == "sent"
    assert len(s.mailgun.accepted) == 1 and len(s.mailgun.queries) == 4
    assert s.record()["state"] == "sent"


def test_waiting_does_not_use_up_the_attempt_budget() -> None:
    """Ten waits would dead-letter it at max_attempts=3 if each counted; they do not, the sends do."""
    s = setup(["timeout", MailgunTransient("Mailgun answered 503")], max_attempts=3)
    with pytest.raises(MailgunUnsure):
        s.handle()  # attempt 1
    for n in range(10):
        s.clock.now = NOW + 1 + n
        with pytest.raises(Settling):
            s.handle()
    assert s.record()["attempts"] == 1
    s.clock.now = NOW + SETTLE
    with pytest.raises(MailgunTransient):
        s.handle()  # attempt 2: a sure failure, retried
    assert s.handle().status == "sent"  # attempt 3
    assert s.deadletters.letters == [] and len(s.mailgun.accepted) == 1


def test_an_unavailable_events_api_is_never_a_reason_to_send() -> None:
    s = setup(["timeout"])
    with pytest.raises(MailgunUnsure):
        s.handle()
    s.mailgun.events_down = True
    s.clock.now = NOW + SETTLE + 3600  # long settled: still not sent blind
    with pytest.raises(MailgunTransient, match="Events API"):
        s.handle()
    assert s.mailgun.calls == 1 and s.record()["state"] == "retry" and s.record()["attempts"] == 1
    assert s.record()["unsure_since"] == NOW  # still in doubt
    s.mailgun.events_down = False
    assert s.handle().status == "sent" and s.mailgun.calls == 2


def test_a_relay_killed_after_mailgun_accepted_is_found_once_its_lease_runs_out() -> None:
    s = setup(["accept-then-die"])
    with pytest.raises(Killed):
        s.handle()
    assert s.record()["state"] == "sending"
    s.clock.now = NOW + LEASE - 1
    with pytest.raises(Busy):  # the lease still runs: nobody asks Mailgun yet
        s.handle()
    assert s.mailgun.queries == []
    s.clock.now = NOW + LEASE
    assert s.handle().status == "duplicate"
    assert len(s.mailgun.accepted) == 1 and s.record()["state"] == "sent"
    assert s.mailgun.queries[0][2] == NOW - 60  # from the start of the dead instance's lease


def test_a_relay_killed_before_mailgun_accepted_sends_once_the_dead_lease_has_settled() -> None:
    s = setup(["die"])
    with pytest.raises(Killed):
        s.handle()
    s.clock.now = NOW + LEASE
    with pytest.raises(Settling) as caught:
        s.handle()
    assert caught.value.wait_seconds == SETTLE  # counted from the end of the lease it may have sent in
    s.clock.now = NOW + LEASE + SETTLE
    assert s.handle().status == "sent"
    assert len(s.mailgun.accepted) == 1


def test_a_second_death_while_in_doubt_keeps_the_first_doubt() -> None:
    s = setup(["die", "accept-then-die"])
    with pytest.raises(Killed):
        s.handle()
    s.clock.now = NOW + LEASE + SETTLE
    with pytest.raises(Killed):
        s.handle()  # asked (not found, settled), sent, and killed again after Mailgun accepted
    s.clock.now += LEASE
    assert s.handle().status == "duplicate"
    assert len(s.mailgun.accepted) == 1
    assert s.mailgun.queries[-1][2] == NOW - 60


def test_in_doubt_past_the_age_limit_is_dead_lettered_and_its_replay_asks_mailgun_again() -> None:
    published = datetime.fromtimestamp(NOW, UTC).isoformat().replace("+00:00", "Z")
    s = setup(["accept-then-timeout"], max_age=3600)
    with pytest.raises(MailgunUnsure):
        s.handle(event_data(published=published))
    s.mailgun.events_down = True
    s.clock.now = NOW + 3601
    outcome = s.handle(event_data(published=published))
    assert outcome.status == "dead-lettered"
    [(_, _, reason)] = s.deadletters.letters
    assert "may have reached Mailgun" in reason and "503" in reason
    assert (s.record()["state"], s.record()["unsure_since"]) == ("dead", NOW)
    s.mailgun.events_down = False
    replayed = s.handle(with_attributes(event_data(published=published), replay="1"))
    assert (replayed.status, replayed.detail) == ("duplicate", "<1@mailgun.example>")
    assert len(s.mailgun.accepted) == 1


def test_no_events_client_means_no_blind_resend() -> None:
    clock = Clock()
    mailgun = MailgunTwin(clock, ["timeout"])
    relay = Relay(ROUTES, mailgun, RecordingDeadLetters(), MemoryLedger(clock=clock), clock=clock, sleep=Sleeps())
    with pytest.raises(MailgunUnsure):
        relay.handle_event_data(event_data())
    clock.now += 10_000
    with pytest.raises(MailgunTransient, match="no Events API client"):
        relay.handle_event_data(event_data())
    assert mailgun.calls == 1


def test_a_replay_days_later_is_sent_with_a_warning_that_mailgun_may_have_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published = datetime.fromtimestamp(NOW, UTC).isoformat().replace("+00:00", "Z")
    s = setup(["timeout"], max_age=3600)
    with pytest.raises(MailgunUnsure):
        s.handle(event_data(published=published))
    s.mailgun.events_down = True
    s.clock.now = NOW + 3601
    assert s.handle(event_data(published=published)).status == "dead-lettered"
    s.mailgun.events_down = False
    s.clock.now = NOW + 2 * 86400
    with caplog.at_level("WARNING", logger="tagrelay"):
        assert s.handle(with_attributes(event_data(published=published), replay="1")).status == "sent"
    assert len(s.mailgun.accepted) == 1
    assert any("longer than Mailgun surely keeps its events" in r.getMessage() for r in caplog.records)


def test_a_sent_record_that_could_not_be_written_is_settled_by_mailguns_events_not_resent() -> None:
    """Mailgun accepted, the ledger was down for the 'sent' write: the record still says sending."""
    s = setup()

    class Failing(MemoryLedger):
        def delivery_done(self, key: str, state: Any, detail: str, fields: Any = None) -> bool:
            raise LedgerUnavailable("Firestore did not answer")

    failing = Failing(clock=s.clock)
    failing.deliveries, failing.tokens = s.ledger.deliveries, s.ledger.tokens  # one store, like two instances
    limits = Limits(10, 24 * 3600, SEND_TIMEOUT, events_settle_seconds=SETTLE)
    first = Relay(ROUTES, s.mailgun, s.deadletters, failing, limits=limits, clock=s.clock, sleep=Sleeps())
    assert first.handle_event_data(event_data()).status == "sent"
    assert s.record()["state"] == "sending"
    s.clock.now = NOW + LEASE  # Pub/Sub delivers it again (e.g. the ack was lost), after the lease
    assert s.handle().status == "duplicate"
    assert len(s.mailgun.accepted) == 1 and s.record()["state"] == "sent"


def _bounce(s: Setup, mailgun_id: str, recipient: str = "owner+shop@gmail.com") -> None:
    """Mailgun's permanent failure of ``mailgun_id``, applied as the events function applies it."""
    [key] = s.ledger.deliveries
    bounce = Event("failed", "failed", key, recipient, mailgun_id, s.clock(), severity="permanent", reason="bounce")
    assert s.ledger.record_event(bounce, secrets.token_hex(8), s.clock() + 900, lambda *_: None).outcome == "applied"


def test_a_replay_of_a_bounce_is_sent_even_when_the_first_send_was_once_in_doubt() -> None:
    """Review of issue 12: the doubt of the first send (resolved through Mailgun's events) stayed on the
    record; the replay of that send's bounce asked the Events API again, found the first send's accepted
    event under the same delivery key, and recorded the replay 'sent' without sending it: lost."""
    s = setup(["accept-then-timeout"])
    with pytest.raises(MailgunUnsure):
        s.handle()
    s.clock.now += 1
    first = s.handle()
    assert (first.status, len(s.mailgun.accepted)) == ("duplicate", 1)
    s.clock.now += 60
    _bounce(s, first.detail)
    assert s.record()["state"] == "failed"
    s.clock.now += 600  # the owner fixed the cause, then: tagrelay deadletters replay
    outcome = s.handle(with_attributes(event_data(), replay="1"))
    assert (outcome.status, len(s.mailgun.accepted)) == ("sent", 2)
    assert outcome.detail == s.mailgun.accepted[1]["id"] == s.record()["mailgun_id"]


def test_a_replay_killed_mid_send_is_not_taken_for_the_send_it_replays() -> None:
    """Review of issue 12: a replay whose instance died in its send is in doubt; the Events API query (from a
    minute before the replay's lease) found the bounced first send, accepted under the same delivery key, and
    recorded the replay 'sent' as that send: never sent. The earlier sends' ids are not the replay's."""
    s = setup()
    first = s.handle()
    assert first.status == "sent"
    s.clock.now += 5  # the bounce comes at once (a suppressed address), the owner replays at once
    _bounce(s, first.detail)
    s.mailgun.plan = ["die"]
    with pytest.raises(Killed):
        s.handle(with_attributes(event_data(), replay="1"))
    s.clock.now += LEASE + 1  # Pub/Sub redelivers the replay after its lease ran out
    with pytest.raises(Settling):
        s.handle(with_attributes(event_data(), replay="1"))
    s.clock.now += SETTLE
    outcome = s.handle(with_attributes(event_data(), replay="1"))
    assert (outcome.status, len(s.mailgun.accepted)) == ("sent", 2)
    assert s.record()["mailgun_id"] == outcome.detail == s.mailgun.accepted[1]["id"]
