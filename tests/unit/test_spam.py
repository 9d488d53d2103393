"""The spam policy: Mailgun's verdict → forward, tag or refuse, at every layer that acts on it."""

from __future__ import annotations

import dataclasses

import pytest

from tagrelay.core import spam
from tagrelay.core.errors import RoutesError
from tagrelay.core.headers import first, header_fields
from tagrelay.core.rewrite import rewrite
from tagrelay.core.routes import Forward, load
from tagrelay.services.ingest import Ingest
from tagrelay.services.relay import Relay
from tests.unit.support import RecordingPublisher, corpus
from tests.unit.test_ingest import handle, make_ingest, mime_post
from tests.unit.test_relay import event_data, harness

RULES = """\
spam_threshold = 6.0

[[route]]
match = "strict@example.org"
forward = "owner+strict@gmail.com"
spam = "refuse"

[[route]]
match = "lax@example.org"
forward = "owner+lax@gmail.com"
spam = "forward"

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""


@pytest.mark.parametrize(
    ("flag", "score", "expected"),
    [
        ("Yes", "", True),
        ("yes", "1.0", True),
        ("No", "5.9", False),
        ("No", "6.0", True),
        ("", "oops", False),
        ("", "", False),
    ],
)
def test_a_message_is_spam_when_flagged_or_at_the_threshold(flag: str, score: str, expected: bool) -> None:
    decided = spam.decide(spam.SpamPolicy("tag", 6.0), spam.verdict(flag, score))
    assert decided == ("tag" if expected else "forward")


def test_the_file_default_is_tag_and_routes_override_it() -> None:
    routes = load(RULES)
    policies = {}
    for address in ("strict@example.org", "lax@example.org", "other@example.org"):
        resolved = routes.resolve(address)
        assert isinstance(resolved, Forward)
        policies[address] = resolved.rule.spam
    assert policies == {
        "strict@example.org": spam.SpamPolicy("refuse", 6.0),
        "lax@example.org": spam.SpamPolicy("forward", 6.0),
        "other@example.org": spam.SpamPolicy("tag", 6.0),
    }
    assert load('[[route]]\nmatch = "a@example.org"\nforward = "b@gmail.com"\n').rules[0].spam == spam.SpamPolicy()


@pytest.mark.parametrize("bad", ['spam = "delete"', "spam_threshold = true", 'spam_threshold = "high"'])
def test_an_invalid_policy_fails_at_load_with_its_line(bad: str) -> None:
    with pytest.raises(RoutesError, match="line"):
        load(f'[[route]]\nmatch = "a@example.org"\nforward = "b@gmail.com"\n{bad}\n')


def test_the_tag_prefixes_the_subject_and_adds_the_verdict_header_only() -> None:
    raw = corpus("05-alternative-text-html.eml")
    tagged = rewrite(raw, "github@example.org", "", spam_tag="flag=yes score=7").mime
    fields = header_fields(tagged)
    original_subject = first(header_fields(raw), "subject")
    assert original_subject is not None
    assert first(fields, "subject").raw == b"Subject: [SPAM] " + original_subject.raw.partition(b": ")[2]  # type: ignore[union-attr]
    assert first(fields, "x-tagrelay-spam").value == "flag=yes score=7"  # type: ignore[union-attr]
    assert tagged.endswith(raw[raw.index(b"\r\n\r\n") :])  # body untouched
    again = rewrite(tagged, "github@example.org", "", spam_tag="flag=yes score=7").mime
    assert first(header_fields(again), "subject").value.count("[SPAM]") == 1  # type: ignore[union-attr]


def spammy(raw: bytes, score: str) -> bytes:
    # Mailgun prepends its verdict; only those fields count (issue 15).
    return f"X-Mailgun-Sflag: No\r\nX-Mailgun-Sscore: {score}\r\n".encode() + raw


def test_ingest_refuses_spam_for_a_route_that_says_refuse() -> None:
    publisher = RecordingPublisher()
    ingest: Ingest = make_ingest(publisher)
    ingest.config = dataclasses.replace(ingest.config, routes=load(RULES))
    raw = spammy(corpus("01-plain-ascii.eml"), "9.5")
    assert handle(ingest, mime_post(raw, "strict@example.org")).status == 406
    assert handle(ingest, mime_post(raw, "lax@example.org")).status == 200
    assert len(publisher.published) == 1
    assert publisher.published[0][1]["spam_score"] == "9.5"


def test_relay_tags_what_the_policy_says_to_tag() -> None:
    h = harness()
    data = event_data("01-plain-ascii.eml")
    data["message"]["attributes"]["spam_flag"] = "Yes"
    relay: Relay = h.relay
    assert relay.handle_event_data(data).status == "sent"
    sent = h.sender.sent[0][1]
    assert first(header_fields(sent), "subject").value.startswith("[SPAM] ")  # type: ignore[union-attr]
    assert first(header_fields(sent), "x-tagrelay-spam").value == "flag=yes score=none"  # type: ignore[union-attr]
