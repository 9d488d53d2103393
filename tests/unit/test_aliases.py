"""The alias key and sender organisations (tagrelay.core.aliases)."""

from __future__ import annotations

import pytest

from tagrelay.core.aliases import alias_base, alias_key, registrable_domain


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("noreply@mail.github.com", "github.com"),
        ("github.com", "github.com"),
        ("a@x.foo.co.uk", "foo.co.uk"),
        ("someone@User.GitHub.io", "user.github.io"),  # github.io is a public suffix: each site is its own
        ("a@co.uk", "co.uk"),
        ("a@localhost", "localhost"),
        ("a@bücher.example", "xn--bcher-kva.example"),
        ("a@", ""),
        ("a@exa mple.com", ""),
        ("a@<x>.com", ""),
    ],
)
def test_registrable_domain(given: str, expected: str) -> None:
    assert registrable_domain(given) == expected


def test_alias_key_and_base() -> None:
    assert alias_key(" Shop+X@Example.ORG ") == "shop+x@example.org"
    assert alias_key("not an address") is None
    assert alias_base("shop+x@example.org") == "shop@example.org"
    assert alias_base("shop@example.org") == "shop@example.org"
