"""Class 5: every header line that leaves is at most 998 octets (RFC 5322 2.1.1).

Reproduced on main: a display name of 40 encoded words became a 2,505-octet From line.
"""

from __future__ import annotations

from tagrelay.core.rewrite import rewrite
from tests.hostile import oracle

WORD = "=?utf-8?b?w6TDtsO8w6TDtsO8w6TDtsO8?="  # "äöüäöüäöü"


def test_a_from_of_40_encoded_words_goes_out_folded_with_the_name_shortened() -> None:
    raw = f"From: {' '.join([WORD] * 40)} <a@b.example>\r\nSubject: s\r\n\r\nx".encode()
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.long_lines(out) == []
    name, address = oracle.display_name(out)
    assert address == "shop@example.org"
    assert name == "äöüäöüäöü" * 8 + "äöüäö\u2026 via example.org"  # 77 characters and an ellipsis


def test_a_long_kept_field_is_folded_at_its_blanks_without_changing_its_value() -> None:
    references = " ".join(f"<{n}.{'x' * 40}@lists.example>" for n in range(60))  # one 3,500-octet line
    raw = f"From: a@b.example\r\nReferences: {references}\r\nSubject: s\r\n\r\nx".encode()
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.long_lines(out) == []
    sent = str(oracle.parsed(out, "compat32")["References"]).replace("\r\n", "")
    assert sent == references


def test_a_long_field_with_no_blank_is_dropped_and_named() -> None:
    raw = b"From: a@b.example\r\nX-Token: " + b"A" * 1500 + b"\r\nSubject: s\r\n\r\nx"
    result = rewrite(raw, "shop@example.org")
    assert oracle.long_lines(result.mime) == []
    assert result.dropped == ("x-token",)
    message = oracle.parsed(result.mime, "compat32")
    assert message["X-Token"] is None
    assert message["X-Tagrelay-Dropped"] == "x-token (a line over 998 octets with no place to fold)"


def test_the_spam_tag_cannot_push_a_subject_over_the_limit() -> None:
    subject = "w " * 495  # 990 octets: 997 with "Subject: " -- at the limit before "[SPAM] " is added
    raw = f"From: a@b.example\r\nSubject: {subject}\r\n\r\nx".encode()
    out = rewrite(raw, "shop@example.org", spam_tag="flag=yes").mime
    assert oracle.long_lines(out) == []
    assert str(oracle.parsed(out, "compat32")["Subject"]).replace("\r\n", "") == "[SPAM] " + subject
