"""Reverse addresses: one address on our domain per (alias, correspondent), signed so nobody can make one.

The forwarded copy's ``Reply-To`` is a reverse address; the owner's reply to it comes
back through Mailgun and goes out to the correspondent as the alias. Layout of the
local part (lower case, so case-insensitive; at most 64 octets)::

    r--<alias local part>.<contact id: 16 base32><mac: 16 base32>     alias local part ≤ 28 octets
    r--<contact id: 16 base32><mac: 16 base32>                        longer alias local parts

- ``r--`` is the fixed prefix: the routes loader refuses a ``match`` that starts with
  it, and ingest recognises reverse addresses before the tag routes, so a reverse
  address can never be taken for a tag (and a tag never for a reverse address).
- The contact id is 80 bits of SHA-256 over (alias, correspondent): stable across
  key rotations, so the contact record (keyed by it) keeps its counts. It names the
  record; it proves nothing.
- The MAC is 80 bits of HMAC-SHA256 under the reply key over (the alias written in
  the address, "" in the long form; contact id): without the key nobody can make an
  address that verifies, and it is checked before anything is looked up, so guessing
  costs no database read. The correspondent itself does not fit in 64 octets, hence
  the record; after the lookup, the record must hash to the contact id
  (:func:`matches`), so a record can only ever answer for its own pair.
- Key rotation: an address verifies under the current key or the previous one
  (``TAGRELAY_REPLY_KEY_PREVIOUS``), so addresses handed out before a rotation keep
  working for the grace period; new copies carry addresses under the new key.

The readable alias part only says whose mail an address with a bad MAC is: such
mail is not relayed anywhere but to that alias's owner (marked), which is no more than
anyone can do by writing to the alias itself. Pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "r--"
ID_BYTES = 10  # 80 bits → 16 base32 characters
MAC_BYTES = 10  # 80 bits → 16 base32 characters
_CODE_CHARS = 2 * ID_BYTES * 8 // 5  # 32
MAX_LOCAL_OCTETS = 64
MAX_ALIAS_LOCAL = MAX_LOCAL_OCTETS - len(PREFIX) - 1 - _CODE_CHARS  # 28
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


@dataclass(frozen=True)
class ReverseAddress:
    """A parsed reverse address: nothing in it is verified yet."""

    address: str  # lower case, as parsed
    alias_local: str  # "" in the long-alias form
    domain: str
    contact_id: str
    mac: str

    @property
    def alias(self) -> str:
        """The alias the address names, when it names one ("" in the long-alias form)."""
        return f"{self.alias_local}@{self.domain}" if self.alias_local else ""


def contact_id(alias: str, correspondent: str) -> str:
    """The stable, key-independent id of a (alias, correspondent) pair: 16 base32 characters."""
    text = f"tagrelay-contact-v1\0{alias.lower()}\0{correspondent.lower()}".encode()
    return _b32(hashlib.sha256(text).digest()[:ID_BYTES])


def _mac(key: str, alias: str, cid: str) -> str:
    text = f"tagrelay-reverse-v1\0{alias.lower()}\0{cid}".encode()
    return _b32(hmac.new(key.encode("utf-8"), text, hashlib.sha256).digest()[:MAC_BYTES])


def make(alias: str, correspondent: str, key: str) -> str:
    """The reverse address of (alias, correspondent) under ``key``, on the alias's domain."""
    if not key:
        raise ValueError("no reply key")
    alias = alias.lower()
    local, _, domain = alias.rpartition("@")
    cid = contact_id(alias, correspondent)
    if len(local.encode("utf-8")) <= MAX_ALIAS_LOCAL and local.isascii() and not local.startswith(PREFIX):
        return f"{PREFIX}{local}.{cid}{_mac(key, alias, cid)}@{domain}"
    return f"{PREFIX}{cid}{_mac(key, '', cid)}@{domain}"


def looks_reverse(address: str) -> bool:
    """Whether the address has the reverse prefix (valid or not)."""
    return address.strip().strip("<>").lower().startswith(PREFIX)


def parse(address: str) -> ReverseAddress | None:
    """Split a reverse address into its parts; None when it does not have the layout at all."""
    address = address.strip().strip("<>").strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not domain or not local.startswith(PREFIX) or len(local.encode("utf-8")) > MAX_LOCAL_OCTETS:
        return None
    rest = local[len(PREFIX) :]
    alias_local, dot, code = rest.rpartition(".")
    if not dot:
        alias_local, code = "", rest
    elif not alias_local:
        return None
    if len(code) != _CODE_CHARS or not set(code) <= _BASE32:
        return None
    cid, mac = code[: _CODE_CHARS // 2], code[_CODE_CHARS // 2 :]
    return ReverseAddress(address, alias_local, domain, cid, mac)


def verify(parsed: ReverseAddress, keys: Sequence[str]) -> bool:
    """Whether the address's MAC is right under one of ``keys`` (current, previous).

    Needs no lookup: the MAC covers what the address itself says. Every key is tried,
    each comparison in constant time.
    """
    good = False
    for key in keys:
        if key:
            good |= hmac.compare_digest(_mac(key, parsed.alias, parsed.contact_id), parsed.mac)
    return good


def matches(parsed: ReverseAddress, alias: str, correspondent: str) -> bool:
    """Whether a contact record (alias, correspondent) is the one this address stands for."""
    if parsed.alias_local and alias.lower() != parsed.alias:
        return False
    return hmac.compare_digest(contact_id(alias, correspondent), parsed.contact_id)


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()
