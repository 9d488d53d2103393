"""Class: claim-check objects are shared. One large message to two aliases, or a Mailgun retry racing
a send, must never lose its body because another delivery deleted "its" object. Uses the real ClaimStore
adapter over an in-memory bucket client (the storage emulator path is tests/integration/test_large.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.core import envelope
from tests.hostile.support import message as make_message
from tests.hostile.support import mime_post, pipeline


class Bucket:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def bucket(self, name: str) -> Bucket:
        return self

    def blob(self, name: str) -> Blob:
        return Blob(self, name)


@dataclass
class Blob:
    store: Bucket
    name: str
    chunk_size: int | None = None

    def upload_from_string(self, data: bytes, content_type: str, timeout: float) -> None:
        self.store.objects[self.name] = bytes(data)

    def download_as_bytes(self, timeout: float) -> bytes:
        from google.api_core.exceptions import NotFound

        if self.name not in self.store.objects:
            raise NotFound("gone")  # type: ignore[no-untyped-call]
        return self.store.objects[self.name]

    def delete(self, timeout: float) -> None:
        from google.api_core.exceptions import NotFound

        if self.store.objects.pop(self.name, None) is None:
            raise NotFound("gone")  # type: ignore[no-untyped-call]


LARGE = make_message("large@x.example", body=b"x" * (envelope.MAX_DATA_BYTES + 10) + b"\r\n")


def test_one_large_message_to_two_aliases_is_delivered_to_both() -> None:
    bucket = Bucket()
    p = pipeline(claims=ClaimStore("b", client_factory=lambda: bucket))
    assert p.post(mime_post(LARGE, "one@example.org", "a" * 50)).status == 200
    assert p.post(mime_post(LARGE, "two@example.org", "b" * 50)).status == 200
    claims = [pub.attributes["claim"] for pub in p.out.published]
    assert len(set(claims)) == 2  # an object each
    assert [o.status for o in p.deliver()] == ["sent", "sent"]
    assert [to for to, _ in p.out.sent] == [("owner+one@gmail.com",), ("owner+two@gmail.com",)]
    assert all(mime.endswith(b"x" * 100 + b"\r\n") for _, mime in p.out.sent)
    # Each delivery keeps its own object until Mailgun says delivered (issue 12): neither touched the other's.
    assert sorted(bucket.objects) == sorted(c.removeprefix("gs://b/") for c in claims)


def test_a_mailgun_retry_racing_a_send_is_a_duplicate_not_a_failure() -> None:
    bucket = Bucket()
    p = pipeline(claims=ClaimStore("b", client_factory=lambda: bucket))
    post = mime_post(LARGE, "one@example.org", "c" * 50)
    assert p.post(post).status == 200
    assert p.post(post).status == 200  # the retry uploads its own object
    first, retry = p.out.published
    assert p.push(first).status == "sent"
    assert p.push(retry).status == "duplicate"  # not fetched, not dead-lettered
    assert p.push(first).status == "duplicate"  # a redelivery after its object is gone
    assert p.out.letters == [] and len(p.out.sent) == 1
    # The sent message's object is kept for a bounce (issue 12); the retry's is left to the lifecycle rule.
    assert sorted(bucket.objects) == sorted(m.attributes["claim"].removeprefix("gs://b/") for m in (first, retry))


def test_an_object_that_does_not_match_its_digest_is_not_sent() -> None:
    bucket = Bucket()
    p = pipeline(claims=ClaimStore("b", client_factory=lambda: bucket))
    assert p.post(mime_post(LARGE, "one@example.org", "d" * 50)).status == 200
    [name] = bucket.objects
    bucket.objects[name] = LARGE.replace(b"hostile", b"swapped")
    assert [o.status for o in p.deliver()] == ["dead-lettered"]
    assert p.out.sent == [] and "digest" in p.out.letters[0][2]


def test_a_redelivery_of_a_dead_lettered_claim_keeps_the_object_for_replay() -> None:
    from tagrelay.core.errors import MailgunRejected

    bucket = Bucket()
    p = pipeline(claims=ClaimStore("b", client_factory=lambda: bucket))
    assert p.post(mime_post(LARGE, "one@example.org", "e" * 50)).status == 200
    p.out.send_error = MailgunRejected("Mailgun answered 400: no", 400)
    [published] = p.out.published
    assert p.push(published).status == "dead-lettered"
    assert p.push(published).status == "duplicate"  # Pub/Sub redelivers after a lost ack
    assert len(bucket.objects) == 1  # still there for `tagrelay deadletters replay`
    p.out.send_error = None
    data, attributes, _ = p.out.letters[0]
    assert p.push(type(published)(data, {**attributes, "replay": "1"})).status == "sent"
    assert len(bucket.objects) == 1  # kept until Mailgun says delivered (issue 12)
