"""Class: a 406 leaves no trace. Every refusal of signed mail keeps a record (reason, alias, sender,
size, the message, 7 days) that `tagrelay refusals release` can deliver exactly once; unsigned posts
leave nothing; a refusal whose record cannot be written is a 503 (Mailgun retries), never a bare 406."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.core.errors import LedgerUnavailable
from tagrelay.core.ports import Record, Refusal
from tagrelay_tools import mailgun_posts
from tagrelay_tools.refusals import ReleaseError, release, rows
from tests.hostile.support import NOW, STAMP, mime_post, parse, pipeline
from tests.hostile.support import message as make_message

WHEN = datetime.fromtimestamp(NOW, UTC)
LOOPING = make_message("loop@x.example", extra="".join(f"Received: from h{i}.example\r\n" for i in range(30)))


@pytest.mark.parametrize(
    ("recipient", "raw", "reason"),
    [
        ("x@example.org", LOOPING, "Received"),
        ("x@example.org", make_message("m@x.example", extra="X-Tagrelay-Loop: example.org\r\n"), "loop"),
        ("leaked@example.org", make_message("b@x.example"), "block"),
        ("x@elsewhere.example", make_message("n@x.example"), ""),
    ],
    ids=["too-many-received", "loop-marker", "blocked", "no-route"],
)
def test_every_signed_406_is_recorded_with_the_message(recipient: str, raw: bytes, reason: str) -> None:
    p = pipeline()
    response = p.post(mime_post(raw, recipient, "a" * 50))
    assert response.status == 406
    [record] = p.ledger.refusals.values()
    assert reason.lower() in record["reason"].lower()
    assert (record["alias"], record["sender"], record["size"], record["message"]) == (
        recipient,
        "bounce@bank.example",
        len(raw),
        raw,
    )
    assert record["expires_at"].timestamp() == NOW + 7 * 24 * 3600
    assert p.out.published == []


def test_a_released_refusal_is_delivered_exactly_once() -> None:
    p = pipeline()
    assert p.post(mime_post(LOOPING, "x@example.org", "b" * 50)).status == 406
    [ident] = p.ledger.refusals
    release(p.ledger, p.out.publish, ident, WHEN)
    with pytest.raises(ReleaseError):
        release(p.ledger, p.out.publish, ident, WHEN)  # a second release is refused
    p.out.published.append(p.out.published[0])  # and a Pub/Sub redelivery is a duplicate
    assert [o.status for o in p.deliver()] == ["sent", "duplicate"]
    [(to, mime)] = p.out.sent
    assert to == ("owner+x@gmail.com",) and parse(mime)["Message-ID"] == "<loop@x.example>"
    assert p.ledger.refusals[ident]["released"]


def test_a_release_whose_publish_fails_can_be_released_again() -> None:
    p = pipeline()
    assert p.post(mime_post(LOOPING, "x@example.org", "c" * 50)).status == 406
    [ident] = p.ledger.refusals

    def down(data: bytes, attributes: dict[str, str]) -> str:
        raise LedgerUnavailable("publish failed")

    with pytest.raises(LedgerUnavailable):
        release(p.ledger, down, ident, WHEN)
    release(p.ledger, p.out.publish, ident, WHEN)
    assert [o.status for o in p.deliver()] == ["sent"]


def test_a_token_reused_for_another_message_is_refused_and_releasable() -> None:
    p = pipeline()
    first, other = make_message("first@x.example"), make_message("other@x.example", subject="other")
    assert p.post(mime_post(first, "x@example.org", "d" * 50)).status == 200
    assert p.post(mime_post(other, "x@example.org", "d" * 50)).status == 200
    assert [o.status for o in p.deliver()] == ["sent", "refused"]
    [(ident, record)] = p.ledger.refusals.items()
    assert "token reused" in record["reason"] and record["message"] == other
    release(p.ledger, p.out.publish, ident, WHEN)
    assert [o.status for o in p.deliver()] == ["sent"]
    assert [str(parse(m)["Subject"]) for _, m in p.out.sent] == ["hostile", "other"]


def test_unsigned_posts_leave_no_record() -> None:
    p = pipeline()
    made = mailgun_posts.mime_post(LOOPING, "x@example.org", "b@bank.example", "wrong-key", STAMP, "e" * 50)
    assert p.post(made).status == 401
    assert p.ledger.refusals == {}


class DownRefusals(MemoryLedger):
    def record_refusal(self, refusal: Refusal, token: str = "") -> str:
        raise LedgerUnavailable("Firestore failed (ServiceUnavailable)")


def test_a_refusal_that_cannot_be_recorded_is_503_so_mailgun_retries() -> None:
    p = pipeline()
    p.ingest._ledger = DownRefusals()
    assert p.post(mime_post(LOOPING, "x@example.org", "f" * 50)).status == 503


def test_a_form_that_cannot_become_a_message_is_kept_as_a_summary_and_not_releasable() -> None:
    p = pipeline()
    made = mailgun_posts.parsed_post(
        make_message("s@x.example"),
        "a@example.org, b@example.org",
        "b@bank.example",
        "hostile-webhook-signing-key",
        STAMP,
        "g" * 50,
    )
    assert p.post(made).status == 406
    [(ident, record)] = p.ledger.refusals.items()
    assert record["kind"] == "form" and b"body-plain: hello" in record["message"]
    with pytest.raises(ReleaseError, match="summary"):
        release(p.ledger, p.out.publish, ident, WHEN)
    assert not p.ledger.refusals[ident]["released"]


def test_listing_escapes_terminal_control_characters() -> None:
    data = {"alias": "a\x1b[2J@example.org", "sender": "s", "size": 1, "reason": "r\x07", "at": NOW, "kind": "message"}
    [line] = rows([Record("id1", data)], NOW + 90)
    assert "\x1b" not in line and "\x07" not in line and "\\x1b[2J" in line and "1.5m" in line
