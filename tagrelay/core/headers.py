"""Byte-level access to a message's header block, without parsing the body.

A message is ``header block + rest``: the header block is every header line up
to and including the line ending of the last one; ``rest`` starts with the blank
line and holds the body bytes exactly as received. Nothing here copies or scans
the body, so a 25 MB message costs no more than its headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.header import decode_header, make_header

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CONTROL = re.compile(r"[\r\n\x00]")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")  # printable ASCII but the colon (RFC 5322 3.6.8)
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # unfolding removes the line break, keeps the blank (RFC 5322 2.2.3)


def has_control_chars(value: str) -> bool:
    """CR, LF or NUL: what would let a value inject a header."""
    return _CONTROL.search(value) is not None


def fits_8bit(raw: bytes) -> bool:
    """No NUL and no line over 998 octets: can travel as an 8bit MIME part (RFC 2045)."""
    return b"\0" not in raw and all(len(line) <= 998 for line in raw.splitlines())


@dataclass(frozen=True)
class Field:
    """One header field: its lower-case name and its raw bytes, folding and line ending included."""

    name: str
    raw: bytes

    @property
    def raw_value(self) -> bytes:
        """The bytes after the colon, line ending removed, folding kept."""
        _, _, value = self.raw.partition(b":")
        return value.lstrip(b" \t").rstrip(b" \t\r\n")

    @property
    def unfolded(self) -> str:
        """The value on one line, encoded words left as they are."""
        return unfold(self.raw_value.decode("utf-8", "replace"))

    @property
    def value(self) -> str:
        """The value unfolded and decoded (RFC 2047 words and raw UTF-8 alike)."""
        return decode_words(self.unfolded)


def unfold(text: str) -> str:
    """A header value on one line: the line breaks of its folding removed, the blanks kept."""
    return _FOLD.sub("", text)


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words; on a malformed one keep the text as it is."""
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return text


def body_offset(raw: bytes) -> int:
    """Where the header block ends: the offset of the blank line that starts the rest."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    match = _BLANK_LINE.search(raw)
    if match is None:
        return len(raw)
    return match.start() + (2 if raw[match.start()] == 0x0D else 1)


def header_block(raw: bytes) -> bytes:
    """The header block alone, without copying the body."""
    return raw[: body_offset(raw)]


def header_fields(raw: bytes) -> list[Field]:
    """The fields of a message's header block."""
    return parse_fields(header_block(raw))


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """Split raw message bytes into (header block, rest); ``rest`` starts at the blank line.

    This copies the body; code that needs only the headers uses header_block.
    """
    end = body_offset(raw)
    return raw[:end], raw[end:]


def line_ending(block: bytes) -> bytes:
    """The line ending the header block uses (CRLF unless its first line ends in bare LF)."""
    newline = block.find(b"\n")
    if newline > 0 and block[newline - 1] != 0x0D:
        return b"\n"
    return b"\r\n"


def parse_fields(block: bytes) -> list[Field]:
    """The header block as a list of fields, in order; continuation lines join their field.

    A line that is neither a field nor a continuation (an mbox ``From `` line, garbage)
    becomes a field with the empty name, so it passes through untouched.
    """
    fields: list[Field] = []
    # Lines end at LF only: a bare CR inside a line is data, as it is to split_message.
    for line in _LINES.findall(block):
        if line[:1] in (b" ", b"\t"):
            if fields:
                last = fields[-1]
                fields[-1] = Field(last.name, last.raw + line)
            else:  # a continuation with nothing to continue
                fields.append(Field("", line))
            continue
        named = _FIELD_NAME.match(line)
        fields.append(Field(named.group(1).decode("ascii").lower() if named else "", line))
    return fields


def first(fields: list[Field], name: str) -> Field | None:
    """The first field with that (lower-case) name, if any."""
    return next((f for f in fields if f.name == name), None)


def count(fields: list[Field], name: str) -> int:
    return sum(1 for f in fields if f.name == name)
