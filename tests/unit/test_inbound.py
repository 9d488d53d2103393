"""tagrelay.core.inbound: the webhook signature, form decoding as bytes, the envelope checks."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagrelay.core.errors import BadRequest, BadSignature, Undeliverable
from tagrelay.core.inbound import Form, check_signed, parse_form, sign, to_inbound, verify_signature
from tests.unit.support import SIGNING_KEY, corpus, mailgun_signature

VECTOR_TIMESTAMP = "1700000000"
VECTOR_TOKEN = "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf"
VECTOR_SIGNATURE = "16e8315674ddc3aca0f791a93250320e9cc493a3a654aea8d82327b6dd13ceaf"
KEY = SIGNING_KEY.encode()
MAX_AGE = 9 * 3600.0


def signed_form(timestamp: str = VECTOR_TIMESTAMP, token: str = VECTOR_TOKEN, **extra: bytes) -> Form:
    fields = {
        "timestamp": timestamp.encode(),
        "token": token.encode(),
        "signature": mailgun_signature(SIGNING_KEY, timestamp, token).encode(),
        **extra,
    }
    return Form(fields=fields)


# -- the signature ---------------------------------------------------------------------------


def test_sign_reproduces_the_design_vector() -> None:
    assert sign(KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN) == VECTOR_SIGNATURE


def test_verify_signature_accepts_the_design_vector() -> None:
    assert verify_signature(KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN, VECTOR_SIGNATURE)


@pytest.mark.parametrize(
    ("key", "timestamp", "token", "signature"),
    [
        (b"another-key", VECTOR_TIMESTAMP, VECTOR_TOKEN, VECTOR_SIGNATURE),
        (KEY, "1700000001", VECTOR_TOKEN, VECTOR_SIGNATURE),
        (KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN[:-1] + "0", VECTOR_SIGNATURE),
        (KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN, VECTOR_SIGNATURE[:-1] + "0"),
        (KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN, VECTOR_SIGNATURE.upper()),
        (KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN, ""),
        (KEY, VECTOR_TIMESTAMP, VECTOR_TOKEN, "\u00e9" * 64),
    ],
    ids=["other-key", "other-timestamp", "other-token", "last-digit", "upper-case", "empty", "non-ascii"],
)
def test_verify_signature_rejects_anything_else(key: bytes, timestamp: str, token: str, signature: str) -> None:
    assert not verify_signature(key, timestamp, token, signature)


def test_check_signed_returns_the_timestamp() -> None:
    assert check_signed(signed_form(), KEY, now=1700000000 + 10, max_age_seconds=MAX_AGE) == 1700000000


def test_check_signed_accepts_a_mailgun_retry_within_the_horizon() -> None:
    now = 1700000000 + MAX_AGE - 1
    assert check_signed(signed_form(), KEY, now=now, max_age_seconds=MAX_AGE) == 1700000000


def test_check_signed_accepts_a_small_clock_skew() -> None:
    assert check_signed(signed_form(), KEY, now=1700000000 - 299, max_age_seconds=MAX_AGE) == 1700000000


def test_check_signed_rejects_a_wrong_signature() -> None:
    form = Form(fields={**signed_form().fields, "signature": b"0" * 64})
    with pytest.raises(BadSignature, match="does not match"):
        check_signed(form, KEY, now=1700000010, max_age_seconds=MAX_AGE)


def test_check_signed_rejects_the_right_signature_under_another_key() -> None:
    with pytest.raises(BadSignature):
        check_signed(signed_form(), b"rotated-key", now=1700000010, max_age_seconds=MAX_AGE)


@pytest.mark.parametrize("missing", ["timestamp", "token", "signature"])
def test_check_signed_names_a_missing_field(missing: str) -> None:
    fields = {k: v for k, v in signed_form().fields.items() if k != missing}
    with pytest.raises(BadSignature, match=missing):
        check_signed(Form(fields=fields), KEY, now=1700000010, max_age_seconds=MAX_AGE)


def test_check_signed_treats_an_empty_field_as_missing() -> None:
    form = Form(fields={**signed_form().fields, "token": b""})
    with pytest.raises(BadSignature, match="token"):
        check_signed(form, KEY, now=1700000010, max_age_seconds=MAX_AGE)


def test_check_signed_rejects_a_stale_timestamp() -> None:
    with pytest.raises(BadSignature, match="older"):
        check_signed(signed_form(), KEY, now=1700000000 + MAX_AGE + 1, max_age_seconds=MAX_AGE)


def test_check_signed_honours_a_shorter_max_age() -> None:
    with pytest.raises(BadSignature, match="older"):
        check_signed(signed_form(), KEY, now=1700000000 + 61, max_age_seconds=60)


def test_check_signed_rejects_a_timestamp_more_than_five_minutes_ahead() -> None:
    with pytest.raises(BadSignature, match="future"):
        check_signed(signed_form(), KEY, now=1700000000 - 301, max_age_seconds=MAX_AGE)


@pytest.mark.parametrize("timestamp", ["1700000000.5", "17e8", "0x6553f100", "soon", "1700000000 1"])
def test_check_signed_rejects_a_non_integer_timestamp(timestamp: str) -> None:
    # Correctly signed, so the only thing wrong is the timestamp itself.
    with pytest.raises(BadSignature, match="integer"):
        check_signed(signed_form(timestamp=timestamp), KEY, now=1700000010, max_age_seconds=MAX_AGE)


# -- parse_form ------------------------------------------------------------------------------


def multipart_body(boundary: bytes, fields: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for name, value in fields:
        out += b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
        out += value + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def urlencoded_body(fields: list[tuple[str, bytes]]) -> bytes:
    return b"&".join(
        name.encode() + b"=" + urllib.parse.quote_from_bytes(value, safe="").encode() for name, value in fields
    )


NON_UTF8 = ["11-iso-8859-1-8bit.eml", "12-shift-jis.eml"]


@pytest.mark.parametrize("name", NON_UTF8)
def test_corpus_messages_are_not_utf8(name: str) -> None:
    # The premise of the two tests below: these octets would be damaged by a UTF-8 text decode.
    with pytest.raises(UnicodeDecodeError):
        corpus(name).decode("utf-8")


@pytest.mark.parametrize("name", NON_UTF8)
def test_multipart_body_mime_comes_back_byte_identical(name: str) -> None:
    raw = corpus(name)
    body = multipart_body(b"b0undary-x1", [("recipient", b"friends.alice@example.org"), ("body-mime", raw)])
    form = parse_form("multipart/form-data; boundary=b0undary-x1", body)
    assert form.fields["body-mime"] == raw


@pytest.mark.parametrize("name", NON_UTF8)
def test_urlencoded_body_mime_comes_back_byte_identical(name: str) -> None:
    raw = corpus(name)
    body = urlencoded_body([("recipient", b"friends.alice@example.org"), ("body-mime", raw)])
    form = parse_form("application/x-www-form-urlencoded", body)
    assert form.fields["body-mime"] == raw


def test_urlencoded_ascii_body_mime_comes_back_byte_identical() -> None:
    raw = corpus("05-alternative-text-html.eml")
    body = urlencoded_body([("recipient", b"github@example.org"), ("body-mime", raw)])
    form = parse_form("application/x-www-form-urlencoded", body)
    assert form.fields["body-mime"] == raw
    assert form.text("recipient") == "github@example.org"


def test_urlencoded_utf8_text_field_comes_back_as_its_octets() -> None:
    form = parse_form("application/x-www-form-urlencoded", b"subject=Caf%C3%A9+%E2%98%95")
    assert form.fields["subject"] == "Café ☕".encode()


def test_urlencoded_plus_is_a_space_and_blank_values_are_kept() -> None:
    form = parse_form("application/x-www-form-urlencoded", b"subject=hello+world&stripped-text=&token=abc")
    assert form.fields == {"subject": b"hello world", "stripped-text": b"", "token": b"abc"}


def test_content_type_parameters_are_allowed() -> None:
    form = parse_form("application/x-www-form-urlencoded; charset=utf-8", b"a=1")
    assert form.fields == {"a": b"1"}


def test_quoted_boundary_parameter() -> None:
    body = multipart_body(b"with space", [("a", b"1")])
    assert parse_form('multipart/form-data; boundary="with space"', body).fields == {"a": b"1"}


def test_multipart_file_parts_keep_filename_content_type_and_bytes() -> None:
    data = b"\x89PNG\r\n\x1a\n\x00\xff"
    body = (
        b"--bnd\r\n"
        b'Content-Disposition: form-data; name="attachment-1"; filename="logo.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--bnd--\r\n"
    )
    upload = parse_form("multipart/form-data; boundary=bnd", body).files["attachment-1"]
    assert (upload.filename, upload.content_type, upload.data) == ("logo.png", "image/png", data)


def test_multipart_file_part_without_content_type_is_octet_stream() -> None:
    body = b'--bnd\r\nContent-Disposition: form-data; name="f"; filename="x.bin"\r\n\r\nxyz\r\n--bnd--\r\n'
    assert parse_form("multipart/form-data; boundary=bnd", body).files["f"].content_type == "application/octet-stream"


def test_repeated_multipart_fields_are_all_kept_in_order() -> None:
    body = multipart_body(b"bnd", [("to", b"a@x.example"), ("subject", b"s"), ("to", b"b@x.example"), ("to", b"c")])
    form = parse_form("multipart/form-data; boundary=bnd", body)
    assert form.all("to") == [b"a@x.example", b"b@x.example", b"c"]
    assert form.fields["to"] == b"a@x.example"
    assert form.all("subject") == [b"s"]
    assert form.all("absent") == []


def test_repeated_urlencoded_fields_are_all_kept_in_order() -> None:
    form = parse_form("application/x-www-form-urlencoded", b"Received=one&x=1&Received=two")
    assert form.all("Received") == [b"one", b"two"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "message/rfc822", "", "multipart/mixed; boundary=x", "garbage"],
)
def test_a_body_that_is_not_a_form_is_a_bad_request(content_type: str) -> None:
    with pytest.raises(BadRequest):
        parse_form(content_type, b'{"recipient": "shop@example.org"}')


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=utf-8"]
)
def test_multipart_without_a_boundary_is_a_bad_request(content_type: str) -> None:
    with pytest.raises(BadRequest, match="boundary"):
        parse_form(content_type, multipart_body(b"bnd", [("a", b"1")]))


@pytest.mark.parametrize(
    "body",
    [
        b"garbage garbage garbage",
        b"",
        b"--bnd\r\nnot a header\r\n\r\nvalue\r\n--bnd--\r\n",
        b'--bnd\r\nContent-Disposition: form-data; name="a"\r\n\r\nno closing delimiter',
        b'--bnd\r\nContent-Disposition: form-data; name="\xff\xfe"\r\n\r\nv\r\n--bnd--\r\n',
        b"--other\r\n" + b'Content-Disposition: form-data; name="a"\r\n\r\nv\r\n--other--\r\n',
    ],
    ids=["garbage", "empty", "no-disposition", "unterminated", "non-utf8-part-header", "other-boundary"],
)
def test_garbage_multipart_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_form("multipart/form-data; boundary=bnd", body)


def test_garbage_urlencoded_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_form("application/x-www-form-urlencoded", b"\x00\xff\xfe binary \x80")


def test_too_many_urlencoded_fields_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_form("application/x-www-form-urlencoded", b"&".join(b"k%d=v" % i for i in range(1001)))


def test_media_type_is_case_insensitive() -> None:
    body = multipart_body(b"bnd", [("a", b"1")])
    assert parse_form("Multipart/Form-Data; boundary=bnd", body).fields == {"a": b"1"}


# -- to_inbound ------------------------------------------------------------------------------


def mime_form(recipient: bytes, sender: bytes = b"alice@bank.example", **extra: bytes) -> Form:
    fields = {"recipient": recipient, "sender": sender, "body-mime": corpus("01-plain-ascii.eml"), **extra}
    return Form(fields={**signed_form().fields, **fields})


def test_to_inbound_keeps_the_envelope_apart_from_the_message() -> None:
    # Mailgun's verdict is read from the fields it prepended to the message (issue 15), not from form fields.
    verdict = b"X-Mailgun-Sflag: No\r\nX-Mailgun-Sscore: 0.5\r\n"
    form = mime_form(
        b"bank@example.org",
        **{"body-mime": verdict + corpus("01-plain-ascii.eml"), "X-Mailgun-Sflag": b"Yes", "X-Mailgun-Sscore": b"9"},
    )
    message = to_inbound(form, 1700000000)
    assert message.recipient == "bank@example.org"
    assert message.sender == "alice@bank.example"
    assert message.mime == verdict + corpus("01-plain-ascii.eml")
    assert message.token == VECTOR_TOKEN
    assert message.timestamp == 1700000000
    assert message.form_kind == "mime"
    assert (message.spam_flag, message.spam_score) == ("No", "0.5")


@pytest.mark.parametrize(
    "recipient",
    [
        b"bank@example.org\r\nBcc: victim@example.com",
        b"bank@example.org\nX-Injected: 1",
        b"bank\r@example.org",
        b"bank@example.org\x00",
        b"ba\x00nk@example.org",
    ],
    ids=["crlf-injection", "lf-injection", "cr", "trailing-nul", "nul"],
)
def test_control_characters_in_the_recipient_are_undeliverable(recipient: bytes) -> None:
    with pytest.raises(Undeliverable, match="control"):
        to_inbound(mime_form(recipient), 1700000000)


def test_control_characters_in_the_sender_are_undeliverable() -> None:
    with pytest.raises(Undeliverable, match="sender"):
        to_inbound(mime_form(b"bank@example.org", sender=b"a@b.example\r\nBcc: x@y.example"), 1700000000)


@pytest.mark.parametrize(
    "recipient",
    [b"bank@example.org, shop@example.org", b"bank@example.org,shop@example.org", b"", b"not-an-address"],
    ids=["comma-space", "comma", "empty", "no-at"],
)
def test_anything_but_one_recipient_is_undeliverable(recipient: bytes) -> None:
    with pytest.raises(Undeliverable, match="one address"):
        to_inbound(mime_form(recipient), 1700000000)


def test_body_mime_may_arrive_as_a_file_part() -> None:
    raw = corpus("12-shift-jis.eml")
    body = (
        b'--bnd\r\nContent-Disposition: form-data; name="recipient"\r\n\r\nfriends.alice@example.org\r\n'
        b'--bnd\r\nContent-Disposition: form-data; name="body-mime"; filename="message.mime"\r\n'
        b"Content-Type: message/rfc822\r\n\r\n" + raw + b"\r\n--bnd--\r\n"
    )
    form = parse_form("multipart/form-data; boundary=bnd", body)
    assert to_inbound(form, 1700000000).mime == raw


# -- the perimeter: what parse_form does before and after authenticate --------------------------


@pytest.mark.parametrize("shift", [-3, -2, -1, 0, 1, 2])
def test_windowed_unquoting_matches_the_standard_library_at_every_window_edge(shift: int) -> None:
    from tagrelay.core.inbound import UNQUOTE_WINDOW

    value = b"A" * (UNQUOTE_WINDOW + shift) + b"%41%e9%2B+%" * 3 + b"B" * UNQUOTE_WINDOW + b"%4"
    form = parse_form("application/x-www-form-urlencoded", b"body-mime=" + value)
    assert form.fields["body-mime"] == urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))


@pytest.mark.parametrize("octet", [b" ", b"\x00", b"\x7f", b"\xff", b"\n"])
def test_urlencoded_body_with_raw_octets_is_400(octet: bytes) -> None:
    with pytest.raises(BadRequest, match="outside printable ASCII"):
        parse_form("application/x-www-form-urlencoded", b"a=" + b"b" * (3 << 20) + octet)


def test_authenticate_sees_only_the_signature_fields_before_anything_is_decoded() -> None:
    seen: list[dict[str, str]] = []
    body = b"recipient=a%40example.org&body-mime=%41%42&timestamp=1&token=t%20t&signature=s&timestamp=2"
    form = parse_form("application/x-www-form-urlencoded", body, authenticate=lambda f: seen.append(dict(f)))
    assert seen == [{"timestamp": "1", "token": "t t", "signature": "s"}]  # the first value of each
    assert form.fields["body-mime"] == b"AB"


def test_authenticate_refusing_stops_the_parse() -> None:
    def refuse(fields: object) -> None:
        raise BadSignature("signature does not match")

    with pytest.raises(BadSignature):
        parse_form("application/x-www-form-urlencoded", b"recipient=a&body-mime=x&signature=s", authenticate=refuse)


def test_a_form_that_is_not_a_route_post_is_400_before_the_signature() -> None:
    def never(fields: object) -> None:
        raise AssertionError("not a route post: the signature is not even looked at")

    with pytest.raises(BadRequest, match="not a Mailgun route post"):
        parse_form("application/x-www-form-urlencoded", b"hello=world", authenticate=never)


def test_route_key_comparison() -> None:
    from tagrelay.core.inbound import check_route_key

    check_route_key("current-key", ["current-key", "previous-key"])
    check_route_key("previous-key", ["current-key", "previous-key"])
    for offered in (None, "", "current-ke", "current-keyy", "CURRENT-KEY", "\u00e9"):
        with pytest.raises(BadSignature, match="route key"):
            check_route_key(offered, ["current-key", "previous-key"])
    with pytest.raises(BadSignature):
        check_route_key("", ["", ""])  # an empty configured key never matches an empty k


_NAMES = st.sampled_from(["recipient", "sender", "body-mime", "timestamp", "token", "signature", "x", "b y", "é"])


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(st.tuples(_NAMES, st.binary(max_size=300)), max_size=12),
    window=st.sampled_from([1, 3, 4, 5, 64]),
)
def test_urlencoded_parse_agrees_with_the_standard_library(pairs: list[tuple[str, bytes]], window: int) -> None:
    """Any form, any window size: parse_form decodes what urllib encoded, and authenticate sees the first
    signature value of each name before parse_form returns."""
    import tagrelay.core.inbound as inbound

    body = "&".join(
        f"{urllib.parse.quote_plus(name)}={urllib.parse.quote_from_bytes(value).replace('%20', '+')}"
        for name, value in pairs
    ).encode("ascii")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inbound, "UNQUOTE_WINDOW", window)  # tiny windows put every escape on an edge
        seen: list[dict[str, str]] = []
        if any(n == "recipient" for n, _ in pairs) and any(n == "body-mime" for n, _ in pairs):
            form = parse_form("application/x-www-form-urlencoded", body, authenticate=lambda f: seen.append(dict(f)))
            expected_seen = {}
            for name, value in pairs:
                if name in ("timestamp", "token", "signature") and name not in expected_seen:
                    expected_seen[name] = value.decode("utf-8", "replace").strip()
            assert seen == [expected_seen]
        else:
            form = parse_form("application/x-www-form-urlencoded", body)
    first: dict[str, bytes] = {}
    for name, value in pairs:
        first.setdefault(name, value)
    assert form.fields == first
    for name in first:
        assert form.all(name) == [value for n, value in pairs if n == name]
