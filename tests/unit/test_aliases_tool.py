"""``tagrelay aliases`` / ``tagrelay senders`` rows (tagrelay_tools.aliases), from records as the relay writes them."""

from __future__ import annotations

import json

import pytest

from tagrelay.core import insight
from tagrelay.core.insight import Sighting
from tagrelay_tools.aliases import line, senders, summary
from tagrelay_tools.terminal import say_json

NOW = 1_767_225_600.0 + 60 * 86400  # 2026-03-02


def record() -> dict[str, object]:
    out: dict[str, object] = {}
    for n, (address, spam) in enumerate([("a@github.com", False)] * 3 + [("x@junk.example", True)]):
        seen = Sighting("shop@example.org", NOW - (40 - n * 12) * 86400, address, "", "", "", "", True, spam)
        out = insight.apply(out, insight.write_for(seen))
    return out


def test_a_summary_counts_the_last_30_days_spam_share_and_state() -> None:
    row = summary({**record(), "state": "locked", "leaks": {"evil.example": {}}}, refusals=2, now=NOW)
    assert row == {
        "alias": "shop@example.org",
        "messages": 4,
        "last_30_days": 3,  # 28, 16 and 4 days ago; not 40
        "senders": 1,
        "first_seen": NOW - 40 * 86400,
        "last_seen": NOW - 4 * 86400,
        "spam_share": 0.25,
        "state": "locked",
        "refusals": 2,
        "leak": True,
        "leaks": ["evil.example"],
    }
    assert summary(record(), 0, NOW)["state"] == "active"  # no control fields yet


def test_a_line_escapes_what_a_sender_could_have_written() -> None:
    row = summary({**record(), "alias": "x\x1b[2J@example.org"}, 0, NOW)
    shown = line(row)
    assert "\x1b" not in shown and "x\\x1b[2J@example.org" in shown
    assert "4 msgs (   3 in 30d)" in shown and "spam   25%" in shown


def test_senders_most_first() -> None:
    data = {"domains": {"b.example": {"count": 1, "first_seen": 5.0}, "a.example": {"count": 4, "first_seen": 1.0}}}
    assert senders(data) == [
        {"domain": "a.example", "count": 4, "first_seen": 1.0},
        {"domain": "b.example", "count": 1, "first_seen": 5.0},
    ]


def test_json_output_is_printable_ascii_and_round_trips(capsys: pytest.CaptureFixture[str]) -> None:
    value = {"alias": "x\x1b]0;owned\x07\u202e@example.org"}
    say_json(value)
    out = capsys.readouterr().out
    assert out.isascii() and all(c.isprintable() for c in out.rstrip("\n"))
    assert json.loads(out) == value
