"""Class: delivery identity is forgeable. A sender who predicts a Message-ID (GitHub, Jira) mails the
alias first; the real message with that id must still be delivered, never acked as a "duplicate"."""

from __future__ import annotations

import hashlib

from tests.hostile.support import message as make_message
from tests.hostile.support import mime_post, parse, pipeline

PREDICTED = "repo/pull/1234@github.example"


def test_a_forged_message_with_a_predicted_message_id_does_not_suppress_the_real_one() -> None:
    p = pipeline()
    forged = make_message(PREDICTED, subject="forged", body=b"click here\r\n")
    real = make_message(PREDICTED, subject="[repo] PR #1234", body=b"the real notification\r\n")
    assert p.post(mime_post(forged, "github@example.org", "t" * 50)).status == 200
    assert p.post(mime_post(real, "github@example.org", "u" * 50)).status == 200
    assert [o.status for o in p.deliver()] == ["sent", "sent"]
    subjects = [str(parse(mime)["Subject"]) for _, mime in p.out.sent]
    assert subjects == ["forged", "[repo] PR #1234"]


def test_the_same_post_retried_or_redelivered_keeps_its_identity() -> None:
    p = pipeline()
    raw = make_message("retry@x.example")
    post = mime_post(raw, "github@example.org", "r" * 50)
    assert p.post(post).status == 200
    assert p.post(post).status == 200  # Mailgun's retry
    p.out.published.append(p.out.published[0])  # a Pub/Sub redelivery
    assert [o.status for o in p.deliver()] == ["sent", "duplicate", "duplicate"]
    assert {pub.attributes["digest"] for pub in p.out.published} == {hashlib.sha256(raw).hexdigest()}


def test_a_message_whose_bytes_do_not_match_its_digest_is_dead_lettered_not_sent() -> None:
    p = pipeline()
    assert p.post(mime_post(make_message("d@x.example"), "github@example.org", "d" * 50)).status == 200
    p.out.published[0].data += b"tampered\r\n"
    assert [o.status for o in p.deliver()] == ["dead-lettered"]
    assert p.out.sent == [] and "digest" in p.out.letters[0][2]


def test_a_dead_letter_replay_is_delivered_or_says_why_not(caplog: object) -> None:
    p = pipeline()
    assert p.post(mime_post(make_message("dl@x.example"), "github@example.org", "e" * 50)).status == 200
    from tagrelay.core.errors import MailgunRejected

    p.out.send_error = MailgunRejected("Mailgun answered 400: bad", 400)
    assert [o.status for o in p.deliver()] == ["dead-lettered"]
    data, attributes, _ = p.out.letters[0]
    p.out.send_error = None
    replayed = {**attributes, "replay": "1"}
    p.out.publish(data, replayed)
    assert [o.status for o in p.deliver()] == ["sent"]  # the dead record does not swallow it
    p.out.publish(data, {**attributes, "replay": "2"})
    [again] = p.deliver()
    assert again.status == "duplicate" and again.detail == "<1@mailgun.example>"  # says why: already sent as ...
    assert len(p.out.sent) == 1
