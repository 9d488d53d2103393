"""The owner check and the reply rewrite, checked with the stdlib email parser as the oracle."""

from __future__ import annotations

import email.utils

import pytest

from tagrelay.core.headers import body_offset, header_fields
from tagrelay.core.reply import (
    correspondent_of,
    mailbox,
    mailgun_verdicts,
    mark_stranger,
    owner_problem,
    reply_rewrite,
)
from tagrelay_tools.contacts import gmail_reply
from tests.unit.support import parse

OWNER = "owner.name@gmail.com"
TARGETS = ("ownername+github@gmail.com",)
REVERSE = "r--github.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org"
ALIAS = "github@example.org"
ALICE = "alice@bank.example"
ORIGINAL_ID = "<original-1@bank.example>"


def reply(**kwargs: str) -> bytes:
    values = {
        "reverse_address": REVERSE,
        "owner": OWNER,
        "correspondent_name": "Alice Example",
        "subject": "Your order",
        "in_reply_to": ORIGINAL_ID,
        "references": "<older@bank.example>",
        "message_id": "<CAJreply1@mail.gmail.com>",
        **kwargs,
    }
    return gmail_reply(**values)


# -- mailboxes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "box"),
    [
        ("Owner.Name+github@gmail.com", "ownername@gmail.com"),
        ("o.w.n.e.r.n.a.m.e@googlemail.com", "ownername@gmail.com"),
        ("OWNERNAME@GMAIL.COM", "ownername@gmail.com"),
        ("first.last+x@example.com", "first.last@example.com"),  # dots count outside Gmail
        ("not an address", ""),
        ("+detail@gmail.com", ""),
    ],
)
def test_mailbox(address: str, box: str) -> None:
    assert mailbox(address) == box


# -- who is the owner -------------------------------------------------------------------------


def test_the_owners_gmail_reply_passes() -> None:
    assert owner_problem(reply(), OWNER, TARGETS) == ""


@pytest.mark.parametrize("sender", ["OwnerName@googlemail.com", "o.wnername+anything@gmail.com"])
def test_gmail_equivalences_pass(sender: str) -> None:
    assert owner_problem(reply(owner=sender), sender, TARGETS) == ""


@pytest.mark.parametrize(
    ("kwargs", "envelope", "reason"),
    [
        ({}, "mallory@evil.example", "envelope sender"),
        ({"owner": "mallory@evil.example", "envelope_sender": OWNER}, OWNER, "From address"),
        ({"spf": "SoftFail"}, OWNER, "SPF verdict is softfail"),
        ({"spf": "Neutral"}, OWNER, "SPF verdict is neutral"),
        ({"dkim": "Fail"}, OWNER, "DKIM verdict is fail"),
        ({"dkim": ""}, OWNER, "DKIM verdict is missing"),
        ({"spf": ""}, OWNER, "SPF verdict is missing"),
    ],
)
def test_not_the_owner(kwargs: dict[str, str], envelope: str, reason: str) -> None:
    assert reason in owner_problem(reply(**kwargs), envelope, TARGETS)


def test_spoofed_verdicts_lower_in_the_block_are_ignored() -> None:
    """Mailgun added no DKIM verdict (unsigned mail); the sender wrote one after Mailgun's trace."""
    raw = reply(dkim="")
    spoofed = raw.replace(b"MIME-Version: 1.0\r\n", b"X-Mailgun-Dkim-Check-Result: Pass\r\nMIME-Version: 1.0\r\n", 1)
    assert spoofed.count(b"X-Mailgun-Dkim-Check-Result") == 1
    assert mailgun_verdicts(header_fields(spoofed)).dkim == ""
    assert "DKIM verdict is missing" in owner_problem(spoofed, OWNER, TARGETS)


def test_a_verdict_twice_in_mailguns_block_is_no_verdict() -> None:
    raw = b"X-Mailgun-Spf: Fail\r\nX-Mailgun-Spf: Pass\r\n" + reply(spf="")
    assert mailgun_verdicts(header_fields(raw)).spf == ""


def test_two_from_addresses_are_not_the_owner() -> None:
    raw = reply().replace(f"From: Owner Name <{OWNER}>".encode(), f"From: {OWNER}, mallory@evil.example".encode())
    assert "From address" in owner_problem(raw, OWNER, TARGETS)


# -- the reply rewrite ------------------------------------------------------------------------

GONE = [
    "Received",
    "X-Received",
    "DKIM-Signature",
    "X-Google-DKIM-Signature",
    "X-Gm-Message-State",
    "X-Google-Smtp-Source",
    "ARC-Seal",
    "ARC-Authentication-Results",
    "Return-Path",
    "X-Originating-IP",
    "X-Mailgun-Spf",
    "X-Mailgun-Dkim-Check-Result",
    "X-Mailgun-Sflag",
    "X-Envelope-From",
    "Sender",
    "Authentication-Results",
    "Cc",
]


def rewritten(raw: bytes | None = None) -> tuple[bytes, bytes]:
    raw = raw if raw is not None else reply()
    return raw, reply_rewrite(raw, ALIAS, "GitHub Ann", ALICE, TARGETS)


def test_reply_comes_from_the_alias_to_the_correspondent() -> None:
    _, out = rewritten()
    message = parse(out)
    assert email.utils.getaddresses(message.get_all("From", [])) == [("GitHub Ann", ALIAS)]
    assert email.utils.getaddresses(message.get_all("To", [])) == [("", ALICE)]
    assert message["X-Tagrelay-Loop"] == "example.org"


def test_nothing_identifying_the_owner_leaves() -> None:
    raw = reply().replace(b"MIME-Version", b"Sender: owner.name@gmail.com\r\nAuthentication-Results: x\r\nMIME-Version")
    _, out = rewritten(raw)
    message = parse(out)
    for name in GONE:
        assert message.get_all(name) is None, name
    block = out[: body_offset(out)].lower()
    for trace in (b"owner", b"ownername", b"198.51.100.23", b"google", b"mailgun", b"r--github"):
        assert trace not in block, trace


def test_only_the_allow_list_leaves_whatever_a_mail_system_adds() -> None:
    extra = (
        b"X-Sonic-MF: <owner.name@gmail.com>\r\nAutocrypt: addr=owner.name@gmail.com; keydata=AAAA\r\n"
        b"User-Agent: Mozilla Thunderbird\r\nX-Some-New-Tracker: 42\r\nThread-Topic: order\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version"
    )
    _, out = rewritten(reply().replace(b"MIME-Version", extra, 1))
    message = parse(out)
    for name in ("X-Sonic-MF", "Autocrypt", "User-Agent", "X-Some-New-Tracker"):
        assert message.get_all(name) is None, name
    assert message["Thread-Topic"] == "order"
    assert message["Auto-Submitted"] == "auto-replied"  # a vacation notice stays marked: no loops


def test_thread_headers_and_body_bytes_are_kept() -> None:
    raw, out = rewritten()
    before, after = parse(raw), parse(out)
    for name in ("Subject", "Date", "Message-ID", "In-Reply-To", "References", "MIME-Version", "Content-Type"):
        assert after.get_all(name) == before.get_all(name), name
    assert after["In-Reply-To"] == ORIGINAL_ID
    assert ORIGINAL_ID in str(after["References"])
    assert out[body_offset(out) :] == raw[body_offset(raw) :]
    assert [p.get_content() for p in after.walk() if not p.is_multipart()] == [
        p.get_content() for p in before.walk() if not p.is_multipart()
    ]


def test_cc_keeps_other_people_and_drops_the_owner() -> None:
    raw = reply().replace(
        f"Cc: Owner Name <{OWNER}>".encode(), f"Cc: Bob <bob@corp.example>, {OWNER}, {REVERSE}".encode()
    )
    _, out = rewritten(raw)
    assert email.utils.getaddresses(parse(out).get_all("Cc", [])) == [("", "bob@corp.example")]


def test_reply_to_naming_someone_else_is_kept_one_naming_the_owner_goes() -> None:
    other = reply().replace(b"MIME-Version", b"Reply-To: Team <team@corp.example>\r\nMIME-Version")
    assert parse(rewritten(other)[1])["Reply-To"] == "team@corp.example"  # plain address: names can carry anything
    own = reply().replace(b"MIME-Version", b'Reply-To: "owner.name@gmail.com" <team@corp.example>\r\nMIME-Version')
    assert parse(rewritten(own)[1])["Reply-To"] == "team@corp.example"


def test_an_address_that_spells_the_owners_mailbox_goes() -> None:
    """Found by the property test: a folded Reply-To the parser reads as owner@googlemail.comfolded..."""
    raw = b"Reply-To: ownername@googlemail.com\r\n folded continuation\r\nCc: o.w.n.e.r.name@x.example\r\n\r\nb"
    out = reply_rewrite(raw, ALIAS, "", ALICE, TARGETS)
    assert parse(out).get_all("Reply-To") is None and parse(out).get_all("Cc") is None
    own = reply().replace(b"MIME-Version", b"Reply-To: ownername@googlemail.com\r\nMIME-Version")
    assert parse(rewritten(own)[1])["Reply-To"] is None


def test_bare_lf_reply_stays_bare_lf() -> None:
    raw = reply().replace(b"\r\n", b"\n")
    out = reply_rewrite(raw, ALIAS, "", ALICE, TARGETS)
    assert b"\r\n" not in out
    assert parse(out)["From"] == ALIAS
    assert out[body_offset(out) :] == raw[body_offset(raw) :]


# -- marking mail from anyone else; the correspondent of a forwarded message ------------------


def test_stranger_mark_prefixes_subject_and_replaces_a_forged_mark() -> None:
    raw = b"X-Tagrelay-Reply-Address: from the owner, honest\r\nSubject: hello\r\n\r\nbody\r\n"
    out = mark_stranger(raw, "the envelope sender is not the alias's owner")
    message = parse(out)
    assert message.get_all("X-Tagrelay-Reply-Address") == [
        "not from the owner: the envelope sender is not the alias's owner"
    ]
    assert message["Subject"] == "[to your reply address] hello"
    assert out.endswith(b"\r\n\r\nbody\r\n")


def test_correspondent_prefers_reply_to_then_from_then_envelope() -> None:
    both = b"From: Alice <Alice@Bank.Example>\r\nReply-To: =?utf-8?q?Z=C3=BCrich_Desk?= <desk@bank.example>\r\n\r\n"
    assert correspondent_of(both, "bounce@bank.example") == ("Zürich Desk", "desk@bank.example")
    assert correspondent_of(b"From: Alice <Alice@Bank.Example>\r\n\r\n", "") == ("Alice", "alice@bank.example")
    assert correspondent_of(b"Subject: x\r\n\r\n", "bounce@bank.example") == ("", "bounce@bank.example")
    assert correspondent_of(b"From: undisclosed\r\n\r\n", "") == ("", "")


def test_verdicts_are_read_from_a_message_rebuilt_from_the_parsed_form() -> None:
    """Mailgun's parsed form (route URL without /mime): the rebuilt message keeps Mailgun's verdicts on top."""
    from tagrelay.core.inbound import parse_form, to_inbound
    from tagrelay_tools import mailgun_posts

    post = mailgun_posts.parsed_post(reply(), REVERSE, OWNER, "key")
    rebuilt = to_inbound(parse_form(post.content_type, post.body), 1).mime
    assert header_fields(rebuilt)[0].name == "x-mailgun-spam-rules"
    assert owner_problem(rebuilt, OWNER, TARGETS) == ""
    failing = mailgun_posts.parsed_post(reply(dkim="Fail"), REVERSE, OWNER, "key")
    assert "DKIM" in owner_problem(to_inbound(parse_form(failing.content_type, failing.body), 1).mime, OWNER, TARGETS)


class _Key:
    def __init__(self, value: str | None) -> None:
        self.value = value

    def get(self) -> str:
        if self.value is None:
            from tagrelay.core.errors import SecretUnavailable

            raise SecretUnavailable("TAGRELAY_REPLY_KEY_PREVIOUS: Secret Manager failed (NotFound)")
        return self.value


def test_an_unreadable_previous_reply_key_only_narrows_what_verifies() -> None:
    """After a rotation the previous version may be disabled: reply addresses made with the current
    key keep working (no 503 at ingest, no relay spinning on a key it cannot read)."""
    from tagrelay.core.reply import ReplyKeys

    assert ReplyKeys(_Key("n" * 64), _Key(None)).all() == ["n" * 64]
    assert ReplyKeys(_Key("n" * 64), _Key("o" * 64)).all() == ["n" * 64, "o" * 64]
