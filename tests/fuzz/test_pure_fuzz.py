"""The pure pieces under fuzz: rewrite, Routes.resolve, envelope.from_cloud_event_data."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tagrelay.core import envelope, routes
from tagrelay.core.errors import SchemaError, Unrewritable
from tagrelay.core.inbound import InboundMessage
from tagrelay.core.rewrite import has_loop_marker, rewrite
from tagrelay.core.routes import Forward, Reject, is_valid_address
from tests.fuzz.strategies import json_values
from tests.fuzz.support import EML, ROUTES, corpus_names
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
forward = ["{first}+{last}@gmail.com", "archive@gmail.com"]

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


# Ingest refuses CR, LF and NUL in the envelope before encoding (to_inbound), so they are not generated here.
ENVELOPE_TEXT = st.characters(blacklist_characters="\r\n\x00")


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=200), st.text(ENVELOPE_TEXT, min_size=1, max_size=30), st.text(ENVELOPE_TEXT, max_size=30))
def test_cloud_event_data_round_trips_what_ingest_encodes(mime: bytes, recipient: str, sender: str) -> None:
    message = InboundMessage(recipient, sender, mime, token="t", timestamp=0, form_kind="mime")
    data, attributes = envelope.encode(message, datetime(2024, 1, 1, tzinfo=UTC))
    payload = {"message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "1"}}
    delivery = envelope.from_cloud_event_data(payload)
    assert delivery.envelope.mime == mime
    assert delivery.envelope.recipient == attributes["recipient"]
