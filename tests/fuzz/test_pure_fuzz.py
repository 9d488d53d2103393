"""The pure pieces under fuzz: rewrite, Routes.resolve, envelope.from_cloud_event_data."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tagrelay.core import envelope, routes
from tagrelay.core.errors import BadRequest, RoutesError, SchemaError, Undeliverable, Unrewritable
from tagrelay.core.headers import decode_words, split_message
from tagrelay.core.inbound import Form, InboundMessage, parse_form, rebuild_mime, to_inbound
from tagrelay.core.notice import build_notice
from tagrelay.core.rewrite import has_loop_marker, rewrite
from tagrelay.core.routes import Forward, Reject, is_valid_address
from tests.fuzz.strategies import (
    HOSTILE_NAMES,
    ODD_FILENAMES,
    forward_templates,
    hostile_header_values,
    hostile_messages,
    json_values,
    verdict_posts,
)
from tests.fuzz.support import EML, ROUTES, TIMESTAMP, Part, corpus_names, encode_multipart, multipart_type
from tests.hostile import oracle
from tests.unit.support import body_bytes

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------------------------
# rewrite

LINES = (
    b"From: Alice <alice@bank.example>",
    b"From: =?utf-8?q?M=C3=BCller=2C_J=C3=BCrgen?= <j@x.example>",
    b'From: "x" <',
    b"From:",
    b"Reply-To: r@x.example",
    b"Sender: s@x.example",
    b"DKIM-Signature: v=1; a=rsa-sha256",
    b"Subject: hi",
    b"Subject: =?utf-8?b?!!!?=",
    b"X-Tagrelay-Loop: example.org",
    b"From bob Mon Jan  1 00:00:00 2024",
    b"no colon at all",
    b" folded continuation",
    b"\t",
    b" ",
    b"",
    b"Bad Name: value",
    b":empty name",
    "Subject: caf\u00e9".encode(),
    b"\xff\xfe: \xff",
)
ENDINGS = (b"\r\n", b"\n", b"\r", b"")


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """Header-like lines with every kind of line ending, then maybe a body; or raw bytes; or a corpus message cut up."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        lines = draw(st.lists(st.tuples(st.sampled_from(LINES) | st.binary(max_size=12), st.sampled_from(ENDINGS))))
        return b"".join(line + end for line, end in lines) + draw(st.binary(max_size=40))
    if choice == 1:
        return draw(st.binary(max_size=300))
    raw = (EML / draw(st.sampled_from(corpus_names()))).read_bytes()[:4000]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 20))
        raw = raw[:at] + draw(st.sampled_from((b"", b"\r", b"\n", b"\r\n", b" \r\n", b"\x00", b":"))) + raw[at + cut :]
    return raw


ALIASES = st.sampled_from(
    ("shop@example.org", "Team@Example.ORG", "t\u00e9@example.org", "a@b\u00fccher.example")
) | st.text(max_size=30)
SENDERS = st.sampled_from(("", "bounce@lists.example")) | st.text(max_size=30)


@settings(FUZZ, max_examples=1000)
@given(messages(), ALIASES, SENDERS)
def test_rewrite_leaves_the_body_alone(raw: bytes, alias: str, sender: str) -> None:
    """rewrite raises nothing but Unrewritable, and the body (everything after the first empty line,
    found by tests/unit/support.body_bytes, which shares no code with tagrelay.core.headers) ends the
    output byte for byte, right after an empty line.

    Only the header block is rebuilt: a headers-only message may or may not get the empty line after
    its headers (both are valid RFC 5322), but never a body.
    """
    try:
        out = rewrite(raw, alias, sender).mime
    except Unrewritable:
        event("Unrewritable")
        return
    body = body_bytes(raw)
    if body is None:
        assert body_bytes(out) in (None, b"")
        event("headers only")
        return
    assert out.endswith(body)
    assert out[: len(out) - len(body)].endswith(b"\n")
    event("with body")


@settings(FUZZ, max_examples=600)
@given(messages(), ALIASES, SENDERS)
def test_rewrite_output_parses_back_to_the_same_body(raw: bytes, alias: str, sender: str) -> None:
    """Stronger: the rewritten message's own empty line is where the original's was, so a reader of
    the output finds exactly the original body, and it carries the loop marker (so the next hop sees it)."""
    try:
        out = rewrite(raw, alias, sender).mime
    except Unrewritable:
        return
    body = body_bytes(raw)
    if body is None:
        assert body_bytes(out) in (None, b"")
    else:
        assert body_bytes(out) == body
    domain = alias.rpartition("@")[2].strip()
    if domain:
        assert has_loop_marker(out, domain)


# ---------------------------------------------------------------------------------------------
# Routes.resolve

WILDCARDS = routes.load(
    """\
fallback = "owner@gmail.com"
blocked = ["leaked@example.net", "x+y@example.net"]

[[route]]
match = "{first}.{last}@example.net"
forward = ["owner+{first}.{last}@gmail.com", "archive@gmail.com"]

[[route]]
match = "shop-*@example.net"
forward = "owner+{detail}@gmail.com"

[[route]]
match = "x+{tag}@example.net"
forward = "x+{tag}@gmail.com"
fallback = "x@gmail.com"

[[route]]
match = "{tag}@b\u00fccher.example"
forward = "owner+{tag}@gmail.com"
"""
)
ADDRESSES = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(max_size=24),
    st.sampled_from(("example.org", "EXAMPLE.org", "example.net", "b\u00fccher.example", "xn--", "", ".", "a" * 70))
    | st.text(max_size=20),
)


@settings(FUZZ, max_examples=1500)
@given(st.sampled_from((ROUTES, WILDCARDS)), st.text(max_size=64) | ADDRESSES)
def test_resolve_never_raises_and_never_forwards_into_a_routed_domain(table: routes.Routes, recipient: str) -> None:
    resolved = table.resolve(recipient)
    assert isinstance(resolved, Forward | Reject)
    event(type(resolved).__name__)
    if isinstance(resolved, Forward):
        assert resolved.targets
        for target in resolved.targets:
            assert is_valid_address(target), target
            assert target.rpartition("@")[2].lower() not in table.domains, f"{recipient!r} forwards to {target!r}"
        address = routes.normalize(recipient)
        assert address is not None and address not in table.blocked


# ---------------------------------------------------------------------------------------------
# envelope.from_cloud_event_data

ATTRIBUTE_VALUES = st.sampled_from(("tagrelay.v1", "shop@example.org", "")) | st.text(max_size=10) | json_values()
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "data": json_values() | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
        "attributes": json_values()
        | st.dictionaries(
            st.sampled_from(("schema", "recipient", "sender", "claim")) | st.text(max_size=5), ATTRIBUTE_VALUES
        ),
        "messageId": json_values(),
        "message_id": json_values(),
        "publishTime": json_values()
        | st.sampled_from(("2024-01-01T00:00:00Z", "2024-01-01T00:00:00", "Z", "2024-13-01")),
    },
)
# Close to what Pub/Sub really sends: a valid envelope with one or two fields off.
NEAR_VALID = st.fixed_dictionaries(
    {
        "data": st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()) | json_values(),
        "attributes": st.fixed_dictionaries(
            {
                "schema": st.sampled_from(("tagrelay.v1", "tagrelay.v1", "tagrelay.v2")),
                "recipient": st.text(min_size=1, max_size=20),
            },
            optional={"sender": ATTRIBUTE_VALUES, "claim": ATTRIBUTE_VALUES, "replay": ATTRIBUTE_VALUES},
        ),
    },
    optional={
        "messageId": json_values(),
        "publishTime": st.sampled_from(("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+02:00", "2024-02-30T00:00:00Z"))
        | st.text(max_size=30),
    },
)


@settings(FUZZ, max_examples=600)
@given(
    json_values()
    | st.fixed_dictionaries(
        {"message": NEAR_VALID | MESSAGES | json_values()}, optional={"subscription": json_values()}
    )
)
def test_cloud_event_data_raises_only_schema_error(data: Any) -> None:
    try:
        delivery = envelope.from_cloud_event_data(data)
    except SchemaError:
        event("SchemaError")
        return
    event("decoded")
    assert delivery.envelope.recipient
    assert delivery.publish_time is None or delivery.publish_time.tzinfo is not None


# Ingest refuses control characters in the envelope before encoding (to_inbound), so they are not generated here.
ENVELOPE_TEXT = st.characters(blacklist_categories=["Cc"])


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=200), st.text(ENVELOPE_TEXT, min_size=1, max_size=30), st.text(ENVELOPE_TEXT, max_size=30))
def test_cloud_event_data_round_trips_what_ingest_encodes(mime: bytes, recipient: str, sender: str) -> None:
    message = InboundMessage(recipient, sender, mime, token="t", timestamp=0, form_kind="mime")
    data, attributes = envelope.encode(message, datetime(2024, 1, 1, tzinfo=UTC))
    payload = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "1"}}
    delivery = envelope.from_cloud_event_data(payload)
    assert delivery.envelope.mime == mime
    assert delivery.envelope.recipient == attributes["recipient"]


# ---------------------------------------------------------------------------------------------
# Hostile header values (issue 15): each class under its own generator

DROPPED_ALWAYS = {"bcc", "disposition-notification-to", "return-receipt-to", "x-confirm-reading-to"}
OURS = {"x-tagrelay-loop", "x-tagrelay-dropped", "x-tagrelay-spam"}


@settings(FUZZ, max_examples=400)
@given(hostile_messages(), st.sampled_from(("", "flag=yes score=9")))
def test_rewrite_of_hostile_headers_goes_out_and_parses_to_what_was_written(raw: bytes, spam_tag: str) -> None:
    """Classes 1, 3, 4, 5: no exception at all; every line <= 998 octets; no control character left in
    the block; both stdlib policies see exactly the fields written (one From, nothing smuggled); no
    steering, leaking or read-receipt field survives; the body is untouched."""
    result = rewrite(raw, "shop@example.org", "bounce@x.example", spam_tag=spam_tag)
    out = result.mime
    assert oracle.long_lines(out) == []
    assert oracle.controls_in_block(out) == []
    written = oracle.written_names(oracle.header_block_of(out))
    for policy_name in oracle.POLICIES:
        assert oracle.field_names(out, policy_name) == written, policy_name
    assert written.count("from") == 1 and written[0] == "from"
    assert not DROPPED_ALWAYS & set(written)
    assert not [n for n in written if n.startswith("x-mailgun-")]
    assert not [n for n in written if n.startswith("x-tagrelay-") and n not in OURS]
    assert out.endswith(split_message(raw)[1])
    event(f"dropped {len(result.dropped)}")


@settings(FUZZ, max_examples=300)
@given(hostile_header_values() | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_decode_words_never_raises(value: bytes) -> None:
    """Class 1: any header value decodes to text (or is kept as it is)."""
    assert isinstance(decode_words(value.decode("utf-8", "replace")), str)


@settings(FUZZ, max_examples=300)
@given(hostile_messages() | messages(), st.sampled_from(("shop@example.org", "a@b\u00fccher.example", "x@")))
def test_owner_notice_builds_for_anything_the_relay_can_dead_letter(raw: bytes, alias: str) -> None:
    """Class 8: the notice builds, parses without header defects, and carries the original."""
    out = build_notice(raw, alias, "cannot rewrite: x\r\ny", "owner@gmail.com")
    assert oracle.long_lines(out) == [] and oracle.controls_in_block(out) == []
    message = oracle.parsed(out, "default")
    assert message["Subject"].startswith("Undeliverable: ")
    attachments = list(message.iter_attachments())  # type: ignore[attr-defined]
    assert [a.get_filename() for a in attachments] == ["original.eml"]


@settings(FUZZ, max_examples=300)
@given(
    st.lists(st.tuples(st.sampled_from(HOSTILE_NAMES) | st.binary(max_size=12), hostile_header_values()), max_size=5)
)
def test_rebuild_of_hostile_parsed_headers_raises_only_undeliverable(pairs: list[tuple[bytes, bytes]]) -> None:
    """Classes 1, 4, 5 on the parsed-form path: rebuild refuses (406) or writes a block parsing to its own fields."""
    headers = [[n.decode("utf-8", "replace"), v.decode("utf-8", "replace")] for n, v in pairs]
    form = Form(fields={"body-plain": b"x", "message-headers": json.dumps(headers).encode()})
    try:
        out = rebuild_mime(form)
    except Undeliverable:
        event("Undeliverable")
        return
    written = oracle.written_names(oracle.header_block_of(out))
    assert oracle.controls_in_block(out) == []
    for policy_name in oracle.POLICIES:
        assert oracle.field_names(out, policy_name) == written, policy_name


@settings(FUZZ, max_examples=300)
@given(verdict_posts())
def test_spam_verdict_comes_only_from_what_mailgun_prepended(
    case: tuple[bytes, tuple[str, str], tuple[str, str]],
) -> None:
    """Class 3: a sender's X-Mailgun-Sflag/Sscore further down never becomes the verdict."""
    mime, ours, _ = case
    form = Form(fields={"recipient": b"shop@example.org", "sender": b"a@b.example", "token": b"t", "body-mime": mime})
    message = to_inbound(form, TIMESTAMP)
    assert (message.spam_flag, message.spam_score) == ours


@settings(FUZZ, max_examples=400)
@given(forward_templates())
def test_routes_that_would_let_a_sender_choose_the_destination_do_not_load(template: str) -> None:
    """Class 7: a loaded route's targets keep the literal domain and a literal mailbox, whatever the recipient."""
    try:
        table = routes.load(f'[[route]]\nmatch = "{{a}}.{{b}}.{{tag}}@example.org"\nforward = "{template}"\n')
    except RoutesError:
        event("refused")
        return
    event("loaded")
    local, _, domain = template.rpartition("@")
    assert "{" not in domain
    mailbox = re.sub(r"\{[a-z]+\}", "", local.partition("+")[0])
    assert any(c.isalnum() for c in mailbox)
    for recipient in ("p.q.r+evil@example.org", "victim.gmail.com.x@example.org"):
        resolved = table.resolve(recipient)
        if isinstance(resolved, Forward) and not resolved.fallback_used:
            assert all(t.endswith("@" + domain) for t in resolved.targets)


IDN_DOMAINS = ("b\u00fccher.example", "xn--bcher-kva.example", "B\u00dcCHER.example", "\u4f8b\u3048.jp", "example.org")


@settings(FUZZ, max_examples=200)
@given(st.sampled_from(IDN_DOMAINS) | st.text(min_size=1, max_size=20), st.booleans())
def test_loop_marker_is_seen_in_either_form_of_the_domain(domain: str, idna_alias: bool) -> None:
    """Class 6: whatever form the alias arrives in, the next hop's check (in either form) sees the marker."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return
    alias = f"shop@{ascii_domain if idna_alias else domain}"
    if routes.normalize(alias) is None or alias.strip() != alias:  # the relay only sees aliases a route matched
        return
    out = rewrite(b"From: a@b.example\r\nSubject: s\r\n\r\nx", alias).mime
    assert has_loop_marker(out, domain)
    assert has_loop_marker(out, ascii_domain)


@settings(FUZZ, max_examples=200)
@given(st.lists(st.sampled_from(ODD_FILENAMES) | st.binary(max_size=12), min_size=1, max_size=4), st.booleans())
def test_every_posted_attachment_reaches_the_rebuilt_message(names: list[bytes], escaped: bool) -> None:
    """Class 9: whatever the file names, the rebuilt message has as many attachments as were posted, or is refused."""
    parts = [Part(b"recipient", b"shop@example.org"), Part(b"body-plain", b"hi")]
    for number, name in enumerate(names, 1):
        raw_param = b'; filename="' + name + b'"'
        part = (
            Part(b"attachment-%d" % number, b"data%d" % number, filename=name, content_type=b"text/plain")
            if escaped
            else Part(b"attachment-%d" % number, b"data%d" % number, content_type=b"text/plain", params=raw_param)
        )
        parts.append(part)
    try:
        form = parse_form(multipart_type(), encode_multipart(parts))
    except BadRequest:  # a part header that is not UTF-8: the form parser's call (the ingest perimeter)
        event("unreadable form")
        return
    try:
        out = rebuild_mime(form)
    except Undeliverable as exc:
        event(f"refused: {exc.reason[:30]}")
        return
    message = oracle.parsed(out, "default")
    payloads = [p.get_payload(decode=True) for p in message.walk() if p.get_content_disposition() == "attachment"]
    assert all(isinstance(data, bytes) for data in payloads)
    assert sorted(map(bytes, payloads)) == sorted(b"data%d" % n for n in range(1, len(names) + 1))
