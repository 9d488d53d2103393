"""What the operator commands print: every line goes through :func:`say`, which escapes it.

Dead-letter rows and delivery records carry what a sender wrote (recipient, Message-ID, the
reason Mailgun gave). Printed as they are, ``\\x1b[2J`` clears the operator's screen, a CR
overwrites the start of the row, an OSC sequence retitles the terminal or plants a link, and a
right-to-left override reorders what follows. So every character that a terminal does not
simply draw (C0 and C1 controls, DEL, format characters such as bidirectional overrides and
zero-width marks, line and paragraph separators, lone surrogates) is shown as a visible escape
(``\\x1b``, ``\\r``, ``\\u202e``), and a backslash as ``\\\\``, so an escape cannot be faked either.
Tooling only: the runtime's own control-character rules live in ``tagrelay.core``.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import TextIO

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value: object) -> str:
    """``value`` as text that a terminal shows literally: one line, no control or format characters."""
    text = str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def say(*lines: object, file: TextIO | None = None) -> None:
    """Print each of ``lines`` on its own line, escaped; ``file`` defaults to standard output."""
    out = file if file is not None else sys.stdout
    for line in lines:
        print(printable(line), file=out, flush=True)


def warn(*lines: object) -> None:
    """:func:`say` to standard error."""
    say(*lines, file=sys.stderr)


def say_json(value: object, file: TextIO | None = None) -> None:
    """``value`` as one line of JSON for scripts (``--json``). ``ensure_ascii`` makes it printable ASCII:
    every control, format or non-ASCII character is a JSON ``\\uXXXX`` escape, which a terminal shows
    literally; passing it through :func:`say` would double its backslashes and break the JSON."""
    import json

    out = file if file is not None else sys.stdout
    print(json.dumps(value, ensure_ascii=True, sort_keys=True), file=out, flush=True)
