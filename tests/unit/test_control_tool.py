"""The owner's commands (tagrelay block|unblock|lock|unlock|block-link): what they check, write and print."""

from __future__ import annotations

import argparse
import re
from urllib.parse import parse_qs, urlparse

import pytest

from tagrelay.adapters.aliases import MemoryAliases
from tagrelay.core import control
from tagrelay.core.routes import load
from tagrelay_tools.control import ControlError, apply, block_link, checked_alias

ROUTES = load(
    """\
blocked = ["leaked@example.org"]

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""
)
WHEN = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def args(mode: str = "hold", allow: tuple[str, ...] = ()) -> argparse.Namespace:
    return argparse.Namespace(mode=mode, allow=list(allow))


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("not an address", "is not an address"),
        ("shop@elsewhere.example", "is not in our domains (example.org)"),
    ],
)
def test_an_alias_outside_our_routes_is_refused(given: str, problem: str) -> None:
    with pytest.raises(ControlError, match=re.escape(problem)):
        checked_alias(given, ROUTES)


def test_an_alias_is_taken_as_its_key_and_a_statically_blocked_one_is_allowed() -> None:
    assert checked_alias(" Shop@Example.ORG ", ROUTES) == "shop@example.org"
    assert checked_alias("leaked@example.org", ROUTES) == "leaked@example.org"
    assert checked_alias("shop@anywhere.example", None) == "shop@anywhere.example"  # no routes to check against


def test_block_says_what_changed_and_when_it_takes_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAGRELAY_ALIAS_CACHE_SECONDS", raising=False)
    store = MemoryAliases()
    lines = apply(store, "block", "shop@example.org", WHEN, args())
    assert lines == [
        "shop@example.org: active → blocked at 2027-01-15 08:00:00 UTC",
        "  mail to shop@example.org and shop+…@example.org is refused with 406",
        "  takes effect within 30 s (each ingest instance's cache; no redeploy, no restart)",
    ]
    assert store.records["shop@example.org"] == {"alias": "shop@example.org", "state": "blocked",
                                                 "state_changed_at": WHEN}  # fmt: skip
    assert apply(store, "block", "shop@example.org", WHEN + 1, args()) == [
        "shop@example.org is blocked: nothing to block"
    ]


def test_lock_lists_the_allowed_domains_and_warns_when_there_are_none() -> None:
    store = MemoryAliases()
    store.records["a@example.org"] = {"alias": "a@example.org", "domains": {"github.com": {"count": 1}}}
    lines = apply(store, "lock", "a@example.org", WHEN, args("refuse"))
    assert lines[1] == "  allowed sender domains (1): github.com"
    assert "refused (406)" in lines[2]
    empty = apply(MemoryAliases(), "lock", "b@example.org", WHEN, args())
    assert "  allowed sender domains (0): (none)" in empty
    assert any(line.startswith("  warning: no sender domains recorded yet") for line in empty)


def test_block_link_needs_a_url_and_a_reply_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAGRELAY_PUBLIC_URL", raising=False)
    monkeypatch.delenv("TAGRELAY_REPLY_KEY", raising=False)
    monkeypatch.setattr("tagrelay_tools.control.running_state", lambda: None)
    with pytest.raises(ControlError, match="no ingest URL"):
        block_link("a@example.org", WHEN)
    monkeypatch.setenv("TAGRELAY_PUBLIC_URL", "https://r-p.cloudfunctions.net/ingest")
    with pytest.raises(ControlError, match="no reply key"):
        block_link("a@example.org", WHEN)
    monkeypatch.setenv("TAGRELAY_REPLY_KEY", "q" * 40)
    link = block_link("a@example.org", WHEN)
    assert link.startswith("https://r-p.cloudfunctions.net/ingest/block?")
    fields = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
    assert control.check_link(fields, WHEN, [control.link_key("q" * 40)]).alias == "a@example.org"


def test_unblocking_a_statically_blocked_alias_says_the_routes_file_still_blocks_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tagrelay_tools import control as tool

    store = MemoryAliases()
    monkeypatch.setattr(tool, "_store", lambda args: store)
    monkeypatch.setattr(tool, "routes_for", lambda path: ROUTES)
    namespace = argparse.Namespace(alias="Leaked@example.org", routes=None, change="unblock", mode="hold", allow=[])
    assert tool.cmd_change(namespace) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "leaked@example.org is active: nothing to unblock",
        "  note: leaked@example.org is also in the routes file's blocked list; that one stays until edited",
    ]


def test_lock_names_the_domains_it_leaves_out_after_a_leak() -> None:
    store = MemoryAliases()
    store.records["a@example.org"] = {
        "alias": "a@example.org",
        "domains": {"github.com": {"count": 4, "first_seen": 1.0}, "leaker.example": {"count": 1, "first_seen": 9.0}},
        "leaks": {"leaker.example": {"at": 9.0, "notified": True}},
    }
    lines = apply(store, "lock", "a@example.org", WHEN, args("refuse"))
    assert lines[1:3] == [
        "  allowed sender domains (1): github.com",
        "  not allowed: flagged as a leak or first seen since one: leaker.example (add with --allow)",
    ]
    assert store.records["a@example.org"]["allowed"] == ["github.com"]
