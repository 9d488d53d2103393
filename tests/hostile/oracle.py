"""Independent oracles for the hostile tier: what standard parsers see in the bytes we send.

The stdlib ``email`` package is used with two policies, ``default`` and ``compat32``
(different header machinery over the same feed parser); nothing here calls tagrelay.
"""

from __future__ import annotations

import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

POLICIES = {"default": policy.default, "compat32": policy.compat32}
MAX_LINE_OCTETS = 998


def parsed(raw: bytes, policy_name: str) -> Message:
    return BytesParser(policy=POLICIES[policy_name]).parsebytes(raw)


def parsed_default(raw: bytes) -> EmailMessage:
    """The message under policy ``default`` (the modern API: get_body, iter_attachments)."""
    message = parsed(raw, "default")
    assert isinstance(message, EmailMessage)
    return message


def field_names(raw: bytes, policy_name: str) -> list[str]:
    """The header field names a standard parser finds, in order, lower case."""
    return [name.lower() for name in parsed(raw, policy_name)]


def header_block_of(raw: bytes) -> bytes:
    """The header lines up to the first empty line (CRLF or LF), without the line ending of the last one;
    found independently of tagrelay.core.headers."""
    found = re.search(rb"\r?\n\r?\n", raw)
    return raw if found is None else raw[: found.start()]


def written_names(block: bytes) -> list[str]:
    """The field names as written: every line that does not start with a blank starts a field."""
    names = []
    for line in re.split(rb"\r?\n", block):
        if line and line[:1] not in (b" ", b"\t"):
            names.append(line.split(b":", 1)[0].decode("ascii", "replace").lower())
    return names


def long_lines(raw: bytes) -> list[int]:
    """Lengths of header lines over 998 octets (line ending excluded)."""
    return [len(line) for line in re.split(rb"\r?\n", header_block_of(raw)) if len(line) > MAX_LINE_OCTETS]


def controls_in_block(raw: bytes) -> list[bytes]:
    """C0 controls (TAB aside) and DEL in the header block that are not part of a CRLF/LF line ending."""
    block = header_block_of(raw).replace(b"\r\n", b"\n").replace(b"\n", b"")
    return re.findall(rb"[\x00-\x08\x0a-\x1f\x7f]", block)


def display_name(raw: bytes, name: str = "From") -> tuple[str, str]:
    """(decoded display name, address) of the first address in a field, decoded the RFC 2047 way
    (compat32: whitespace between adjacent encoded words is dropped, as RFC 2047 6.2 says)."""
    from email.header import decode_header, make_header
    from email.utils import getaddresses

    value = parsed(raw, "compat32")[name]
    shown, address = getaddresses([str(value)])[0]
    try:
        return str(make_header(decode_header(shown))), address
    except LookupError:  # an unknown charset named inside a quoted name: not an encoded word to decode
        return shown, address
