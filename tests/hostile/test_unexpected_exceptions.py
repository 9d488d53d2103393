"""Class: an exception outside the tree wedges a message. No input may end in an unhandled exception:
the relay dead-letters the whole message with the reason (never spins until Pub/Sub gives up), and
ingest never answers 500: a signed post it cannot handle is refused with a refusal record."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagrelay.core.envelope import Delivery, Envelope
from tagrelay_tools import mailgun_posts
from tests.hostile.support import KEY, STAMP, Recorder, mime_post, pipeline
from tests.hostile.support import message as make_message

NESTED_FROM = b"From: " + b"(" * 600 + b"x" + b")" * 600 + b" <a@b.example>\r\nSubject: deep\r\n\r\nbody\r\n"


@pytest.mark.parametrize("error", [RecursionError("maximum recursion depth"), KeyError("x"), AttributeError("y")])
def test_relay_dead_letters_the_whole_message_on_an_unexpected_exception(error: BaseException) -> None:
    p = pipeline()
    raw = make_message("boom@x.example")
    assert p.post(mime_post(raw, "notify-x@example.org", "a" * 50)).status == 200
    p.out.send_error = error
    [outcome] = p.deliver()  # returns: acknowledged, not redelivered forever
    assert outcome.status == "dead-lettered"
    [(data, attributes, reason)] = p.out.letters
    assert data == raw and attributes["recipient"] == "notify-x@example.org"
    assert type(error).__name__ in reason
    # The delivery is recorded dead: a redelivery does not try again, a replay does.
    p.out.send_error = None
    assert p.push(p.out.published[0]).status == "duplicate"
    assert p.push(type(p.out.published[0])(data, {**attributes, "replay": "1"})).status == "sent"


def test_relay_survives_a_collaborator_raising_before_the_ledger() -> None:
    class BrokenRoutes:
        def resolve(self, recipient: str) -> object:
            raise KeyError(recipient)

    out = Recorder()
    from tagrelay.adapters.ledger import MemoryLedger
    from tagrelay.services.relay import Relay

    relay = Relay(BrokenRoutes(), out, out, MemoryLedger())  # type: ignore[arg-type]
    envelope = Envelope(recipient="a@example.org", sender="", mime=b"Subject: x\r\n\r\nb\r\n")
    assert relay.handle(Delivery(envelope, "1", None)).status == "dead-lettered"
    assert out.letters[0][0] == envelope.mime and "KeyError" in out.letters[0][2]


def test_the_deeply_nested_from_is_sent_or_dead_lettered_never_raised() -> None:
    p = pipeline()
    assert p.post(mime_post(NESTED_FROM, "notify-x@example.org", "n" * 50)).status == 200
    [outcome] = p.deliver()
    assert outcome.status in ("sent", "dead-lettered")
    assert len(p.out.sent) + len(p.out.letters) >= 1


def test_the_deeply_nested_from_on_the_parsed_path_gets_a_defined_status() -> None:
    p = pipeline()
    made = mailgun_posts.parsed_post(NESTED_FROM, "x@example.org", "b@bank.example", KEY, STAMP, "p" * 50)
    response = p.post(made)
    assert response.status in (200, 406), response
    if response.status == 406:
        assert len(p.ledger.refusals) == 1


@pytest.mark.parametrize("error", [RecursionError("deep"), KeyError("k"), TypeError("t")])
def test_ingest_answers_406_with_a_refusal_record_when_handling_a_signed_post_fails(error: BaseException) -> None:
    p = pipeline()

    def explode(data: bytes, attributes: dict[str, str]) -> str:
        raise error

    p.out.publish = explode  # type: ignore[method-assign]
    raw = make_message("fail@x.example")
    response = p.post(mime_post(raw, "x@example.org", "f" * 50))
    assert response.status == 406 and "refusal record" in response.text
    [record] = p.ledger.refusals.values()
    assert record["message"] == raw and type(error).__name__ in record["reason"]


def test_ingest_answers_400_not_500_when_reading_an_unsigned_post_fails() -> None:
    p = pipeline()

    class BrokenKey:
        def get(self) -> str:
            raise RecursionError("deep")

    p.ingest._key = BrokenKey()
    response = p.post(mime_post(make_message("u@x.example"), "x@example.org", "g" * 50))
    assert response.status == 400
    assert p.ledger.refusals == {}  # nothing signed: nothing recorded


ERRORS = st.sampled_from(
    [RecursionError("deep"), KeyError("k"), TypeError("t"), ValueError("v"), IndexError("i"), UnicodeError("u")]
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(ERRORS, st.sampled_from(["publish", "send", "refusal"]), st.binary(max_size=200))
def test_no_collaborator_error_escapes_either_service(error: BaseException, where: str, body: bytes) -> None:
    """Generator for the class: any exception type, from any collaborator, on any message."""
    p = pipeline()
    raw = make_message("gen@x.example", body=body.replace(b"\r", b"").replace(b"\n", b"\r\n") + b"\r\n")

    def explode(*args: object, **kwargs: object) -> str:
        raise error

    if where == "publish":
        p.out.publish = explode  # type: ignore[method-assign]
    elif where == "send":
        p.out.send_error = error
    else:
        p.ledger.record_refusal = explode  # type: ignore[method-assign]
    recipient = "leaked@example.org" if where == "refusal" else "x@example.org"
    response = p.post(mime_post(raw, recipient, "h" * 50))
    assert response.status in {200, 400, 401, 406, 503}
    if where == "publish":
        assert response.status == 406 and len(p.ledger.refusals) == 1
    if where == "refusal":
        assert response.status == 503  # no record, so no 406: Mailgun retries
    outcomes = p.deliver()  # raises nothing
    if where == "send":
        assert [o.status for o in outcomes] == ["dead-lettered"] and p.out.letters[0][0] == raw
