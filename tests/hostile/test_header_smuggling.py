"""Class 4: bare CR, NUL and other control characters cannot smuggle header fields.

Reproduced on main: ``Subject: hi\\rBcc: spy@evil.example\\rFrom: CEO <ceo@bank.example>`` went out,
and a standard parser saw a Bcc and a second From. The oracle is the stdlib parser under two
policies; the expected field lists are written out by hand.
"""

from __future__ import annotations

import pytest

from tagrelay.core.inbound import Form, rebuild_mime
from tagrelay.core.rewrite import rewrite
from tests.hostile import oracle

REWRITTEN = ["from", "reply-to", "x-original-from", "x-original-to", "x-tagrelay-loop"]


@pytest.mark.parametrize("control", [b"\r", b"\x00", b"\x0b", b"\x0c", b"\x1b", b"\x7f", b"\r\r", b"\x00\r"])
@pytest.mark.parametrize("policy_name", sorted(oracle.POLICIES))
def test_a_control_character_in_a_kept_field_cannot_start_another(control: bytes, policy_name: str) -> None:
    subject = b"Subject: hi" + control + b"Bcc: spy@evil.example" + control + b"From: CEO <ceo@bank.example>"
    raw = b"From: Alice <alice@bank.example>\r\n" + subject + b"\r\nTo: shop@example.org\r\n\r\nbody\r\n"
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.field_names(out, policy_name) == [*REWRITTEN, "subject", "to"]
    message = oracle.parsed(out, policy_name)
    assert len(message.get_all("From") or []) == 1
    assert "shop@example.org" in str(message["From"])
    assert oracle.controls_in_block(out) == []
    assert "Bcc: spy@evil.example" in str(message["Subject"])  # kept as text of the one Subject
    assert out.endswith(b"\r\n\r\nbody\r\n")


@pytest.mark.parametrize("policy_name", sorted(oracle.POLICIES))
def test_a_control_character_in_the_from_cannot_reach_reply_to_or_x_original_from(policy_name: str) -> None:
    raw = b"From: a@b.example\rBcc: spy@evil.example\r\nSubject: s\r\n\r\nx"
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.field_names(out, policy_name) == [*REWRITTEN, "subject"]


@pytest.mark.parametrize("policy_name", sorted(oracle.POLICIES))
def test_a_line_that_is_no_field_does_not_end_the_block_early(policy_name: str) -> None:
    # "Bad Name: x" and "X-Space : y" end the header block for the stdlib parser: everything
    # after them would have become body. The first is no field (dropped), the second is
    # written "X-Space: y" (the same field, RFC 5322 obs-optional).
    raw = b"From: a@b.example\r\nBad Name: x\r\nX-Space : y\r\nSubject: s\r\n\r\nbody"
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.field_names(out, policy_name) == [*REWRITTEN, "x-space", "subject"]
    assert oracle.parsed(out, policy_name).get_payload() == "body"


@pytest.mark.parametrize("policy_name", sorted(oracle.POLICIES))
def test_the_parsed_form_path_cannot_smuggle_either(policy_name: str) -> None:
    headers = b'[["Subject", "hi\\rBcc: spy@evil.example\\u0000\\rFrom: x@y"], ["To", "a@b\\u000bc"]]'
    out = rebuild_mime(Form(fields={"body-plain": b"x", "message-headers": headers}))
    assert oracle.field_names(out, policy_name) == [
        "subject",
        "to",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    ]
    assert oracle.controls_in_block(out) == []
