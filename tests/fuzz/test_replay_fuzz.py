"""Correctly signed, routable posts of random content, through ingest and then the relay (both
in-process, one MemoryLedger): a post is delivered once however often Mailgun retries it (ingest
publishes each retry; the relay's delivery record, keyed by the SHA-256 of the message bytes, makes
the copies duplicates), a token reused for other content is never delivered and leaves a refusal
record (the token is bound in the relay's delivery write: issue 11), and a publish that Pub/Sub
does not acknowledge is a 503 that Mailgun's retry can still publish."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.envelope import Delivery, decode
from tagrelay.core.errors import BusUnavailable
from tagrelay.core.ports import Mime, whole
from tagrelay.services.relay import Relay
from tests.fuzz.strategies import ValidPost, valid_signed_posts
from tests.fuzz.support import (
    KEY,
    ROUTES,
    Harness,
    Outcome,
    Part,
    Published,
    RecordingPublisher,
    clock,
    get,
    harness,
    mailgun_signature,
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


@dataclass
class Sent:
    sent: list[tuple[tuple[str, ...], bytes]] = field(default_factory=list)
    letters: list[str] = field(default_factory=list)

    def send_mime(self, to: Sequence[str], mime: Mime, variables: Mapping[str, str] | None = None) -> str:
        self.sent.append((tuple(to), whole(mime)))  # what Mailgun receives, in one piece
        return f"<{len(self.sent)}@mailgun.example>"

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        self.letters.append(reason)


def _relay(published: list[Published], ledger: MemoryLedger, out: Sent) -> list[str]:
    relay = Relay(ROUTES, out, out, ledger, clock=clock, sleep=lambda _: None)
    return [relay.handle(Delivery(decode(p.data, p.attributes), f"m{i}", None)).status for i, p in enumerate(published)]


@FUZZ
@given(valid_signed_posts(), st.data())
def test_signed_routable_post_is_delivered_once(post: ValidPost, data: st.DataObject) -> None:
    h = harness()
    first = _send(post, h)
    assert _status(first) == 200 and len(first.published) == 1, first
    attributes = first.published[0].attributes
    assert attributes["recipient"] == text(get(post.parts, b"recipient"))
    assert attributes["token"] == text(get(post.parts, b"token"))
    if post.kind == "mime":
        assert first.published[0].data == get(post.parts, b"body-mime"), "raw message bytes changed"

    again = _send(post, h)
    assert _status(again) == 200 and again.published == first.published, again  # the same identity

    if not post.urlencoded:  # the same form under another boundary is the same post
        reencoded = _send(post, h, boundary=b"another-boundary-" + b"7" * 20)
        assert _status(reencoded) == 200 and reencoded.published == first.published, reencoded

    reused = _send(data.draw(other_content(post)), h)
    assert _status(reused) == 200 and len(reused.published) == 1, reused
    if reused.published[0].attributes["digest"] == attributes["digest"]:
        return  # a change the message does not carry (e.g. a field the rebuild ignores): the same message

    out = Sent()
    statuses = _relay(h.publisher.published, h.ledger, out)
    assert statuses.count("sent") == 1 and statuses[-1] == "refused", statuses
    assert statuses.count("duplicate") == len(statuses) - 2, statuses
    assert len({mime for _, mime in out.sent}) == 1 and not out.letters
    [refusal] = h.ledger.refusals.values()
    assert "token reused" in refusal["reason"]


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
    assert _status(_send(post, h)) == 200 and len(flaky.published) == 2
    out = Sent()
    assert sorted(_relay(flaky.published, h.ledger, out)) == ["duplicate", "sent"]
    assert len(out.sent) == 1


@FUZZ
@given(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=30),
    st.lists(st.binary(min_size=0, max_size=200), min_size=2, max_size=5, unique=True),
    st.sampled_from(["mime", "parsed"]),
)
def test_messages_sharing_a_message_id_are_each_delivered(local: str, bodies: list[bytes], kind: str) -> None:
    """Delivery identity (issue 15): a Message-ID a sender predicts never makes another message a duplicate."""
    h = harness()
    head = f"From: a@bank.example\r\nSubject: s\r\nMessage-ID: <{local}@x.example>\r\n\r\n".encode()
    for number, body in enumerate(bodies):
        raw = head + body.replace(b"\r", b"").replace(b"\n", b"\r\n") + b"\r\n"
        token = f"{number:02d}" + "t" * 48
        fields = [
            Part(b"recipient", b"github@example.org"),
            Part(b"sender", b"a@bank.example"),
            Part(b"timestamp", str(int(clock())).encode()),
            Part(b"token", token.encode()),
            Part(b"signature", mailgun_signature(KEY, str(int(clock())), token).encode()),
        ]
        if kind == "mime":
            fields.append(Part(b"body-mime", raw, b"message.mime", b"message/rfc822"))
        else:
            mid = f"<{local}@x.example>".encode()
            fields += [Part(b"body-plain", raw.partition(b"\r\n\r\n")[2]), Part(b"Message-Id", mid)]
        content_type, encoded = ValidPost(fields, urlencoded=False, kind=kind).encode()
        assert _status(post_and_check(content_type, encoded, h)) == 200
    digests = {p.attributes["digest"] for p in h.publisher.published}
    out = Sent()
    statuses = _relay(h.publisher.published, h.ledger, out)
    assert statuses.count("sent") == len(digests) and statuses.count("duplicate") == len(bodies) - len(digests)
