"""Class: the one-click block link (issue 14) blocks only the alias it was made for, only by a POST,
only while valid. A forged, altered, expired or replayed-to-another-alias link changes nothing and
reads nothing; a GET (a mail scanner, a link preview) never changes anything; nothing an attacker
puts in a link is echoed into the page unescaped."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tagrelay.adapters.aliases import MemoryAliases
from tagrelay.adapters.secrets import Secret
from tagrelay.core import control
from tagrelay.core.config import SecretRef
from tagrelay.core.ports import AliasChange
from tagrelay.core.routes import load
from tagrelay.services.blocklink import BlockLinks, Page

NOW = 1_700_000_000.0
Tamper = Callable[[dict[str, str]], dict[str, str]]
REPLY_KEY = "k" * 40
ROUTES = load(
    """\
[[route]]
match = "quiet-{tag}@example.org"
forward = "owner+quiet-{tag}@gmail.com"

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
block_link = true
"""
)


class CountingAliases(MemoryAliases):
    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def change_alias(self, alias: str, change: AliasChange) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        self.changes += 1
        return super().change_alias(alias, change)


def links(clock: list[float] | None = None) -> tuple[BlockLinks, CountingAliases]:
    aliases = CountingAliases()
    when = clock or [NOW]
    service = BlockLinks(ROUTES, [Secret(SecretRef("TAGRELAY_REPLY_KEY", value=REPLY_KEY))], aliases, lambda: when[0])
    return service, aliases


def params_of(alias: str, key: str = REPLY_KEY, now: float = NOW) -> dict[str, str]:
    link = control.block_link("https://ingest.example/ingest", alias, now, control.link_key(key))
    return {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}


def state(aliases: MemoryAliases, alias: str) -> str:
    return str((aliases.records.get(alias) or {}).get("state", "active"))


def test_get_shows_a_confirmation_and_changes_nothing_then_post_blocks_once() -> None:
    service, aliases = links()
    given = params_of("shop@example.org")
    page = service.handle("GET", given)
    assert page.status == 200 and 'method="post"' in page.html
    assert aliases.changes == 0 and state(aliases, "shop@example.org") == "active"
    first, second = service.handle("POST", given), service.handle("POST", given)
    assert (first.status, second.status) == (200, 200)
    assert "is blocked" in first.html and "already blocked" in second.html
    assert state(aliases, "shop@example.org") == "blocked"
    assert aliases.records["shop@example.org"]["state_changed_at"] == NOW


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: {**p, "s": p["s"][:-1] + ("0" if p["s"][-1] != "0" else "1")},  # a flipped MAC digit
        lambda p: {**p, "x": str(int(p["x"]) + 1)},  # a later expiry
        lambda p: {**p, "a": "other@example.org"},  # the MAC of one alias on another (replay across aliases)
        lambda p: {**p, "a": "Shop@example.org"},  # not the alias key the MAC was made over
        lambda p: {**p, "s": ""},
        lambda p: {"a": p["a"]},
        lambda p: {**p, "s": p["s"] + "00"},
        lambda p: params_of("shop@example.org", key="another reply key of forty characters!!"),  # forged
    ],
    ids=["mac", "expiry", "other-alias", "case", "no-mac", "bare", "long-mac", "other-key"],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_or_altered_link_is_403_and_touches_nothing(tamper: Tamper, method: str) -> None:
    service, aliases = links()
    page = service.handle(method, tamper(params_of("shop@example.org")))
    assert page.status == 403 and "Nothing was changed" in page.html
    assert aliases.changes == 0 and aliases.records == {}


def test_an_expired_link_is_403_and_a_link_unblocked_since_does_nothing() -> None:
    clock = [NOW]
    service, aliases = links(clock)
    given = params_of("shop@example.org")
    clock[0] = NOW + control.LINK_SECONDS + 1
    assert service.handle("POST", given).status == 403 and aliases.changes == 0
    clock[0] = NOW + 60
    aliases.records["shop@example.org"] = {"alias": "shop@example.org", "state": "active", "unblocked_at": NOW + 30}
    page = service.handle("POST", given)
    assert page.status == 409 and state(aliases, "shop@example.org") == "active"


def test_a_route_without_block_link_refuses_a_valid_link() -> None:
    service, aliases = links()
    page = service.handle("POST", params_of("quiet-x@example.org"))
    assert page.status == 403 and aliases.changes == 0


def test_other_methods_are_405() -> None:
    service, _ = links()
    assert service.handle("PUT", params_of("shop@example.org")).status == 405


def test_every_value_on_the_page_is_escaped() -> None:
    alias = "o'neil&co+{x}@example.org"  # quote and ampersand are allowed in a local part
    service, _ = links()
    page = service.handle("GET", params_of(alias))
    assert page.status == 200
    assert alias not in page.html and html.escape(alias) in page.html
    injected = {"a": '"><script>alert(1)</script>@example.org', "x": "<b>", "s": "<i>"}
    refused = service.handle("GET", injected)
    assert refused.status == 403 and "<script>" not in refused.html and "<b>" not in refused.html
    tags = set(re.findall(r"<([a-z0-9]+)", page.html))
    assert tags <= {"html", "head", "meta", "title", "body", "h1", "p", "form", "input", "button"}


def test_pages_forbid_framing_scripts_and_referrers() -> None:
    service, _ = links()
    page: Page = service.handle("GET", params_of("shop@example.org"))
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
