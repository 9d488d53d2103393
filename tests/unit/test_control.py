"""Block and lock without a redeploy (issue 14): the pure decisions, the cache, the link, and ingest using them."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from urllib.parse import parse_qs, urlparse

import pytest

from tagrelay.adapters.aliases import MemoryAliases
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core import control
from tagrelay.core.aliases import LockMode
from tagrelay.core.config import load_public_url
from tagrelay.core.control import BadLink, Control, ControlCache, Snapshot, sender_org
from tagrelay.core.errors import ConfigError, LedgerUnavailable, RoutesError
from tagrelay.core.headers import header_fields
from tagrelay.core.routes import load
from tagrelay.services.ingest import Ingest
from tagrelay_tools import mailgun_posts
from tests.unit.support import NOW, POST_TIMESTAMP, SIGNING_KEY, RecordingPublisher, ingest_config

ROUTES = load(
    """\
blocked = ["leaked@example.org"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)
KEY = control.link_key("r" * 40)


def headers(from_: str = "GitHub <noreply@github.com>", spf: str = "Pass", dkim: str = "", extra: str = "") -> str:
    top = (f"X-Mailgun-Spf: {spf}\r\n" if spf else "") + (f"X-Mailgun-Dkim-Check-Result: {dkim}\r\n" if dkim else "")
    return f"{top}X-Envelope-From: <x@y>\r\n{extra}From: {from_}\r\nSubject: s\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"


def org(raw: str, envelope: str = "bounce@github.com") -> control.SenderOrg:
    return sender_org(header_fields(raw.encode()), envelope)


# -- who the sender is ------------------------------------------------------------------------


def test_spf_pass_of_the_same_organisation_authenticates_the_from() -> None:
    assert org(headers(), "bounces@mail.github.com") == control.SenderOrg("github.com", True, "SPF")


def test_spf_pass_of_another_organisation_does_not_authenticate_a_from() -> None:
    found = org(headers(), "spammer@evil.example")
    assert (found.org, found.authenticated) == ("github.com", False)


def test_dkim_pass_counts_only_when_every_signature_is_the_from_organisation() -> None:
    signed = "DKIM-Signature: v=1; a=rsa-sha256; d=github.com; s=pf2023; b=abc\r\n"
    foreign = "DKIM-Signature: v=1; a=rsa-sha256; d=evil.example; s=x; b=abc\r\n"
    assert org(headers(spf="SoftFail", dkim="Pass", extra=signed), "b@esp.example").how == "DKIM"
    mixed = org(headers(spf="SoftFail", dkim="Pass", extra=signed + foreign), "b@esp.example")
    assert not mixed.authenticated and "another domain" in mixed.how
    assert not org(headers(spf="SoftFail", dkim="Fail", extra=signed), "b@esp.example").authenticated


def test_a_verdict_written_by_the_sender_below_mailguns_run_is_not_read() -> None:
    raw = headers(spf="", extra="X-Mailgun-Spf: Pass\r\n")  # below X-Envelope-From: the sender's
    assert org(raw).authenticated is False


def test_the_envelope_sender_stands_in_when_from_has_not_one_address() -> None:
    assert org(headers(from_="a@one.example, b@two.example"), "x@mail.github.com").org == "github.com"
    assert org(headers(from_="undisclosed"), "").org == ""


# -- what a control decides ---------------------------------------------------------------------


def snapshot(*records: dict[str, object]) -> Snapshot:
    return Snapshot.of([dict(r) for r in records], NOW)


def test_a_block_of_the_base_covers_every_detail_address_and_wins_over_a_lock() -> None:
    snap = snapshot(
        {"alias": "shop@example.org", "state": "blocked"},
        {"alias": "shop+x@example.org", "state": "locked", "allowed": ["github.com"]},
    )
    found = snap.lookup("Shop+X@Example.ORG")
    assert found is not None and found.state == "blocked"
    assert snap.lookup("other@example.org") is None


def test_active_and_malformed_records_are_not_controls() -> None:
    snap = snapshot({"alias": "a@example.org", "state": "active"}, {"alias": "b@example.org", "state": "weird"}, {})
    assert snap.controls == {}


def locked(mode: LockMode = "refuse", allowed: tuple[str, ...] = ("github.com",)) -> Control:
    return Control("shop@example.org", "locked", mode, frozenset(allowed))


@pytest.mark.parametrize(
    ("sender", "action"),
    [
        (control.SenderOrg("github.com", True, "SPF"), "pass"),
        (control.SenderOrg("github.com", False, "not authenticated (SPF fail, DKIM missing)"), "refuse"),
        (control.SenderOrg("gitlab.com", True, "SPF"), "refuse"),
        (control.SenderOrg("", False, "no sender address"), "refuse"),
    ],
)
def test_a_lock_passes_only_an_allowed_authenticated_organisation(sender: control.SenderOrg, action: str) -> None:
    assert control.decide(locked(), sender).action == action
    assert control.decide(locked("hold"), sender).action == ("pass" if action == "pass" else "hold")


def test_a_subdomain_of_an_allowed_organisation_passes_a_lock() -> None:
    sender = org(headers(from_="n@notifications.github.com"), "b@bounce.github.com")
    assert control.decide(locked(), sender) == control.Decision("pass")


def test_reasons_name_the_domain() -> None:
    assert control.decide(Control("a@example.org", "blocked"), org(headers())).reason == control.BLOCKED_REASON
    reason = control.decide(locked(), control.SenderOrg("gitlab.com", True, "SPF")).reason
    assert reason == "locked alias (tagrelay lock): sender domain gitlab.com not allowed"


# -- the owner's changes ------------------------------------------------------------------------


def test_lock_snapshots_the_seen_domains_and_keeps_them_when_locked_again() -> None:
    record = {"alias": "a@example.org", "domains": {"github.com": {"count": 3, "first_seen": 1.0}}}
    first = control.lock_change(record, "a@example.org", "hold", 10.0, also=["News.Example.COM"])
    assert first == {
        "alias": "a@example.org",
        "state": "locked",
        "lock_mode": "hold",
        "allowed": ["example.com", "github.com"],
        "state_changed_at": 10.0,
    }
    later = {**record, **first, "domains": {"gitlab.com": {"count": 1, "first_seen": 2.0}}}
    again = control.lock_change(later, "a@example.org", "refuse", 20.0)
    assert again is not None and again["allowed"] == ["example.com", "github.com", "gitlab.com"]
    assert control.lock_change({**later, **again}, "a@example.org", "refuse", 30.0) is None


def test_unblock_and_unlock_change_only_their_own_state() -> None:
    assert control.unblock_change({"state": "locked"}, "a@x.org", 5.0) is None
    assert control.unlock_change({"state": "blocked"}, "a@x.org", 5.0) is None
    assert control.unblock_change({"state": "blocked"}, "a@x.org", 5.0) == {
        "alias": "a@x.org",
        "state": "active",
        "state_changed_at": 5.0,
        "unblocked_at": 5.0,
    }
    assert control.block_change({"state": "blocked"}, "a@x.org", 5.0) is None


# -- the cache ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_reads_once_per_period() -> None:
    store, clock = MemoryAliases(), Clock()
    cache = ControlCache(store.controlled, 30, clock)
    store.records["a@example.org"] = {"alias": "a@example.org", "state": "blocked"}
    for _ in range(100):
        assert cache.current().lookup("a@example.org") is not None
    del store.records["a@example.org"]
    clock.now += 29
    assert cache.current().lookup("a@example.org") is not None and store.queries == 1
    clock.now += 2
    assert cache.current().lookup("a@example.org") is None and store.queries == 2


def test_a_failed_refresh_serves_the_last_snapshot_and_retries_later(logged: list[logging.LogRecord]) -> None:
    store, clock = MemoryAliases(), Clock()
    store.records["a@example.org"] = {"alias": "a@example.org", "state": "blocked"}
    cache = ControlCache(store.controlled, 30, clock, retry_seconds=5)
    cache.current()
    store.down, clock.now = True, clock.now + 31
    for _ in range(10):
        assert cache.current().lookup("a@example.org") is not None  # still blocked
    assert store.queries == 2  # one failed attempt, not one per post
    [warning] = [r.getMessage() for r in logged if r.levelno == logging.WARNING]
    assert "serving the snapshot read 31s ago" in warning
    clock.now += 5
    store.down = False
    cache.current()
    assert store.queries == 3


def test_a_cold_cache_that_cannot_read_answers_unavailable_then_tries_again_later() -> None:
    store, clock = MemoryAliases(), Clock()
    store.down = True
    cache = ControlCache(store.controlled, 30, clock, retry_seconds=5)
    with pytest.raises(LedgerUnavailable):
        cache.current()
    with pytest.raises(LedgerUnavailable):
        cache.current()
    assert store.queries == 1
    store.down, clock.now = False, clock.now + 5
    assert cache.current().controls == {}


def test_at_most_one_refresh_is_in_flight() -> None:
    release, entered = threading.Event(), threading.Event()
    calls = []

    def slow() -> list[dict[str, object]]:
        calls.append(1)
        entered.set()
        release.wait(5)
        return [{"alias": "a@example.org", "state": "blocked"}]

    cache = ControlCache(slow, 30)
    results: list[Snapshot] = []
    threads = [threading.Thread(target=lambda: results.append(cache.current())) for _ in range(8)]
    threads[0].start()
    entered.wait(5)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1 and len(results) == 8
    assert all(r.lookup("a@example.org") is not None for r in results)


# -- ingest ---------------------------------------------------------------------------------------


def make(aliases: MemoryAliases, ledger: MemoryLedger | None = None) -> tuple[Ingest, RecordingPublisher, MemoryLedger]:
    publisher, ledger = RecordingPublisher(), ledger or MemoryLedger(clock=lambda: NOW)
    config = ingest_config(ROUTES)
    cache = ControlCache(aliases.controlled, 30, lambda: NOW)
    ingest = Ingest(config, Secret(config.signing_key), publisher, ledger, clock=lambda: NOW, controls=cache)
    return ingest, publisher, ledger


def post(ingest: Ingest, recipient: str, raw: str, sender: str = "bounce@github.com", token: str = "t" * 50) -> int:
    made = mailgun_posts.mime_post(raw.encode(), recipient, sender, SIGNING_KEY, POST_TIMESTAMP, token)
    return ingest.handle(made.content_type, made.body).status


def test_a_blocked_alias_is_refused_with_a_record_and_its_other_aliases_pass() -> None:
    aliases = MemoryAliases()
    aliases.records["shop@example.org"] = {"alias": "shop@example.org", "state": "blocked"}
    ingest, publisher, ledger = make(aliases)
    assert post(ingest, "shop+promo@example.org", headers()) == 406
    assert post(ingest, "other@example.org", headers()) == 200
    assert post(ingest, "leaked@example.org", headers(), token="u" * 50) == 406  # the routes file's list still works
    reasons = sorted(r["reason"] for r in ledger.refusals.values())
    assert reasons == ["blocked alias", control.BLOCKED_REASON]
    assert len(publisher.published) == 1 and aliases.queries == 1


def test_a_locked_alias_holds_a_stranger_with_200_and_passes_a_known_organisation() -> None:
    aliases = MemoryAliases()
    aliases.records["shop@example.org"] = {
        "alias": "shop@example.org",
        "state": "locked",
        "lock_mode": "hold",
        "allowed": ["github.com"],
    }
    ingest, publisher, ledger = make(aliases)
    assert post(ingest, "shop@example.org", headers(from_="x@evil.example"), sender="x@evil.example") == 200
    assert publisher.published == []
    [held] = ledger.refusals.values()
    assert held["kind"] == "held" and "evil.example" in held["reason"]
    assert post(ingest, "shop@example.org", headers(), token="v" * 50) == 200
    assert len(publisher.published) == 1


def test_forged_from_of_an_allowed_organisation_does_not_pass_a_refusing_lock() -> None:
    aliases = MemoryAliases()
    aliases.records["shop@example.org"] = {
        "alias": "shop@example.org",
        "state": "locked",
        "lock_mode": "refuse",
        "allowed": ["github.com"],
    }
    ingest, publisher, ledger = make(aliases)
    assert post(ingest, "shop@example.org", headers(spf="Pass"), sender="phish@evil.example") == 406
    [refused] = ledger.refusals.values()
    assert refused["kind"] == "message" and "not authenticated" in refused["reason"]
    assert publisher.published == []


def test_alias_states_unknown_on_a_cold_instance_is_503_and_nothing_published() -> None:
    aliases = MemoryAliases()
    aliases.down = True
    ingest, publisher, _ = make(aliases)
    assert post(ingest, "shop@example.org", headers()) == 503
    assert publisher.published == []


# -- routes and settings --------------------------------------------------------------------------


def test_block_link_is_a_route_key_that_must_be_a_boolean() -> None:
    text = '[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\nblock_link = %s\n'
    assert load(text % "true").rules[0].block_link is True
    assert ROUTES.rules[0].block_link is False
    with pytest.raises(RoutesError, match="block_link must be true or false"):
        load(text % '"yes"')


def test_public_url_must_be_https() -> None:
    assert load_public_url({}) == ""
    assert load_public_url({"TAGRELAY_PUBLIC_URL": "https://r-p.cloudfunctions.net/ingest/"}).endswith("/ingest")
    with pytest.raises(ConfigError, match="TAGRELAY_PUBLIC_URL"):
        load_public_url({"TAGRELAY_PUBLIC_URL": "http://example.com/ingest"})


# -- the link -------------------------------------------------------------------------------------


def params(link: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}


def test_the_link_mac_is_hmac_sha256_of_purpose_alias_and_expiry() -> None:
    link = control.block_link("https://i.example/ingest/", "Shop@Example.org", NOW, KEY)
    got = params(link)
    expiry = int(NOW) + 7 * 24 * 3600
    expected = hmac.new(KEY, f"block\nshop@example.org\n{expiry}".encode(), hashlib.sha256).hexdigest()
    assert link.startswith("https://i.example/ingest/block?")
    assert got == {"a": "shop@example.org", "x": str(expiry), "s": expected}
    assert control.check_link(got, NOW + 1, [KEY]) == control.Link("shop@example.org", expiry)


def test_the_link_key_is_separated_from_the_reply_key() -> None:
    reply = "r" * 40
    assert control.link_key(reply) == hmac.new(reply.encode(), b"tagrelay block-link v1", hashlib.sha256).digest()
    assert control.link_key(reply) != reply.encode()


def test_a_link_made_under_the_previous_key_verifies_while_it_is_set() -> None:
    old = control.link_key("o" * 40)
    got = params(control.block_link("https://i.example", "a@example.org", NOW, old))
    assert control.check_link(got, NOW, [KEY, old]).alias == "a@example.org"
    with pytest.raises(BadLink):
        control.check_link(got, NOW, [KEY])


def test_a_link_after_an_unblock_changes_nothing() -> None:
    link = control.Link("a@example.org", int(NOW) + control.LINK_SECONDS)
    record = {"state": "active", "unblocked_at": NOW + 5}
    assert control.link_change(record, link, NOW + 10) is None
    assert control.link_answer(record, link) == "unblocked-since"
    assert control.link_change({"state": "blocked"}, link, NOW) is None
    assert control.link_answer({"state": "blocked"}, link) == "already"
    assert control.link_change({"state": "locked", "unblocked_at": NOW - 1}, link, NOW) == {
        "alias": "a@example.org",
        "state": "blocked",
        "state_changed_at": NOW,
    }


# -- reply addresses (issue 13) under a lock or a block ---------------------------------------------


class FixedKey:
    def __init__(self, value: str) -> None:
        self.value = value

    def get(self) -> str:
        return self.value


@pytest.mark.parametrize(
    ("state", "verified", "status"),
    [
        ("locked", True, 200),  # a verified contact is an exchange the alias already has: the owner's replies
        ("locked", False, 406),  # an altered address naming the alias is a stranger, locked out
        ("blocked", True, 406),  # a block refuses replies too, as the routes file's list does
    ],
)
def test_a_lock_spares_a_verified_reply_contact_and_a_block_does_not(state: str, verified: bool, status: int) -> None:
    from tagrelay.adapters.contacts import MemoryContacts
    from tagrelay.core import reverse
    from tagrelay.core.reply import ReplyDesk, ReplyKeys

    reply_key, alice = "z" * 64, "alice@bank.example"
    contacts = MemoryContacts()
    if verified:
        contacts.remember(reverse.contact_id("shop@example.org", alice), "shop@example.org", alice)
    aliases = MemoryAliases()
    aliases.records["shop@example.org"] = {"alias": "shop@example.org", "state": state, "lock_mode": "refuse"}
    config = ingest_config(ROUTES)
    ingest = Ingest(
        config,
        Secret(config.signing_key),
        RecordingPublisher(),
        MemoryLedger(clock=lambda: NOW),
        clock=lambda: NOW,
        replies=ReplyDesk(ReplyKeys(FixedKey(reply_key)), contacts),
        controls=ControlCache(aliases.controlled, 30, lambda: NOW),
    )
    address = reverse.make("shop@example.org", alice, reply_key)
    assert post(ingest, address, headers(from_="owner@gmail.com"), sender="owner@gmail.com") == status


def test_locking_after_a_leak_notice_does_not_let_the_flagged_domain_through() -> None:
    """The notice says 'tagrelay lock ALIAS: let only the domains above through' (the known ones): the
    domain it flagged was counted in ``domains`` by then, and must not become 'allowed' by the lock."""
    from tagrelay.adapters.insight import MemoryInsight
    from tagrelay.core import insight

    alias, day = "shop@example.org", 86400.0
    store = MemoryInsight()

    def seen(address: str, at: float) -> insight.Sighting:
        return insight.Sighting(alias, at, address, address, "s", "", f"bounce@{address.partition('@')[2]}", True)

    for n in range(5):
        insight.observe(store, seen("noreply@github.com", NOW - (10 - n) * day))
    flag = insight.observe(store, seen("deals@leaker.example", NOW))
    assert flag is not None
    write = insight.leak_write(flag.record, flag.leak, notified=True)
    assert write is not None
    store.update(alias, write)
    record = store.lookup(alias)
    assert record is not None and "leaker.example" in record["domains"]  # counted: it did write to the alias
    change = control.lock_change(record, alias, "refuse", NOW)
    assert change is not None and change["allowed"] == ["github.com"]
    fields = header_fields(headers("Deals <deals@leaker.example>").encode())
    leaker = sender_org(fields, "bounce@leaker.example")
    assert leaker.authenticated  # SPF passes for its own domain: only 'allowed' keeps it out
    locked = control.from_record({**record, **change})
    assert control.decide(locked, leaker).action == "refuse"
    # the owner may still let it through on purpose
    chosen = control.lock_change(record, alias, "refuse", NOW, also=["leaker.example"])
    assert chosen is not None and chosen["allowed"] == ["github.com", "leaker.example"]


def test_a_lock_after_a_leak_leaves_out_every_domain_first_seen_since_it() -> None:
    """The fourth unrelated sender makes the alias look shared and is never flagged itself: the leaker
    sending from several domains must not get the unflagged ones into 'allowed'."""
    leak = {"at": 500.0, "from": "x", "subject": "", "date": "", "known": ["github.com"], "notified": True}
    record = {
        "alias": "a@example.org",
        "domains": {
            "github.com": {"count": 9, "first_seen": 100.0},
            "one.example": {"count": 1, "first_seen": 500.0},
            "two.example": {"count": 1, "first_seen": 600.0},
            "three.example": {"count": 1, "first_seen": 700.0},
            "four.example": {"count": 1, "first_seen": 800.0},
        },
        "leaks": {"one.example": leak, "two.example": {**leak, "at": 600.0}, "three.example": {**leak, "at": 700.0}},
    }
    assert control.suspect_domains(record) == ["four.example", "one.example", "three.example", "two.example"]
    change = control.lock_change(record, "a@example.org", "hold", 900.0)
    assert change is not None and change["allowed"] == ["github.com"]
    assert control.suspect_domains({"domains": record["domains"]}) == []  # no leak: nothing left out
