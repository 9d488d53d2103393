"""tagrelay.core.events, pure: reading a webhook post, and the state transition of a delivery record.

Posts are written here by hand in the shape of Mailgun's "Webhook payloads" page and signed with
Mailgun's documented HMAC (tests/unit/support.py); the expected states are a table written here.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tagrelay.core.errors import BadRequest, BadSignature, Undeliverable
from tagrelay.core.events import (
    MAX_BODY_BYTES,
    Event,
    apply,
    read_event,
    read_post,
    retakes,
    sent_fields,
)
from tests.unit.support import SIGNING_KEY

KEY = "a" * 64
MAILGUN_ID = "<20240101.1@example.org>"
TARGET = "owner+shop@gmail.com"
# DESIGN.md's known vector.
VECTOR = {
    "timestamp": "1700000000",
    "token": "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf",
    "signature": "16e8315674ddc3aca0f791a93250320e9cc493a3a654aea8d82327b6dd13ceaf",
}
NOW = 1_700_000_010.0


def post(event_data: Any, signature: dict[str, str] | None = None) -> bytes:
    return json.dumps({"signature": signature or VECTOR, "event-data": event_data}).encode()


def failed_data(severity: str = "permanent", reason: str = "bounce", code: int = 550) -> dict[str, Any]:
    return {
        "id": "G9Bn5sl1TC6ALuvhgx7wBw",
        "event": "failed",
        "severity": severity,
        "reason": reason,
        "timestamp": 1700000001.25,
        "recipient": "Owner+Shop@Gmail.com",
        "user-variables": {"tagrelay-delivery": KEY},
        "message": {"headers": {"message-id": "20240101.1@example.org", "subject": "hi"}},
        "delivery-status": {"code": code, "message": "5.1.1 no such user", "description": ""},
    }


def test_the_documented_signature_vector_verifies_and_the_event_is_read() -> None:
    signature, data = read_post(post(failed_data()), SIGNING_KEY.encode(), NOW, 900)
    assert (signature.timestamp, signature.token) == (1700000000, VECTOR["token"])
    event = read_event(data)
    assert event == Event(
        kind="failed",
        name="failed",
        key=KEY,
        recipient="owner+shop@gmail.com",
        mailgun_id=MAILGUN_ID,
        at=1700000001.25,
        event_id="G9Bn5sl1TC6ALuvhgx7wBw",
        severity="permanent",
        reason="bounce",
        code=550,
        message="5.1.1 no such user",
    )
    assert event.describe() == "bounce 550 5.1.1 no such user"
    assert event.suppression == ""


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"event-data": {}}', 400),
        (b"\xff\xfe", 400),
        (b"[" * 100_000, 400),
        (b'{"signature": {}, "event-data": {}}', 401),
        (post({}, {**VECTOR, "signature": "0" * 64}), 401),
        (post({}, {**VECTOR, "token": VECTOR["token"] + "x"}), 401),
    ],
    ids=["text", "list", "no-signature", "not-utf8", "deep", "empty-signature", "wrong-signature", "other-token"],
)
def test_what_is_not_a_signed_event_post_is_refused(body: bytes, status: int) -> None:
    with pytest.raises((BadRequest, BadSignature)) as caught:
        read_post(body, SIGNING_KEY.encode(), NOW, 900)
    assert caught.value.status == status


def test_a_post_over_the_cap_is_refused_before_it_is_parsed() -> None:
    body = b"{" + b" " * MAX_BODY_BYTES + b"}"
    with pytest.raises(BadRequest, match="over 262144 bytes"):
        read_post(body, SIGNING_KEY.encode(), NOW, 900)


def test_a_stale_timestamp_is_refused() -> None:
    with pytest.raises(BadSignature, match="older"):
        read_post(post(failed_data()), SIGNING_KEY.encode(), 1_700_000_000 + 901, 900)


@pytest.mark.parametrize("data", [None, [], {"event": 5}, {"no": "event"}], ids=["null", "list", "number", "none"])
def test_signed_event_data_that_is_not_an_event_is_406(data: Any) -> None:
    with pytest.raises(Undeliverable):
        read_event(data)


@pytest.mark.parametrize(
    ("variables", "key"),
    [
        ({"tagrelay-delivery": KEY}, KEY),
        ({}, ""),
        (None, ""),
        ({"tagrelay-delivery": "A" * 64}, ""),
        ({"tagrelay-delivery": KEY + "\n"}, ""),
        ({"tagrelay-delivery": ["x"]}, ""),
    ],
    ids=["ours", "none", "null", "uppercase", "newline", "list"],
)
def test_only_a_delivery_key_of_ours_is_taken(variables: Any, key: str) -> None:
    data = {**failed_data(), "user-variables": variables}
    assert read_event(data).key == key


@pytest.mark.parametrize(
    ("name", "severity", "kind"),
    [
        ("delivered", "", "delivered"),
        ("failed", "permanent", "failed"),
        ("failed", "temporary", "temporary"),
        ("rejected", "", "failed"),
        ("complained", "", "complained"),
        ("accepted", "", "other"),
        ("opened", "", "other"),
    ],
)
def test_event_kinds(name: str, severity: str, kind: str) -> None:
    assert read_event({**failed_data(), "event": name, "severity": severity}).kind == kind


def test_text_from_an_event_is_one_bounded_line() -> None:
    data = {
        **failed_data(),
        "reason": "bounce\r\nX-Injected: 1",
        "delivery-status": {"code": True, "message": "m" * 9000},
    }
    event = read_event(data)
    assert event.reason == "bounce X-Injected: 1"
    assert event.code == 0 and len(event.message) == 500


@pytest.mark.parametrize(
    ("reason", "suppression"),
    [("suppress-bounce", "bounces"), ("suppress-complaint", "complaints"), ("suppress-unsubscribe", "unsubscribes")],
)
def test_a_suppression_reason_names_its_list(reason: str, suppression: str) -> None:
    assert read_event(failed_data(reason=reason)).suppression == suppression


# -- the transition ----------------------------------------------------------------------


def ev(kind: str, recipient: str = TARGET, mailgun_id: str = MAILGUN_ID, at: float = 1.0) -> Event:
    name = {"temporary": "failed", "failed": "failed"}.get(kind, kind)
    severity = {"temporary": "temporary", "failed": "permanent"}.get(kind, "")
    return Event(kind, name, KEY, recipient, mailgun_id, at, severity=severity, reason=f"r-{kind}", code=7)  # type: ignore[arg-type]


def sent_record(targets: str = TARGET) -> dict[str, Any]:
    return {
        "state": "sent",
        "mailgun_id": MAILGUN_ID,
        "targets": targets,
        "attributes": {"schema": "tagrelay.v1"},
        "message": b"m",
        "recipients": {},
    }


def run(record: dict[str, Any], *events: Event) -> tuple[dict[str, Any], list[str]]:
    outcomes: list[str] = []
    for event in events:
        change = apply(record, event, 10.0)
        outcomes.append(change.outcome)
        for name, value in change.fields.items():
            if value is None:
                record.pop(name, None)
            else:
                record[name] = value
    return record, outcomes


KINDS = ("delivered", "failed", "temporary", "complained")
# The state after the first event and then the second, for one target; written out, not computed.
AFTER_PAIR = {
    ("delivered", "delivered"): "delivered",
    ("delivered", "failed"): "delivered",
    ("delivered", "temporary"): "delivered",
    ("delivered", "complained"): "complained",
    ("failed", "delivered"): "failed",
    ("failed", "failed"): "failed",
    ("failed", "temporary"): "failed",
    ("failed", "complained"): "complained",
    ("temporary", "delivered"): "delivered",
    ("temporary", "failed"): "failed",
    ("temporary", "temporary"): "sent",
    ("temporary", "complained"): "complained",
    ("complained", "delivered"): "complained",
    ("complained", "failed"): "complained",
    ("complained", "temporary"): "complained",
    ("complained", "complained"): "complained",
}


@pytest.mark.parametrize(("first", "second"), list(itertools.product(KINDS, KINDS)))
def test_every_pair_of_events_in_either_order_never_goes_back(first: str, second: str) -> None:
    record, outcomes = run(sent_record(), ev(first), ev(second))
    assert record["state"] == AFTER_PAIR[(first, second)]
    assert outcomes[0] == "applied"
    rank = {"sent": 1, "delivered": 2, "failed": 2, "complained": 3}
    after_first = AFTER_PAIR[(first, first)] if first != "temporary" else "sent"
    assert rank[record["state"]] >= rank[after_first]


def test_a_duplicate_changes_nothing_and_fails_only_once() -> None:
    record = sent_record()
    first = apply(record, ev("failed"), 10.0)
    assert first.failed_now and first.after == "failed"
    run(record, ev("failed"))
    again = apply(record, ev("failed"), 11.0)
    assert (again.outcome, again.fields, again.failed_now) == ("unchanged", {}, False)


def test_a_temporary_failure_is_recorded_without_leaving_sent() -> None:
    record, _ = run(sent_record(), ev("temporary"))
    assert record["state"] == "sent"
    assert record["recipients"][TARGET] == {
        "state": "sent",
        "reason": "r-temporary",
        "code": 7,
        "at": 1.0,
        "severity": "temporary",
    }
    assert record["severity"] == "temporary" and record["reason"] == "r-temporary"


def test_delivered_to_every_target_drops_the_kept_copy_and_not_before() -> None:
    record = sent_record("alice@gmail.com,bob@gmail.com")
    record, _ = run(record, ev("delivered", "alice@gmail.com"))
    assert record["state"] == "delivered" and record["message"] == b"m"
    record, _ = run(record, ev("delivered", "bob@gmail.com"))
    assert "message" not in record


def test_one_target_failing_after_another_was_delivered_shows_and_is_dead_lettered() -> None:
    record = sent_record("alice@gmail.com,bob@gmail.com")
    run(record, ev("delivered", "alice@gmail.com"))
    change = apply(record, ev("failed", "bob@gmail.com"), 10.0)
    assert change.failed_now and change.after == "failed"
    run(record, ev("failed", "bob@gmail.com"))
    assert record["message"] == b"m"  # kept: the dead letter needs it for a replay
    assert retakes(record)


def test_an_event_of_an_earlier_send_is_stale() -> None:
    change = apply(sent_record(), ev("failed", mailgun_id="<older@example.org>"), 10.0)
    assert (change.outcome, change.fields) == ("stale", {})
    assert apply(sent_record(), ev("delivered", mailgun_id=""), 10.0).outcome == "stale"


def test_an_event_before_the_relay_recorded_sent_moves_it_and_adopts_the_mailgun_id() -> None:
    record = {"state": "sending", "mailgun_id": "", "targets": TARGET, "lease_until": 99.0}
    record, _ = run(record, ev("delivered"))
    assert (record["state"], record["mailgun_id"], record["lease_until"]) == ("delivered", MAILGUN_ID, 0)
    # The relay's sent write then keeps delivered (same Mailgun id)...
    assert sent_fields(record, {"mailgun_id": MAILGUN_ID})["state"] == "delivered"
    # ...but not for another send's id, nor over a record with no events.
    assert sent_fields(record, {"mailgun_id": "<other@x>"})["state"] == "sent"
    assert sent_fields({"state": "sending"}, {"mailgun_id": MAILGUN_ID})["state"] == "sent"


def test_a_temporary_failure_before_the_sent_write_still_proves_acceptance() -> None:
    record, _ = run({"state": "sending", "mailgun_id": "", "targets": TARGET}, ev("temporary"))
    assert (record["state"], record["mailgun_id"]) == ("sent", MAILGUN_ID)


def test_a_permanent_failure_before_the_message_was_kept_is_early() -> None:
    change = apply({"state": "sending", "mailgun_id": "", "targets": TARGET}, ev("failed"), 10.0)
    assert (change.outcome, change.fields) == ("early", {})


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"state": "dead"}, True),
        ({"state": "failed"}, True),
        ({"state": "complained", "recipients": {"a": {"state": "failed"}, "b": {"state": "complained"}}}, True),
        ({"state": "delivered"}, False),
        ({"state": "sent"}, False),
        ({"state": "complained", "recipients": {"b": {"state": "complained"}}}, False),
    ],
)
def test_a_replay_retakes_dead_and_failed_records_only(record: dict[str, Any], expected: bool) -> None:
    assert retakes(record) is expected
