"""Replies through the relay and ingest services in-process, with the in-memory contact records."""

from __future__ import annotations

import email.utils
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.contacts import MemoryContacts
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core import reverse
from tagrelay.core.envelope import Delivery, Envelope
from tagrelay.core.errors import LedgerUnavailable
from tagrelay.core.ports import Contact
from tagrelay.core.reply import ReplyDesk, ReplyKeys
from tagrelay.core.routes import load
from tagrelay.services.ingest import Ingest
from tagrelay.services.relay import Limits, Relay
from tagrelay_tools import mailgun_posts
from tagrelay_tools.contacts import gmail_reply
from tests.unit.support import NOW, POST_TIMESTAMP, SIGNING_KEY, ingest_config, parse
from tests.unit.test_relay import RecordingDeadLetters, RecordingSender, no_storage

KEY, OLD_KEY = "n" * 64, "o" * 64
ROUTES = load(
    """\
blocked = ["leaked@example.org"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
reply_name = "Ann at Example"
"""
)
ALICE = "alice@bank.example"
ORIGINAL = (
    b"From: Alice Example <Alice@Bank.Example>\r\nTo: github@example.org\r\nSubject: Your order\r\n"
    b"Date: Mon, 13 Nov 2023 22:13:19 +0000\r\nMessage-ID: <order-1@bank.example>\r\n"
    b"Reply-To: Alice Example <alice@bank.example>\r\n\r\nhello\r\n"
)


class Key:
    def __init__(self, value: str) -> None:
        self.value = value

    def get(self) -> str:
        return self.value


@dataclass
class World:
    relay: Relay
    sender: RecordingSender
    deadletters: RecordingDeadLetters
    contacts: MemoryContacts
    desk: ReplyDesk


def world(previous: str | None = None) -> World:
    contacts = MemoryContacts(clock=lambda: NOW)
    desk = ReplyDesk(ReplyKeys(Key(KEY), Key(previous) if previous else None), contacts)
    sender, deadletters = RecordingSender(), RecordingDeadLetters()
    relay = Relay(
        ROUTES,
        sender,
        deadletters,
        ledger=MemoryLedger(clock=lambda: NOW),
        claims=ClaimStore("tagrelay-claims", client_factory=no_storage),
        limits=Limits(send_timeout_seconds=5),
        clock=lambda: NOW,
        sleep=lambda s: None,
        replies=desk,
    )
    return World(relay, sender, deadletters, contacts, desk)


def deliver(w: World, raw: bytes, recipient: str, sender: str) -> None:
    # Each post has its own Mailgun token: one token bound to two messages is refused as a replay.
    envelope = Envelope(recipient=recipient, sender=sender, mime=raw, token=hashlib.sha256(raw).hexdigest())
    outcome = w.relay.handle(Delivery(envelope, "1", datetime.fromtimestamp(NOW, UTC)))
    assert outcome.status == "sent", outcome


def forward_original(w: World) -> str:
    """Forward Alice's message; return the reverse address its copy carries."""
    deliver(w, ORIGINAL, "github@example.org", "bounce@bank.example")
    (to, mime), *_ = w.sender.sent
    assert to == ("owner+github@gmail.com",)
    name, address = email.utils.parseaddr(parse(mime)["Reply-To"])
    assert name == "Alice Example"
    return address


def owner_reply(reverse_address: str, owner: str = "owner@gmail.com", **kwargs: str) -> bytes:
    return gmail_reply(
        reverse_address=reverse_address,
        owner=owner,
        correspondent_name="Alice Example",
        subject="Your order",
        in_reply_to="<order-1@bank.example>",
        message_id="<CAJ1@mail.gmail.com>",
        **kwargs,
    )


def test_forwarded_copy_carries_the_reverse_address_and_the_contact_is_recorded() -> None:
    w = world()
    address = forward_original(w)
    assert address == reverse.make("github@example.org", ALICE, KEY)
    copy = parse(w.sender.sent[0][1])
    assert copy["X-Original-Reply-To"] == "Alice Example <alice@bank.example>"
    assert copy["X-Original-From"] == "Alice Example <Alice@Bank.Example>"
    cid = reverse.contact_id("github@example.org", ALICE)
    assert w.contacts.lookup(cid) == Contact(cid, "github@example.org", ALICE, False, 1, 0, NOW, NOW)


def test_the_owners_reply_goes_to_the_correspondent_as_the_alias() -> None:
    w = world()
    address = forward_original(w)
    deliver(w, owner_reply(address), address, "owner@gmail.com")
    to, mime = w.sender.sent[1]
    assert to == (ALICE,)
    message = parse(mime)
    assert email.utils.parseaddr(message["From"]) == ("Ann at Example", "github@example.org")
    assert message["In-Reply-To"] == "<order-1@bank.example>"
    assert b"owner@gmail.com" not in mime
    record = w.contacts.lookup(reverse.contact_id("github@example.org", ALICE))
    assert record is not None and (record.received, record.replied) == (1, 1)


def test_an_address_made_under_the_previous_key_still_works() -> None:
    w = world(previous=OLD_KEY)
    forward_original(w)
    old = reverse.make("github@example.org", ALICE, OLD_KEY)
    deliver(w, owner_reply(old), old, "owner@gmail.com")
    assert w.sender.sent[1][0] == (ALICE,)


@pytest.mark.parametrize(
    ("sender", "kwargs", "alter", "reason"),
    [
        ("mallory@evil.example", {"owner": "mallory@evil.example"}, None, "envelope sender"),
        ("owner@gmail.com", {"spf": "Fail"}, None, "SPF"),
        ("owner@gmail.com", {"dkim": "Fail"}, None, "DKIM"),
        ("owner@gmail.com", {}, "altered", "not valid"),
        ("owner@gmail.com", {}, "other-alias", "not valid"),
    ],
)
def test_anything_else_reaches_the_owner_marked(
    sender: str, kwargs: dict[str, str], alter: str | None, reason: str
) -> None:
    w = world()
    address = forward_original(w)
    if alter == "altered":
        local, _, domain = address.rpartition("@")
        address = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    elif alter == "other-alias":
        address = address.replace("r--github.", "r--shop.")
    raw = owner_reply(address, **kwargs)
    deliver(w, raw, address, sender)
    to, mime = w.sender.sent[1]
    expected_alias = "shop@example.org" if alter == "other-alias" else "github@example.org"
    assert to == (f"owner+{expected_alias.partition('@')[0]}@gmail.com",)
    message = parse(mime)
    assert message["Subject"].startswith("[to your reply address] ")
    assert reason in message["X-Tagrelay-Reply-Address"]
    assert email.utils.parseaddr(message["From"])[1] == expected_alias
    assert all(to != (ALICE,) for to, _ in w.sender.sent)


def test_the_long_form_without_a_record_is_dead_lettered_not_relayed() -> None:
    w = world()
    long_alias = "x" * 40 + "@example.org"
    address = reverse.make(long_alias, ALICE, KEY)  # no record: nothing forwarded from Alice yet
    envelope = Envelope(recipient=address, sender="owner@gmail.com", mime=owner_reply(address), token="t" * 50)
    outcome = w.relay.handle(Delivery(envelope, "1", None))
    assert outcome.status == "dead-lettered"
    assert w.sender.sent == []


class DownContacts(MemoryContacts):
    def remember(self, key: str, alias: str, correspondent: str) -> None:
        raise LedgerUnavailable("Firestore failed on contacts (ServiceUnavailable)")


def test_a_contact_store_outage_retries_instead_of_handing_out_a_dead_address() -> None:
    w = world()
    desk = ReplyDesk(ReplyKeys(Key(KEY)), DownContacts())
    relay = Relay(ROUTES, w.sender, w.deadletters, MemoryLedger(clock=lambda: NOW), clock=lambda: NOW, replies=desk)
    envelope = Envelope(recipient="github@example.org", sender="b@bank.example", mime=ORIGINAL, token="t" * 50)
    with pytest.raises(LedgerUnavailable):
        relay.handle(Delivery(envelope, "1", datetime.fromtimestamp(NOW, UTC)))
    assert w.sender.sent == []


# -- ingest ----------------------------------------------------------------------------------


def make_ingest(contacts: MemoryContacts) -> Ingest:
    config = ingest_config(ROUTES, max_body_bytes=1024 * 1024)
    publisher = type("P", (), {"publish": lambda self, d, a: "pubsub-1"})()
    desk = ReplyDesk(ReplyKeys(Key(KEY)), contacts)
    return Ingest(
        config,
        Secret(config.signing_key),
        publisher,
        MemoryLedger(clock=lambda: NOW),
        clock=lambda: NOW,
        replies=desk,
    )


def ingest_status(contacts: MemoryContacts, recipient: str) -> tuple[int, str]:
    post = mailgun_posts.mime_post(owner_reply(recipient), recipient, "owner@gmail.com", SIGNING_KEY, POST_TIMESTAMP)
    response = make_ingest(contacts).handle(post.content_type, post.body)
    return response.status, response.text


def test_ingest_takes_a_valid_reverse_address_and_an_altered_one_naming_an_alias() -> None:
    contacts = MemoryContacts()
    address = reverse.make("github@example.org", ALICE, KEY)
    contacts.remember(reverse.contact_id("github@example.org", ALICE), "github@example.org", ALICE)
    assert ingest_status(contacts, address)[0] == 200
    assert ingest_status(contacts, address.replace("r--github.", "r--shop."))[0] == 200  # to shop's owner, marked


@pytest.mark.parametrize(
    ("setup", "recipient_of", "reason"),
    [
        ("block", lambda: reverse.make("github@example.org", ALICE, KEY), "contact is blocked"),
        ("", lambda: reverse.make("leaked@example.org", ALICE, KEY), "blocked alias"),
        ("", lambda: reverse.make("x" * 40 + "@example.org", ALICE, "w" * 64), "not valid"),
        ("", lambda: "r--nonsense@example.org", "not a reply address"),
    ],
)
def test_ingest_refuses_406(setup: str, recipient_of: object, reason: str) -> None:
    contacts = MemoryContacts()
    cid = reverse.contact_id("github@example.org", ALICE)
    contacts.remember(cid, "github@example.org", ALICE)
    if setup == "block":
        contacts.block(cid)
    status, text = ingest_status(contacts, recipient_of())  # type: ignore[operator]
    assert status == 406 and reason in text


def test_mail_from_the_owners_own_mailbox_keeps_its_reply_to_and_makes_no_contact() -> None:
    w = world()
    raw = ORIGINAL.replace(b"Alice Example <alice@bank.example>", b"Me <Owner@googlemail.com>")
    deliver(w, raw, "github@example.org", "owner@gmail.com")
    assert parse(w.sender.sent[0][1])["Reply-To"] == "Me <Owner@googlemail.com>"
    assert w.contacts.records == {}


def test_mail_from_one_of_our_own_addresses_gets_no_reverse_address() -> None:
    w = world()
    raw = ORIGINAL.replace(b"Reply-To: Alice Example <alice@bank.example>", b"Reply-To: shop@example.org")
    deliver(w, raw, "github@example.org", "bounce@bank.example")
    assert parse(w.sender.sent[0][1])["Reply-To"] == "shop@example.org"
    assert w.contacts.records == {}
