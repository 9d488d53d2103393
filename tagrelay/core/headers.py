"""Byte-level access to a message's header block, without parsing the body.

A message is ``header block + rest``: the header block is every header line up
to and including the line ending of the last one; ``rest`` starts with the blank
line and holds the body bytes exactly as received. Nothing here copies or scans
the body, so a 25 MB message costs no more than its headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header

from tagrelay.core.errors import Undeliverable

# The header block a message may have: Gmail refuses more than 500 KB of headers
# (and more than 5,000 fields), Postfix keeps 100 KiB by default; real mail stays
# far below. Twice Gmail's limit leaves room for long trace chains and still bounds
# what one post may cost to parse (linear: about 10 ms per MiB).
MAX_HEADER_BLOCK_BYTES = 1 << 20
MAX_LINE_OCTETS = 998  # RFC 5322 2.1.1, without the CRLF
MAX_DECODE_CHARS = 8192  # of a value decoded for display, logs and comparisons (see decode_words)

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")  # printable ASCII but the colon (RFC 5322 3.6.8)
_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")  # unfolding removes the line break, keeps the blank (RFC 5322 2.2.3)

# The one definition of "control character" in the core. Three helpers, by use:
# - has_control_chars: a one-line value (an address, an envelope field, a form value
#   we send) must not carry any C0 control, DEL or TAB at all;
# - clean_text: text we show (a display name, a Subject in a notice) gets each run of
#   them, and the Unicode line separators, replaced by one space;
# - scrub_field: a raw header field we pass on keeps its folding and line ending, and
#   every other control (bare CR, NUL, ESC ...; TAB is whitespace) becomes a space, so
#   no parser can split it into more fields than we meant; scrub_value does the same to
#   a decoded value (the parsed form's message-headers).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DISPLAY_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_FIELD_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VALUE_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_FIELD_NAME_TEXT = re.compile(r"[!-9;-~]+")
_LINE_END = re.compile(rb"\r?\n\Z")


def has_control_chars(value: str) -> bool:
    """Any C0 control character, TAB or DEL: what would let a value inject a header or a line."""
    return _CONTROL.search(value) is not None


def clean_text(text: str) -> str:
    """One line of printable text: each run of control characters or line separators becomes a space."""
    return _DISPLAY_BREAKS.sub(" ", text).strip()


def scrub_value(text: str) -> str:
    """A decoded header value (the parsed form's) with each control character but TAB, and each
    Unicode line separator, replaced by a space: what scrub_field does to raw bytes."""
    return _VALUE_CONTROL.sub(" ", text)


def is_field_name(name: str) -> bool:
    """A header field name: printable ASCII but the colon (RFC 5322 3.6.8)."""
    return _FIELD_NAME_TEXT.fullmatch(name) is not None


def scrub_field(raw: bytes) -> bytes:
    """A raw header field with every control character that is not TAB, folding or its line ending
    replaced by a space. Lines end at LF; a CR counts as part of a line ending only right before it."""
    if not _FIELD_CONTROL.search(raw.replace(b"\r\n", b"").replace(b"\n", b"")):
        return raw
    out = []
    for line in _LINES.findall(raw):
        end = _LINE_END.search(line)
        cut = end.start() if end else len(line)
        out.append(_FIELD_CONTROL.sub(b" ", line[:cut]) + line[cut:])
    return b"".join(out)


def check_header_block(raw: bytes) -> None:
    """Refuse (406) a message whose header block is larger than any real mail's (MAX_HEADER_BLOCK_BYTES)."""
    if body_offset(raw) > MAX_HEADER_BLOCK_BYTES:
        raise Undeliverable(f"header block over {MAX_HEADER_BLOCK_BYTES} bytes (real mail stays far below)")


def fold_field(raw: bytes, eol: bytes) -> bytes | None:
    """The field with every line over MAX_LINE_OCTETS folded before a blank (RFC 5322 2.2.3:
    unfolding gives back the same value); None when a line has no blank to fold at."""
    if all(len(line.rstrip(b"\r\n")) <= MAX_LINE_OCTETS for line in _LINES.findall(raw)):
        return raw
    out: list[bytes] = []
    for line in _LINES.findall(raw):
        end = _LINE_END.search(line)
        cut = end.start() if end else len(line)
        content, ending = line[:cut], line[cut:]
        while len(content) > MAX_LINE_OCTETS:
            at = max(content.rfind(b" ", 1, MAX_LINE_OCTETS + 1), content.rfind(b"\t", 1, MAX_LINE_OCTETS + 1))
            if at <= 0 or not content[:at].strip(b" \t"):
                return None
            out.append(content[:at] + eol)
            content = content[at:]
        out.append(content + ending)
    return b"".join(out)


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
    """Decode RFC 2047 encoded words; on a malformed one keep the text as it is.

    Never raises. The stdlib decoder is slower than linear on long runs of encoded
    words, so only the first MAX_DECODE_CHARS are decoded; the rest (nothing in real
    mail, whose fields are shown, logged or compared, never stored decoded) stays as it is.
    """
    if "=?" not in text:
        return text
    if len(text) > MAX_DECODE_CHARS:
        return decode_words(text[:MAX_DECODE_CHARS]) + text[MAX_DECODE_CHARS:]
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # any header value may trip any stdlib helper; keep the text as it is
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
    # Each field's lines are collected and joined once: linear in the block, however it is folded.
    pending: list[tuple[str, list[bytes]]] = []
    # Lines end at LF only: a bare CR inside a line is data, as it is to split_message.
    for line in _LINES.findall(block):
        if line[:1] in (b" ", b"\t"):
            if pending:
                pending[-1][1].append(line)
            else:  # a continuation with nothing to continue
                pending.append(("", [line]))
            continue
        named = _FIELD_NAME.match(line)
        pending.append((named.group(1).decode("ascii").lower() if named else "", [line]))
    return [Field(name, lines[0] if len(lines) == 1 else b"".join(lines)) for name, lines in pending]


def first(fields: list[Field], name: str) -> Field | None:
    """The first field with that (lower-case) name, if any."""
    return next((f for f in fields if f.name == name), None)


def mailgun_prepended(fields: list[Field]) -> list[Field]:
    """The fields Mailgun put on top of the message it received (``X-Mailgun-*``, ``X-Envelope-From``):
    the run at the start of the block, up to the first field Mailgun did not add. A sender can write
    the same names further down; those are never read as Mailgun's verdict."""
    run: list[Field] = []
    for f in fields:
        if not (f.name.startswith("x-mailgun-") or f.name == "x-envelope-from"):
            break
        run.append(f)
    return run


def count(fields: list[Field], name: str) -> int:
    return sum(1 for f in fields if f.name == name)
