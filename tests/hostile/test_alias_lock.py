"""Class: a locked alias lets through only the organisations it allowed, as Mailgun's own verdicts show
them, not as the sender says. A forged From of an allowed organisation, or a verdict header the sender
wrote below Mailgun's, is held (or refused); a held message is released exactly once and then
delivered, without ingest or the relay holding it again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tagrelay.adapters.aliases import MemoryAliases
from tagrelay.adapters.secrets import Secret
from tagrelay.core.control import ControlCache
from tagrelay.services.ingest import Ingest
from tagrelay_tools import mailgun_posts
from tagrelay_tools.refusals import ReleaseError, release
from tests.hostile.support import KEY, NOW, STAMP, Pipeline, parse, pipeline

ALIAS = "shop@example.org"


def locked_pipeline(mode: str = "hold") -> tuple[Pipeline, MemoryAliases]:
    p = pipeline()
    aliases = MemoryAliases()
    aliases.records[ALIAS] = {"alias": ALIAS, "state": "locked", "lock_mode": mode, "allowed": ["bank.example"]}
    cache = ControlCache(aliases.controlled, 30, lambda: NOW)
    p.ingest = Ingest(p.ingest.config, Secret(p.ingest.config.signing_key), p.out, p.ledger, clock=lambda: NOW,
                      controls=cache)  # fmt: skip
    return p, aliases


def mail(message_id: str, top: str = "", extra: str = "", sender: str = "alice@bank.example") -> bytes:
    return (
        f"{top}X-Envelope-From: <{sender}>\r\nFrom: Alice <alice@bank.example>\r\nTo: {ALIAS}\r\n"
        f"Subject: hello\r\nMessage-ID: <{message_id}>\r\n{extra}\r\nbody\r\n"
    ).encode()


def post(p: Pipeline, raw: bytes, sender: str, token: str) -> int:
    return p.post(mailgun_posts.mime_post(raw, ALIAS, sender, KEY, STAMP, token)).status


@pytest.mark.parametrize(
    ("top", "extra", "sender"),
    [
        ("X-Mailgun-Spf: Pass\r\n", "", "phisher@evil.example"),  # SPF passed for evil.example, not bank.example
        ("", "X-Mailgun-Spf: Pass\r\n", "alice@bank.example"),  # the sender's own verdict, below Mailgun's
        ("X-Mailgun-Spf: Pass\r\nX-Mailgun-Spf: Pass\r\n", "", "phisher@evil.example"),
        (
            "X-Mailgun-Spf: Fail\r\nX-Mailgun-Dkim-Check-Result: Pass\r\n",
            "DKIM-Signature: v=1; d=bank.example; b=x\r\nDKIM-Signature: v=1; d=evil.example; b=y\r\n",
            "phisher@evil.example",
        ),
    ],
    ids=["spf-of-another-org", "sender-written-verdict", "doubled-verdict", "dkim-of-another-org"],
)
def test_a_forged_from_of_an_allowed_organisation_is_held_not_published(top: str, extra: str, sender: str) -> None:
    p, _ = locked_pipeline()
    assert post(p, mail("forged@x", top, extra, sender), sender, "f" * 50) == 200
    assert p.out.published == []
    [held] = p.ledger.refusals.values()
    assert held["kind"] == "held" and "not authenticated" in held["reason"]


def test_the_allowed_organisation_with_mailguns_pass_is_delivered() -> None:
    p, _ = locked_pipeline("refuse")
    assert post(p, mail("real@x", "X-Mailgun-Spf: Pass\r\n"), "bounce@mail.bank.example", "r" * 50) == 200
    assert [o.status for o in p.deliver()] == ["sent"]


def test_a_held_message_is_released_once_and_delivered_while_the_alias_stays_locked() -> None:
    p, aliases = locked_pipeline()
    raw = mail("stranger@x", "X-Mailgun-Spf: Pass\r\n", sender="news@stranger.example")
    assert post(p, raw, "news@stranger.example", "s" * 50) == 200
    [ident] = p.ledger.refusals
    when = datetime.fromtimestamp(NOW, UTC)
    release(p.ledger, p.out.publish, ident, when)
    with pytest.raises(ReleaseError):
        release(p.ledger, p.out.publish, ident, when)
    p.out.published.append(p.out.published[0])  # a Pub/Sub redelivery of the release
    assert [o.status for o in p.deliver()] == ["sent", "duplicate"]
    [(to, sent)] = p.out.sent
    assert to == ("owner+shop@gmail.com",) and parse(sent)["Message-ID"] == "<stranger@x>"
    assert aliases.records[ALIAS]["allowed"] == ["bank.example"]  # releasing allows nobody new
