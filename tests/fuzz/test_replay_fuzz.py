"""Correctly signed, routable posts of random content: queued once, a retry is not republished,
a token reused for other content is refused (MemoryLedger's replay records), and a publish that
Pub/Sub does not acknowledge is a 503 that Mailgun's retry can still publish."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagrelay.core.errors import BusUnavailable
from tests.fuzz.strategies import ValidPost, valid_signed_posts
from tests.fuzz.support import (
    Harness,
    Outcome,
    Part,
    RecordingPublisher,
    get,
    harness,
    post_and_check,
    text,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _status(outcome: Outcome) -> int:
    assert outcome.response is not None, outcome
    return outcome.response.status


def _send(post: ValidPost, h: Harness, boundary: bytes | None = None) -> Outcome:
    content_type, body = post.encode() if boundary is None else post.encode(boundary)
    return post_and_check(content_type, body, h)


@st.composite
def other_content(draw: st.DrawFn, post: ValidPost) -> ValidPost:
    """The same signature fields (timestamp, token, signature) over different content."""
    extra = draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)).encode()
    body = b"body-mime" if post.kind == "mime" else b"body-plain"
    target = draw(st.sampled_from((body, b"sender", b"subject", b"new-field")))
    parts = list(post.parts)
    for index, part in enumerate(parts):
        if part.name == target:
            parts[index] = replace(part, value=part.value + extra)
            break
    else:
        parts.append(Part(target, extra))
    return replace(post, parts=parts)


@FUZZ
@given(valid_signed_posts(), st.data())
def test_signed_routable_post_is_queued_once(post: ValidPost, data: st.DataObject) -> None:
    h = harness()
    first = _send(post, h)
    assert _status(first) == 200 and len(first.published) == 1, first
    attributes = first.published[0].attributes
    assert attributes["recipient"] == text(get(post.parts, b"recipient"))
    assert attributes["token"] == text(get(post.parts, b"token"))
    if post.kind == "mime":
        assert first.published[0].data == get(post.parts, b"body-mime"), "raw message bytes changed"

    again = _send(post, h)
    assert _status(again) == 200 and not again.published, again

    if not post.urlencoded:  # the same form under another boundary is the same post
        reencoded = _send(post, h, boundary=b"another-boundary-" + b"7" * 20)
        assert _status(reencoded) == 200 and not reencoded.published, reencoded

    reused = _send(data.draw(other_content(post)), h)
    assert _status(reused) == 401 and not reused.published, reused
    assert len(h.publisher.published) == 1


class FlakyPublisher(RecordingPublisher):
    """Pub/Sub that does not acknowledge the first ``failures`` publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise BusUnavailable("no acknowledgement in time")
        return super().publish(data, attributes)


@settings(FUZZ, max_examples=60)
@given(valid_signed_posts(), st.integers(1, 3))
def test_unacknowledged_publish_is_503_and_the_retry_publishes(post: ValidPost, failures: int) -> None:
    flaky = FlakyPublisher(failures)
    h = harness(publisher=flaky)
    for _ in range(failures):
        outcome = _send(post, h)
        assert _status(outcome) == 503 and not outcome.published, outcome
    retried = _send(post, h)
    assert _status(retried) == 200 and len(retried.published) == 1, retried
    assert _status(_send(post, h)) == 200 and len(flaky.published) == 1
