"""Operator output: what a sender wrote never reaches the operator's terminal as control characters.

``tagrelay deadletters list`` and ``tagrelay status`` print recipients, Message-IDs and reasons
that a sender chose. Each hostile value below is a class of terminal escape injection; the
printed rows must hold none of them, and must still show the value (escaped), not drop it.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tagrelay_tools.deadletters import DeadLetter
from tagrelay_tools.ops import show_deadletters, show_deliveries
from tagrelay_tools.terminal import printable

NOW = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
TOOLS = Path(__file__).resolve().parents[2] / "tagrelay_tools"

# (what a sender writes, how the operator sees it)
HOSTILE = [
    ("\x1b[2J\x1b[Hall clear", "\\x1b[2J\\x1b[Hall clear"),  # CSI: clear the screen
    ("ok\rFORGED", "ok\\rFORGED"),  # CR: overwrite the row
    ("one\ntwo", "one\\ntwo"),  # LF: a second, forged row
    ("\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"),  # OSC: retitle the terminal
    ("\x1b]8;;https://evil.example\x1b\\link", "\\x1b]8;;https://evil.example\\x1b\\\\link"),  # OSC 8 hyperlink
    ("\x9b2Jc1", "\\x9b2Jc1"),  # C1 CSI, one byte
    ("bell\x07\x08\x7f", "bell\\x07\\x08\\x7f"),  # BEL, backspace, DEL
    ("tab\there", "tab\\there"),
    ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"),
    ("lone\udcffsurrogate", "lone\\udcffsurrogate"),  # undecodable byte kept by surrogateescape
    ("already \\x1b escaped", "already \\\\x1b escaped"),  # an escape cannot be faked
    ("Zoë 日本 <z@example.org>", "Zoë 日本 <z@example.org>"),  # printable text stays as it is
]


def terminal_unsafe(text: str) -> list[str]:
    """Characters a terminal would act on instead of drawing (an oracle apart from terminal.py)."""
    unsafe = re.findall(r"[\x00-\x1f\x7f-\x9f]", text)
    return unsafe + [c for c in text if unicodedata.category(c) in ("Cf", "Cs", "Zl", "Zp")]


@pytest.mark.parametrize(("written", "shown"), HOSTILE)
def test_printable_shows_each_class_escaped(written: str, shown: str) -> None:
    assert printable(written) == shown
    assert terminal_unsafe(printable(written)) == []


def letter(recipient: str, message_id: str, reason: str, age: timedelta) -> DeadLetter:
    attributes = {"recipient": recipient, "message_id": message_id, "deadletter_reason": reason}
    return DeadLetter("ack", b"raw", attributes, NOW - age)


def test_deadletters_list_prints_no_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    letters = [
        letter(f"{written}@example.org", f"<{written}@x>", f"mailgun rejected: {written}", timedelta(minutes=n))
        for n, (written, _) in enumerate(HOSTILE, 1)
    ]
    show_deadletters(letters, NOW)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{len(HOSTILE)} dead letter(s):"
    assert len(lines) == 1 + len(HOSTILE)  # one row each: no forged rows
    assert terminal_unsafe(out.replace("\n", "")) == []
    for row, (_, shown) in zip(lines[1:], reversed(HOSTILE), strict=True):  # oldest first
        assert f"{shown}@example.org" in row
        assert f"<{shown}@x>" in row
        assert row.endswith(f"mailgun rejected: {shown}")


def test_status_delivery_rows_print_no_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    deliveries = [
        {
            "updated_at": NOW.timestamp(),
            "state": f"sent{written}",
            "alias": f"{written}@example.org",
            "targets": [f"owner+{written}@gmail.com"],
            "message_id": f"<{written}@x>",
            "attempts": 1,
        }
        for written, _ in HOSTILE
    ]
    show_deliveries(deliveries)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1 + len(HOSTILE)
    assert terminal_unsafe(out.replace("\n", "")) == []
    for row, (_, shown) in zip(lines[1:], HOSTILE, strict=True):
        assert f" {shown}@example.org " in row
        assert row.endswith(f"→ owner+{shown}@gmail.com  <{shown}@x>  attempts=1")


def test_every_printing_path_in_the_tooling_goes_through_the_escaping_helper() -> None:
    """No ``print(`` or ``sys.stdout.write`` outside tagrelay_tools/terminal.py, so no new path skips it."""
    offenders = []
    for path in sorted(TOOLS.glob("*.py")):
        if path.name == "terminal.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (isinstance(func, ast.Name) and func.id == "print") or (
                isinstance(func, ast.Attribute) and func.attr == "write" and ast.unparse(func.value).endswith(
                    ("stdout", "stderr")
                )
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
