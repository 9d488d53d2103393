"""``tagrelay trace``: where an ID is looked for, and the journey printed from a record (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tagrelay.adapters.ledger import document_id
from tagrelay_tools.trace import Lookup, journey, json_safe, lookups, refusal_journey, when

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20Z
KEY = "ab" * 32
BASE: dict[str, Any] = {
    "alias": "github@example.org",
    "message_id": "<m1@shop.example>",
    "targets": "owner+github@gmail.com",
    "pubsub_id": "11223344",
    "received_at": T0,
    "sent_at": T0 + 2,
    "mailgun_id": "<20231114221322.1@example.org>",
    "attempts": 1,
    "updated_at": T0 + 2,
}
HEAD = [
    f"delivery {KEY}",
    "  alias github@example.org → owner+github@gmail.com",
    "  Message-ID <m1@shop.example>",
    "  2023-11-14 22:13:20Z  received and verified",
    "  2023-11-14 22:13:20Z  published    Pub/Sub id 11223344",
    "  2023-11-14 22:13:22Z  sent         Mailgun id <20231114221322.1@example.org>",
]


def test_sent_without_an_event_yet() -> None:
    assert journey(KEY, {**BASE, "state": "sent"}) == [*HEAD, "  now: sent, no event from Mailgun yet"]


def test_delivered() -> None:
    record = {**BASE, "state": "delivered", "event_at": T0 + 5, "code": 250, "updated_at": T0 + 5}
    assert journey(KEY, record) == [*HEAD, "  2023-11-14 22:13:25Z  delivered: 250", "  now: delivered"]


def test_failed_permanently_with_reason_code_and_the_replay_command() -> None:
    record = {**BASE, "state": "failed", "event_at": T0 + 9, "severity": "permanent",
              "reason": "suppress-bounce", "code": 605}  # fmt: skip
    assert journey(KEY, record) == [
        *HEAD,
        "  2023-11-14 22:13:29Z  failed (permanent): 605 suppress-bounce",
        "  now: failed permanently",
        "  fix the cause, then: tagrelay deadletters replay --message-id '<m1@shop.example>'",
    ]


def test_a_suppressed_recipient_gets_the_two_commands_that_fix_it() -> None:
    record = {
        **BASE,
        "state": "failed",
        "recipients": {"owner+github@gmail.com": {"state": "failed", "reason": "suppress-bounce", "code": 605,
                                                  "at": T0 + 9}},
    }  # fmt: skip
    assert journey(KEY, record)[6:] == [
        "  2023-11-14 22:13:29Z  owner+github@gmail.com: failed: 605 suppress-bounce",
        "  now: failed permanently",
        "  fix: tagrelay suppressions clear owner+github@gmail.com",
        "       tagrelay deadletters replay --message-id '<m1@shop.example>'",
    ]


def test_per_recipient_outcomes_when_mailgun_reported_them() -> None:
    record = {
        **BASE,
        "targets": "alice@gmail.com,bob@gmail.com",
        "state": "complained",
        "recipients": {
            "bob@gmail.com": {"state": "complained", "at": T0 + 60},
            "alice@gmail.com": {"state": "delivered", "code": 250, "at": T0 + 4},
        },
    }
    assert journey(KEY, record)[6:] == [
        "  2023-11-14 22:13:24Z  alice@gmail.com: delivered: 250",
        "  2023-11-14 22:14:20Z  bob@gmail.com: complained (marked as spam)",
        "  now: delivered, then marked as spam",
    ]


def test_a_temporary_failure_of_one_recipient() -> None:
    record = {
        **BASE,
        "state": "sent",
        "event_at": T0 + 30,
        "severity": "temporary",
        "reason": "greylisted",
        "code": 421,
        "recipients": {"owner+github@gmail.com": {"state": "sent", "severity": "temporary", "reason": "greylisted",
                                                  "code": 421, "at": T0 + 30}},
    }  # fmt: skip
    assert journey(KEY, record)[6:] == [
        "  2023-11-14 22:13:50Z  owner+github@gmail.com: temporary failure, Mailgun retries: 421 greylisted",
        "  now: sent, Mailgun retrying after a temporary failure",
    ]


def test_a_temporary_failure_keeps_sent() -> None:
    record = {**BASE, "state": "sent", "event_at": T0 + 30, "severity": "temporary", "reason": "greylisted",
              "code": 421}  # fmt: skip
    assert journey(KEY, record)[6:] == [
        "  2023-11-14 22:13:50Z  temporary failure, Mailgun retries: 421 greylisted",
        "  now: sent, Mailgun retrying after a temporary failure",
    ]


def test_dead_lettered_before_sending() -> None:
    record = {key: BASE[key] for key in ("alias", "message_id", "targets", "pubsub_id", "received_at")}
    record.update(state="dead", detail="Mailgun answered 400: bad request", attempts=3, updated_at=T0 + 40)
    assert journey(KEY, record)[4:] == [
        "  2023-11-14 22:13:20Z  published    Pub/Sub id 11223344",
        "  2023-11-14 22:14:00Z  dead-lettered: Mailgun answered 400: bad request",
        "  now: dead-lettered",
        "  fix the cause, then: tagrelay deadletters replay --message-id '<m1@shop.example>'",
    ]


def test_a_record_from_before_issue_12_still_reads() -> None:
    """Old records have no mailgun_id/received_at fields: the Mailgun id was kept in ``detail``."""
    record = {"alias": "a@example.org", "message_id": "<x@y>", "targets": "o@gmail.com", "state": "sent",
              "detail": "<1.2@example.org>", "attempts": 2, "updated_at": T0}  # fmt: skip
    assert journey(KEY, record)[3:] == [
        "  ?                     received and verified (time not recorded)",
        "  ?                     sent         Mailgun id <1.2@example.org>, attempt 2",
        "  now: sent, no event from Mailgun yet",
    ]


def test_a_message_id_chosen_to_be_pasted_into_a_shell_is_quoted() -> None:
    record = {**BASE, "state": "dead", "detail": "x", "message_id": "<a$(touch /tmp/p)'b@x>"}
    assert journey(KEY, record)[-1] == (
        "  fix the cause, then: tagrelay deadletters replay --message-id '<a$(touch /tmp/p)'\"'\"'b@x>'"
    )


def test_refusal() -> None:
    record = {"alias": "a@example.org", "sender": "s@x.example", "at": T0, "reason": "token reused", "released": ""}
    assert refusal_journey("r1", record) == [
        "refusal r1",
        "  alias a@example.org  sender s@x.example",
        "  2023-11-14 22:13:20Z  refused: token reused",
        "  now: kept 7 days; tagrelay refusals release r1",
    ]


@pytest.mark.parametrize(
    "value",
    [
        T0,
        int(T0),
        str(T0),
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20+00:00",
        datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
    ],
)
def test_times_in_every_shape_records_use(value: object) -> None:
    assert when(value) == "2023-11-14 22:13:20Z"


def test_lookups_for_each_kind_of_id() -> None:
    assert lookups("11223344")[0] == Lookup("tagrelay_deliveries", "pubsub_id", "11223344")
    assert lookups(KEY)[:2] == [
        Lookup("tagrelay_deliveries", "", KEY),
        Lookup("tagrelay_deliveries", "", document_id(KEY)),
    ]
    bracketed, bare = lookups("<m1@shop.example>"), lookups("m1@shop.example")
    assert bracketed == bare  # with or without <>
    assert Lookup("tagrelay_deliveries", "message_id", "<m1@shop.example>") in bare
    assert Lookup("tagrelay_deliveries", "mailgun_id", "<m1@shop.example>") in bare
    assert Lookup("tagrelay_refusals", "attributes.message_id", "<m1@shop.example>") in bare
    assert Lookup("tagrelay_deliveries", "earlier_ids", "<m1@shop.example>", "array_contains") in bare
    assert len(bare) == len(set(bare)) == 8
    assert lookups("  ") == []


def test_a_replayed_record_names_its_earlier_send() -> None:
    """Review of issue 12: after a replay the first send's Mailgun id is only in earlier_ids."""
    record = {**BASE, "state": "sent", "mailgun_id": "<2@mg>", "earlier_ids": ["<1@mg>"]}
    assert "  earlier sends (before a dead-letter replay): Mailgun id <1@mg>" in journey(KEY, record)


def test_json_safe_drops_message_bytes_and_renders_times() -> None:
    record = {"message": b"raw", "at": datetime(2023, 11, 14, tzinfo=UTC), "n": [1, "x"], "odd": object}
    safe = json_safe(record)
    assert set(safe) == {"at", "n", "odd"} and safe["at"] == "2023-11-14T00:00:00+00:00"


def test_what_senders_wrote_is_printed_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from tagrelay_tools.trace import Found, show

    record = {**BASE, "state": "failed", "alias": "a\x1b]0;pwned\x07@example.org", "reason": "x\r\u202ey", "code": 550}
    show([Found("tagrelay_deliveries", KEY, record)])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert "a\\x1b]0;pwned\\x07@example.org" in out and "550 x\\r\\u202ey" in out
