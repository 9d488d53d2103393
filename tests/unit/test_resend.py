"""tagrelay.core.resend: reading Mailgun's events for an earlier send, and the settle rule (issue 12)."""

from __future__ import annotations

from typing import Any

import pytest

from tagrelay.core.ports import Doubt
from tagrelay.core.resend import Decision, accepted_id, decide, query_since

KEY = "5f2b" * 16


def accepted(key: Any = KEY, message_id: Any = "20260203192638.000be97f99f8cea1@example.org", **extra: Any) -> Any:
    """An ``accepted`` event shaped like the sample on Mailgun's webhook-payloads page (trimmed)."""
    event = {
        "event": "accepted",
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "id": "CCXMjJ7nQi2N3BPigGOdgQ",
        "message": {"headers": {"message-id": message_id, "to": "owner+shop@gmail.com"}},
        "method": "HTTP",
        "recipient": "owner+shop@gmail.com",
        "timestamp": 1770146798.123,
        "user-variables": {"tagrelay-delivery": key},
    }
    event.update(extra)
    return event


def test_found_is_sent_with_the_id_in_the_send_apis_angle_brackets() -> None:
    assert accepted_id([accepted()], KEY) == "<20260203192638.000be97f99f8cea1@example.org>"


def test_an_id_already_in_angle_brackets_is_not_wrapped_twice() -> None:
    assert accepted_id([accepted(message_id="<x@example.org>")], KEY) == "<x@example.org>"


def test_the_matching_event_is_found_among_others() -> None:
    items = [accepted(key="0" * 64), accepted(key=KEY, message_id="mine@example.org"), accepted(key="1" * 64)]
    assert accepted_id(items, KEY) == "<mine@example.org>"


@pytest.mark.parametrize(
    "item",
    [
        accepted(key="0" * 64),  # another delivery
        accepted(event="delivered"),  # not an acceptance
        accepted(flags={"is-authenticated": False}),  # mail Mailgun received: its sender wrote the variables
        accepted(**{"user-variables": {}}),
        accepted(**{"user-variables": "tagrelay-delivery=" + KEY}),
        accepted(key=int("1" * 18)),  # a variable Mailgun parsed as JSON
        "not an event",
        None,
    ],
    ids=["other-key", "delivered", "unauthenticated", "no-variable", "not-an-object", "number", "str", "none"],
)
def test_anything_but_our_accepted_send_is_not_taken_for_it(item: Any) -> None:
    assert accepted_id([item], KEY) is None


def test_an_acceptance_without_a_message_id_still_counts_as_sent() -> None:
    """Mailgun has it (never send it again); the id is simply unknown."""
    found = accepted_id([accepted(message={"headers": {}})], KEY)
    assert found == "<unknown: accepted without a message-id>"


def test_nothing_found_in_no_events() -> None:
    assert accepted_id([], KEY) is None


DOUBT = Doubt(since=1_000_000.0, until=1_000_070.0)


def test_the_query_begins_a_minute_before_the_unsure_send() -> None:
    assert query_since(DOUBT) == 999_940.0
    assert query_since(Doubt(10.0, 20.0)) == 0.0


def test_found_means_recorded_sent_whatever_the_time() -> None:
    assert decide("<a@b>", DOUBT, now=1_000_071.0, settle_seconds=1800) == Decision("sent", mailgun_id="<a@b>")


def test_not_found_is_believed_only_a_settle_time_after_the_window_closed() -> None:
    assert decide(None, DOUBT, now=1_000_070.0 + 1799.5, settle_seconds=1800) == Decision("wait", wait_seconds=0.5)
    assert decide(None, DOUBT, now=1_000_070.0 + 1800, settle_seconds=1800) == Decision("send")


def test_not_found_a_day_later_is_sent_but_marked_as_possibly_forgotten() -> None:
    """Mailgun keeps events one day on free plans: a late replay cannot trust "not found" as proof."""
    assert decide(None, DOUBT, now=DOUBT.since + 86400, settle_seconds=1800) == Decision("send")
    assert decide(None, DOUBT, now=DOUBT.since + 86401, settle_seconds=1800) == Decision("send", forgotten=True)


def test_a_zero_settle_time_sends_at_once_when_not_found() -> None:
    assert decide(None, DOUBT, now=1_000_070.0, settle_seconds=0) == Decision("send")


def test_doubts_widen_to_the_earliest_start_and_latest_end() -> None:
    assert Doubt(5.0, 9.0).widen(Doubt(3.0, 7.0)) == Doubt(3.0, 9.0)
    assert Doubt(5.0, 9.0).widen(None) == Doubt(5.0, 9.0)


def test_an_accepted_event_of_an_earlier_send_is_skipped() -> None:
    """Review of issue 12: the send before a dead-letter replay carries the same delivery key."""
    from tagrelay.core.ports import DELIVERY_VARIABLE

    def accepted(ident: str) -> dict[str, object]:
        return {
            "event": "accepted",
            "user-variables": {DELIVERY_VARIABLE: "k"},
            "message": {"headers": {"message-id": ident}},
        }

    items = [accepted("1@mg"), accepted("2@mg")]
    assert accepted_id(items, "k") == "<1@mg>"
    assert accepted_id(items, "k", skip=("<1@mg>",)) == "<2@mg>"
    assert accepted_id(items[:1], "k", skip=("<1@mg>",)) is None
