"""Reverse addresses: unforgeable, stable, case-insensitive, at most 64 octets, never a tag."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tagrelay.core import reverse
from tagrelay.core.errors import RoutesError
from tagrelay.core.routes import is_valid_address, load

KEY = "k" * 64
OTHER_KEY = "o" * 64
ALIAS = "github@example.org"
ALICE = "alice@bank.example"


def b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=").lower()


def test_layout_matches_an_independent_computation() -> None:
    """The address is prefix, alias, 80-bit SHA-256 id, 80-bit HMAC: computed here with hashlib/hmac."""
    cid = b32(hashlib.sha256(b"tagrelay-contact-v1\0github@example.org\0alice@bank.example").digest()[:10])
    text = b"tagrelay-reverse-v1\0github@example.org\0" + cid.encode()
    mac = b32(hmac.new(KEY.encode(), text, "sha256").digest()[:10])
    assert reverse.make(ALIAS, ALICE, KEY) == f"r--github.{cid}{mac}@example.org"
    assert len(mac) * 5 >= 80


def test_stable_and_distinct_per_pair() -> None:
    first = reverse.make(ALIAS, ALICE, KEY)
    assert reverse.make(ALIAS, ALICE, KEY) == first
    assert reverse.make("GitHub@Example.ORG", "Alice@Bank.Example", KEY) == first
    assert reverse.make(ALIAS, "bob@bank.example", KEY) != first
    assert reverse.make("shop@example.org", ALICE, KEY) != first


@pytest.mark.parametrize("shape", [str.upper, str.title, lambda s: f"<{s.upper()}>"])
def test_case_insensitive(shape: object) -> None:
    address = reverse.make(ALIAS, ALICE, KEY)
    parsed = reverse.parse(shape(address))  # type: ignore[operator]
    assert parsed is not None and reverse.verify(parsed, [KEY])
    assert reverse.matches(parsed, ALIAS, ALICE)


@pytest.mark.parametrize("alias", ["a@example.org", "x" * 28 + "@example.org", "y" * 29 + "@example.org"])
def test_local_part_fits_64_octets_for_the_longest_correspondent(alias: str) -> None:
    correspondent = "c" * 64 + "@" + ".".join(["d" * 61] * 3) + ".com"
    assert len(correspondent) == 254
    address = reverse.make(alias, correspondent, KEY)
    local = address.rpartition("@")[0]
    assert len(local.encode()) <= 64
    assert is_valid_address(address)
    parsed = reverse.parse(address)
    assert parsed is not None and reverse.verify(parsed, [KEY]) and reverse.matches(parsed, alias, correspondent)


def test_long_alias_uses_the_form_without_the_alias() -> None:
    alias = "y" * 29 + "@example.org"
    parsed = reverse.parse(reverse.make(alias, ALICE, KEY))
    assert parsed is not None and parsed.alias == ""
    assert reverse.verify(parsed, [KEY])


def test_every_altered_character_is_refused() -> None:
    address = reverse.make(ALIAS, ALICE, KEY)
    local, _, domain = address.rpartition("@")
    code_start = len(local) - 32
    for position in range(code_start, len(local)):
        for replacement in "a7":
            if local[position] == replacement:
                continue
            altered = local[:position] + replacement + local[position + 1 :] + "@" + domain
            parsed = reverse.parse(altered)
            assert parsed is not None
            assert not (reverse.verify(parsed, [KEY]) and reverse.matches(parsed, ALIAS, ALICE)), altered


def test_another_alias_written_into_the_address_is_refused() -> None:
    address = reverse.make(ALIAS, ALICE, KEY)
    swapped = address.replace("r--github.", "r--shop.")
    parsed = reverse.parse(swapped)
    assert parsed is not None and parsed.alias == "shop@example.org"
    assert not reverse.verify(parsed, [KEY])


def test_another_domain_is_refused() -> None:
    parsed = reverse.parse(reverse.make(ALIAS, ALICE, KEY).replace("example.org", "example.net"))
    assert parsed is not None and not reverse.verify(parsed, [KEY])


def test_other_key_refused_previous_key_accepted_during_rotation() -> None:
    old = reverse.parse(reverse.make(ALIAS, ALICE, OTHER_KEY))
    assert old is not None
    assert not reverse.verify(old, [KEY])
    assert reverse.verify(old, [KEY, OTHER_KEY])  # current, previous
    assert not reverse.verify(old, [KEY, ""])


def test_contact_id_does_not_change_with_the_key() -> None:
    new, old = reverse.parse(reverse.make(ALIAS, ALICE, KEY)), reverse.parse(reverse.make(ALIAS, ALICE, OTHER_KEY))
    assert new is not None and old is not None
    assert new.contact_id == old.contact_id and new.mac != old.mac


def test_a_record_for_another_pair_does_not_match() -> None:
    parsed = reverse.parse(reverse.make(ALIAS, ALICE, KEY))
    assert parsed is not None
    assert not reverse.matches(parsed, ALIAS, "mallory@bank.example")
    assert not reverse.matches(parsed, "shop@example.org", ALICE)


@pytest.mark.parametrize(
    "address",
    [
        "github@example.org",
        "r--github@example.org",
        "r--github.short@example.org",
        "r--.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org",
        "r--github.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1@example.org",  # 1 is not base32
        "r--" + "a" * 70 + "@example.org",
        "r--aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_not_the_layout(address: str) -> None:
    assert reverse.parse(address) is None


@pytest.mark.parametrize("match", ["r--{tag}@example.org", "R--x@example.org", "r--*@example.org"])
def test_routes_refuse_the_reserved_prefix(match: str) -> None:
    with pytest.raises(RoutesError, match="reserved for reply addresses"):
        load(f'[[route]]\nmatch = "{match}"\nforward = "owner@gmail.com"\n')


def test_routes_take_a_reply_name_per_route() -> None:
    routes = load('[[route]]\nmatch = "{tag}@example.org"\nforward = "o+{tag}@gmail.com"\nreply_name = "Ann Smith"\n')
    assert routes.rules[0].reply_name == "Ann Smith"
    with pytest.raises(RoutesError, match="reply_name"):
        load('[[route]]\nmatch = "{tag}@example.org"\nforward = "o@gmail.com"\nreply_name = 3\n')
