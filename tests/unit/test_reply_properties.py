"""Properties of reverse addresses and the reply rewrite over generated input (hypothesis).

Classes of hostile input, one property each: any alias/correspondent pair gives a valid,
verifiable address of at most 64 octets; any string is either not a reverse address or
parses without raising; any header block either is refused with Unrewritable or comes out
with the body untouched and none of the owner's identifying fields.
"""

from __future__ import annotations

import email.utils

from hypothesis import given, settings
from hypothesis import strategies as st

from tagrelay.core import reverse
from tagrelay.core.errors import Unrewritable
from tagrelay.core.headers import body_offset, parse_fields
from tagrelay.core.reply import DROPPED, DROPPED_PREFIXES, KEPT, mailgun_verdicts, owner_problem, reply_rewrite
from tagrelay.core.routes import is_valid_address

ATEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-_+!#$%&'*/=?^`{|}~", min_size=1, max_size=64)
DOMAINS = st.sampled_from(("example.org", "example.net", "a.b.c.d.example.com", "x" * 60 + ".example"))
KEY = "q" * 64


@settings(max_examples=300, deadline=None)
@given(ATEXT, DOMAINS, ATEXT, DOMAINS)
def test_any_pair_gives_a_short_valid_verifiable_address(
    alias_local: str, alias_domain: str, local: str, domain: str
) -> None:
    alias, correspondent = f"{alias_local}@{alias_domain}", f"{local}@{domain}"
    address = reverse.make(alias, correspondent, KEY)
    assert len(address.rpartition("@")[0].encode()) <= 64
    parsed = reverse.parse(address.upper())
    assert parsed is not None
    assert reverse.verify(parsed, [KEY]) and reverse.matches(parsed, alias, correspondent)
    assert not reverse.verify(parsed, ["p" * 64])
    if all(part and not part.startswith(".") and not part.endswith(".") and ".." not in part for part in [alias_local]):
        assert is_valid_address(address) or not is_valid_address(alias)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120) | st.builds(lambda s: "r--" + s, st.text(max_size=80)))
def test_any_string_parses_or_is_not_a_reverse_address(text: str) -> None:
    parsed = reverse.parse(text)
    if parsed is not None:
        assert len(parsed.contact_id) == 16 and len(parsed.mac) == 16
        assert not reverse.verify(parsed, [KEY]) or reverse.make(parsed.alias, "x@y.example", KEY)


HEADER_LINES = (
    b"From: Owner <owner@gmail.com>",
    b"To: r--github.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org",
    b"Cc: owner@gmail.com, bob@corp.example",
    b"Reply-To: owner@googlemail.com",
    b"X-Mailgun-Spf: Pass",
    b"X-Gm-Message-State: abc",
    b"Received: by mail.gmail.com",
    b"DKIM-Signature: v=1; d=gmail.com",
    b"ARC-Seal: i=1",
    b"Subject: Re: hi",
    b"In-Reply-To: <a@b>",
    b" folded continuation",
    b"From bob Mon Jan  1 00:00:00 2024",
    b"no colon",
    b"\xff\xfe: \xff",
    b"",
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(HEADER_LINES) | st.binary(max_size=12), st.sampled_from((b"\r\n", b"\n", b"")))
        )
    )
    return b"".join(line + end for line, end in lines) + draw(st.binary(max_size=40))


@settings(max_examples=500, deadline=None)
@given(messages())
def test_reply_rewrite_keeps_the_body_and_drops_identifying_fields(raw: bytes) -> None:
    try:
        out = reply_rewrite(raw, "github@example.org", "Ann", "alice@bank.example", ["owner+github@gmail.com"])
    except Unrewritable:
        return
    assert out[body_offset(out) :] == raw[body_offset(raw) :]
    fields = parse_fields(out[: body_offset(out)])
    names = [f.name for f in fields]
    ours = {"from", "to", "x-tagrelay-loop"}  # written by the rewrite, once each
    assert not [n for n in names if n not in ours and (n in DROPPED or n.startswith(DROPPED_PREFIXES))]
    assert set(names) <= KEPT | ours | {"cc", "reply-to"}
    assert [names.count(n) for n in sorted(ours)] == [1, 1, 1]
    for f in fields:
        if f.name in ("cc", "reply-to"):
            assert "owner@" not in f.unfolded.lower()
    assert email.utils.parseaddr(next(f for f in fields if f.name == "from").unfolded)[1] == "github@example.org"


@settings(max_examples=300, deadline=None)
@given(messages(), st.text(max_size=40))
def test_owner_check_never_raises_and_verdicts_come_only_from_the_top(raw: bytes, sender: str) -> None:
    owner_problem(raw, sender, ["owner+github@gmail.com"])
    fields = parse_fields(raw[: body_offset(raw)])
    verdicts = mailgun_verdicts(fields)
    start = 0
    while start < len(fields) and fields[start].name in ("mime-version", "content-type", "content-transfer-encoding"):
        start += 1
    top = start
    while top < len(fields) and fields[top].name.startswith("x-mailgun-"):
        top += 1
    if verdicts.spf:
        assert [f.name for f in fields[start:top]].count("x-mailgun-spf") == 1
    if verdicts.dkim:
        assert [f.name for f in fields[start:top]].count("x-mailgun-dkim-check-result") == 1
