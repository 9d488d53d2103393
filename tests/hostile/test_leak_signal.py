"""The leak signal and the alias record under a hostile sender (issue 14's insight).

What a sender controls: the From (address, display name, domain), the Subject and Date, the
envelope sender, how many messages and from how many domains. What it must not get: a header
injected into the owner's leak notice, a Firestore write broken (or a reserved field written) by a
made-up domain, a flood of notices, a leak hidden by forging Mailgun's verdict, or a spam domain
planted as a "known" sender (which a lock would let through).
"""

from __future__ import annotations

import base64
import email
import email.policy

import pytest

from tagrelay.adapters.insight import MemoryInsight
from tagrelay.core import insight
from tagrelay.core.insight import Sighting

NOW = 1_767_225_600.0 + 100 * 86400
DAY = 86400.0
ALIAS = "shop@example.org"


def established() -> MemoryInsight:
    store = MemoryInsight()
    for n in range(5):
        insight.observe(store, Sighting(ALIAS, NOW - (10 - n) * DAY, "n@github.com", "", "", "", "", True, False))
    return store


def from_raw(raw: bytes, envelope: str = "bounce@evil.example") -> Sighting:
    return insight.sighting(ALIAS, raw, envelope, False, NOW)


@pytest.mark.parametrize(
    "value",
    [
        "x\r\nBcc: victim@example.net",
        "x\nBcc: victim@example.net",
        "x\rBcc: victim@example.net",
        "=?utf-8?q?x=0D=0ABcc=3A_victim=40example=2Enet?=",  # the break hidden in an encoded word
        "x\x00\x1b[2J\u2028Bcc: victim@example.net",
    ],
)
def test_a_from_or_subject_cannot_add_a_header_to_the_leak_notice(value: str) -> None:
    raw = f"X-Mailgun-Spf: Pass\r\nFrom: {value} <a@evil.example>\r\nSubject: {value}\r\n\r\nbody".encode()
    parsed = from_raw(raw)
    # Raw line breaks end the field in the message itself; a decoded one (an encoded word) stays in the
    # value. Either way, and even with the value taken as it is (no cleaning), the notice holds.
    if parsed.from_address:
        check_notice(established(), parsed)
    else:  # the break ended the From field: the rest is a field of its own, never read as the sender
        assert parsed.shown_from == "x" and "Bcc" not in parsed.subject
    check_notice(established(), Sighting(ALIAS, NOW, "a@evil.example", value, value, value, "", True, False))


def check_notice(store: MemoryInsight, seen: Sighting) -> None:
    flag = insight.observe(store, seen)
    assert flag is not None
    notice = insight.leak_notice(flag.leak, "owner@gmail.com")
    head = notice.partition(b"\r\n\r\n")[0]
    assert b"\r\nBcc" not in head and b"\nBcc" not in head and b"\x00" not in head and b"\x1b" not in head
    message = email.message_from_bytes(notice, policy=email.policy.default)
    assert message["Bcc"] is None and message["To"] == "owner@gmail.com"
    text = base64.b64decode(notice.partition(b"\r\n\r\n")[2]).decode("utf-8")
    assert "\x00" not in text and "\x1b" not in text and "\r" not in text.replace("\r\n", "")


def test_a_huge_subject_is_bounded_in_the_record_and_the_notice() -> None:
    raw = b"X-Mailgun-Spf: Pass\r\nFrom: a@evil.example\r\nSubject: " + b"A" * 100_000 + b"\r\n\r\nbody"
    flag = insight.observe(established(), from_raw(raw))
    assert flag is not None and len(flag.leak.subject) == insight.MAX_SHOWN
    assert len(insight.leak_notice(flag.leak, "owner@gmail.com")) < 4000


@pytest.mark.parametrize("domain", ["__name__", "ev`il.com", "a.b/c", "x*.com", "a" * 300 + ".com", "[1.2.3.4]"])
def test_a_made_up_domain_never_becomes_a_record_key(domain: str) -> None:
    raw = f"X-Mailgun-Spf: Pass\r\nFrom: a@{domain}\r\n\r\nbody".encode()
    store = established()
    assert insight.observe(store, from_raw(raw)) is None
    record = store.lookup(ALIAS)
    assert record is not None and list(record["domains"]) == ["github.com"] and record["messages"] == 6


def test_a_forged_spf_verdict_below_mailguns_own_does_not_count() -> None:
    raw = b"X-Mailgun-Spf: Fail\r\nFrom: a@evil.example\r\nX-Mailgun-Spf: Pass\r\n\r\nbody"
    assert from_raw(raw).spf_pass is False


def test_a_forged_envelope_cannot_hide_a_leak_without_passing_spf() -> None:
    raw = b"X-Mailgun-Spf: Fail\r\nFrom: a@evil.example\r\n\r\nbody"
    sighting = from_raw(raw, envelope="bounce@github.com")
    assert insight.judge(insight.apply({}, insight.write_for(sighting)), sighting) is None  # no flag, but
    assert sighting.spf_pass is False  # the envelope was not trusted either: unauthenticated mail never flags


def test_many_new_domains_cost_at_most_the_notice_limit_per_day() -> None:
    store = established()
    notices = 0
    for n in range(50):
        raw = f"X-Mailgun-Spf: Pass\r\nFrom: a@attacker{n}.example\r\n\r\nbody".encode()
        flag = insight.observe(store, from_raw(raw))
        if flag is not None and flag.notify:
            notices += 1
            write = insight.leak_write(flag.record, flag.leak, True)
            assert write is not None
            store.update(ALIAS, write)
    assert notices == insight.NOTICES_PER_DAY


def test_spam_cannot_plant_a_known_sender() -> None:
    store = established()
    for _ in range(5):
        insight.observe(store, Sighting(ALIAS, NOW, "a@planted.example", "", "", "", "", True, True))
    record = store.lookup(ALIAS)
    assert record is not None and "planted.example" not in record["domains"]
    flag = insight.observe(store, Sighting(ALIAS, NOW + 1, "a@planted.example", "", "", "", "", True, False))
    assert flag is not None and flag.leak.domain == "planted.example"  # its first non-spam message is new


def _flag_and_record(store: MemoryInsight, alias: str, address: str, at: float) -> bool:
    """One message through the relay's path; whether the owner would be sent a notice."""
    flag = insight.observe(store, Sighting(alias, at, address, address, "s", "", "b@spf-ok.example", True, False))
    if flag is None:
        return False
    write = insight.leak_write(flag.record, flag.leak, flag.notify)
    if write is not None:
        store.update(alias, write)
    return flag.notify


def test_a_full_domain_map_and_leak_list_do_not_lift_the_per_alias_notice_limit() -> None:
    """Past MAX_DOMAINS a new domain is dropped from ``domains`` (so the alias never looks shared), and
    past MAX_LEAKS no evidence is recorded: the per-day limit must not be counted from that list."""
    store = established()
    related = [f"github{w}.{tld}" for w in ("mail", "-mail", "news", "-news", "app", "-app") for tld in
               ("com", "de", "net", "org", "fr", "nl", "it", "es", "io", "ch", "at", "be", "dk", "se", "pl", "cz",
                "no")]  # fmt: skip
    for n, domain in enumerate(related[: insight.MAX_DOMAINS - 1]):
        assert _flag_and_record(store, ALIAS, f"a@{domain}", NOW - 3 * DAY + n) is False  # one organisation
    record = store.lookup(ALIAS)
    assert record is not None and len(record["domains"]) == insight.MAX_DOMAINS
    day1 = [_flag_and_record(store, ALIAS, f"a@first{n}.example", NOW + n) for n in range(insight.MAX_LEAKS + 2)]
    day2 = [_flag_and_record(store, ALIAS, f"a@second{n}.example", NOW + DAY + n) for n in range(6)]
    assert (sum(day1), sum(day2)) == (insight.NOTICES_PER_DAY, insight.NOTICES_PER_DAY)


def test_one_sender_writing_to_many_aliases_costs_at_most_the_daily_limit_across_aliases() -> None:
    """A list of aliases sold at once: one spammer domain to 40 established aliases is one problem for
    the owner, not 40 mails (each is still flagged, logged and recorded)."""
    store = MemoryInsight()
    aliases = [f"a{n}@example.org" for n in range(40)]
    for alias in aliases:
        for n in range(5):
            insight.observe(store, Sighting(alias, NOW - (10 - n) * DAY, "n@github.com", "", "", "", "", True, False))
    sent = [_flag_and_record(store, alias, "deals@spammer.example", NOW + n) for n, alias in enumerate(aliases)]
    assert sum(sent) == insight.NOTICES_PER_DAY_ALL and insight.NOTICES_PER_DAY_ALL <= 10
    flagged = [store.lookup(alias) for alias in aliases]
    assert all(r is not None and "spammer.example" in r["leaks"] for r in flagged)  # nothing silent
    tomorrow = [_flag_and_record(store, alias, "deals@other.example", NOW + DAY + n) for n, alias in enumerate(aliases)]
    assert sum(tomorrow) == insight.NOTICES_PER_DAY_ALL  # a new day, a new allowance


def test_a_forged_from_cannot_make_a_domain_known_before_its_real_mail() -> None:
    """A From the sender wrote, without Mailgun's SPF pass, names nobody: it must not make its domain a
    known sender, or the leaker's first forged message hides the flag of its real ones."""
    store = established()
    forged = Sighting(ALIAS, NOW, "a@spammer.example", "", "", "", "x@elsewhere.example", False, False)
    assert insight.observe(store, forged) is None
    record = store.lookup(ALIAS)
    assert record is not None and list(record["domains"]) == ["github.com"] and record["messages"] == 6
    real = Sighting(ALIAS, NOW + 60, "a@spammer.example", "", "", "", "b@spammer.example", True, False)
    flag = insight.observe(store, real)
    assert flag is not None and flag.leak.domain == "spammer.example"


def test_forged_froms_of_unrelated_organisations_cannot_make_the_alias_look_shared() -> None:
    store = established()
    for n, domain in enumerate(["bank.example", "shop.example", "news.example", "club.example", "more.example"]):
        insight.observe(store, Sighting(ALIAS, NOW + n, f"a@{domain}", "", "", "", "x@forger.example", False, False))
    real = Sighting(ALIAS, NOW + 60, "a@spammer.example", "", "", "", "b@spammer.example", True, False)
    flag = insight.observe(store, real)
    assert flag is not None and flag.leak.domain == "spammer.example" and flag.leak.known == ("github.com",)
