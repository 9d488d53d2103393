"""Ingest.handle under fuzz: it never raises, answers only 200/400/401/406/503, and publishes only
correctly signed, routable posts with clean attributes (see support.post_and_check).

The bugs the fuzzing found are pinned, each with a minimal input, in test_fuzz_regressions.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, event, given, settings

from tests.fuzz.strategies import (
    FuzzPost,
    content_types,
    garbage_bodies,
    hostile_signed_posts,
    mutated_posts,
)
from tests.fuzz.support import (
    BOUNDARY,
    KEY,
    TIMESTAMP,
    URLENCODED,
    Outcome,
    Part,
    base_posts,
    encode_multipart,
    encode_urlencoded,
    harness,
    mailgun_signature,
    multipart_type,
    post_and_check,
    resign,
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _record(outcome: Outcome) -> None:
    event(f"status {outcome.response.status}")


@settings(FUZZ, max_examples=1000)
@given(content_types(), garbage_bodies())
def test_any_bytes_under_any_content_type(content_type: str, body: bytes) -> None:
    outcome = post_and_check(content_type, body)
    _record(outcome)
    assert not outcome.published


@settings(FUZZ, max_examples=800)
@given(mutated_posts())
def test_mutated_corpus_posts(post: FuzzPost) -> None:
    _record(post_and_check(post.content_type, post.body))


@settings(FUZZ, max_examples=500)
@given(hostile_signed_posts())
def test_signed_posts_with_hostile_content(post: FuzzPost) -> None:
    _record(post_and_check(post.content_type, post.body))


UNDELIVERABLE = {"leaked@example.org", "someone@other.example"}  # blocked, and no route


def test_every_corpus_post_unchanged() -> None:
    """The starting points of the mutations, as tagrelay_tools.mailgun_posts builds them: each gets
    406 when its recipient is blocked or unrouted or it is the Received-loop message, else 200."""
    for post in base_posts():
        response = post_and_check(post.content_type, post.body).response
        recipient = next(p.value for p in post.parts if p.name == b"recipient").decode()
        looped = post.label.endswith("41-many-received.eml")
        assert response.status == (406 if recipient in UNDELIVERABLE or looped else 200), (post.label, response)


def _signed(*extra: Part, recipient: bytes = b"shop@example.org", token: bytes = b"extreme") -> list[Part]:
    parts = [
        Part(b"recipient", recipient),
        Part(b"sender", b"alice@bank.example"),
        Part(b"timestamp", str(TIMESTAMP).encode()),
        Part(b"token", token),
        Part(b"body-mime", b"From: a@b.example\r\nSubject: s\r\n\r\nhello\r\n"),
        *extra,
    ]
    return resign(parts)


HUGE_RECIPIENT = b"a" * (2 * 1024 * 1024) + b"@example.org"
MANY = [Part(b"x-filler-%d" % n, b"v") for n in range(5000)]
EXTREMES = {
    "2 MB recipient, signed": (multipart_type(), encode_multipart(_signed(recipient=HUGE_RECIPIENT))),
    "2 MB recipient, urlencoded": (URLENCODED, encode_urlencoded(_signed(recipient=HUGE_RECIPIENT))),
    "5000 fields, multipart": (multipart_type(), encode_multipart(_signed(*MANY))),
    "5000 fields, urlencoded": (URLENCODED, encode_urlencoded(_signed(*MANY))),
    "32 MB body (over max_body_bytes)": (
        multipart_type(),
        encode_multipart(_signed(Part(b"pad", b"x" * 32 * 1024 * 1024))),
    ),
    "9.6 MB message (over Pub/Sub's cap)": (
        multipart_type(),
        encode_multipart(
            [p for p in _signed() if p.name != b"body-mime"]
            + [Part(b"body-mime", b"Subject: big\r\n\r\n" + b"x" * 9_600_000)]
        ),
    ),
    "5000-digit timestamp": (
        multipart_type(),
        encode_multipart(
            [p for p in _signed() if p.name not in (b"timestamp", b"signature")]
            + [
                Part(b"timestamp", b"9" * 5000),
                Part(b"signature", mailgun_signature(KEY, "9" * 5000, "extreme").encode()),
            ]
        ),
    ),
    "unterminated multipart": (multipart_type(), encode_multipart(_signed(), terminated=False)),
    "boundary never used": (multipart_type(b"other"), encode_multipart(_signed())),
    "empty body, multipart": (multipart_type(), b""),
    "empty body, urlencoded": (URLENCODED, b""),
    "only the closing boundary": (multipart_type(), b"--" + BOUNDARY + b"--\r\n"),
    "broken percent-escapes": (URLENCODED, b"recipient=%&body-mime=%Z%4&%%=%%%&timestamp=%31%3"),
    "NUL everywhere": (URLENCODED, encode_urlencoded(_signed(recipient=b"shop@example.org\x00", token=b"t\x00k"))),
}


# The status each extreme gets: none of them may be queued.
EXTREME_STATUS = {
    "2 MB recipient, signed": 406,
    "2 MB recipient, urlencoded": 406,
    "5000 fields, multipart": 400,
    "5000 fields, urlencoded": 400,
    "32 MB body (over max_body_bytes)": 406,
    "9.6 MB message (over Pub/Sub's cap)": 406,
    "5000-digit timestamp": 401,
    "unterminated multipart": 400,
    "boundary never used": 400,
    "empty body, multipart": 400,
    "empty body, urlencoded": 400,
    "only the closing boundary": 400,
    "broken percent-escapes": 401,
    "NUL everywhere": 406,
}


def test_every_extreme_has_its_status() -> None:
    assert sorted(EXTREME_STATUS) == sorted(EXTREMES)


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_extreme_posts(name: str) -> None:
    content_type, body = EXTREMES[name]
    outcome = post_and_check(content_type, body)
    assert outcome.response.status == EXTREME_STATUS[name], outcome
    assert outcome.published == []


def test_the_extremes_can_be_published_when_sane() -> None:
    """Control for test_extreme_posts: the same signed post without the extreme part is queued."""
    h = harness()
    outcome = post_and_check(multipart_type(), encode_multipart(_signed()), h)
    assert outcome.response is not None and outcome.response.status == 200 and len(outcome.published) == 1
