"""What an alias is, for the insight and the control over it (issue 14).

An alias is the recipient address as the routes see it (:func:`alias_key`: lower
case, IDNA domain); its ``+detail`` base is :func:`alias_base`, so blocking or
locking ``shop@example.org`` also covers ``shop+x@example.org``, as the routes
file's static ``blocked`` list does.

A sender is counted by its organisation: the registrable domain of its address
(:func:`registrable_domain`, ``mail.github.com`` and ``github.com`` are both
``github.com``), found with the Public Suffix List that ``publicsuffixlist``
ships (offline, no hand-written suffix table).

Firestore keeps one document per alias in ``tagrelay_aliases`` (document id
``sha256(alias_key)``, see ``tagrelay.adapters.ledger.document_id``), written by
two parties that touch disjoint fields, always with merge writes:

- the operator's ``tagrelay block|lock|unblock|unlock`` (control): ``alias``,
  ``state`` (``active``, ``locked`` or ``blocked``; absent means active),
  ``lock_mode`` (``refuse`` or ``hold``), ``state_changed_at``;
- the relay (insight): ``alias``, ``first_seen``, ``last_seen``, ``messages``,
  ``spam``, ``days`` (messages per UTC day, the last 31 days only), ``domains``
  (registrable sender domain -> ``{"count", "first_seen"}``, capped) and
  ``leaks`` (flagged new domains with their evidence).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from tagrelay.core.routes import normalize

AliasState = Literal["active", "locked", "blocked"]
LockMode = Literal["refuse", "hold"]
ALIAS_STATES: tuple[AliasState, ...] = ("active", "locked", "blocked")
LOCK_MODES: tuple[LockMode, ...] = ("refuse", "hold")


def alias_key(recipient: str) -> str | None:
    """The alias a recipient address stands for (None when it is not a usable address)."""
    return normalize(recipient)


def alias_base(alias: str) -> str:
    """The alias without its ``+detail``: ``shop+x@example.org`` -> ``shop@example.org``."""
    local, _, domain = alias.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


@functools.cache
def _suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList  # loading the list costs ~0.1 s: only when used

    return PublicSuffixList()


def registrable_domain(address_or_domain: str) -> str:
    """The organisation a sender belongs to: the registrable domain of an address or domain.

    ``"Alerts <noreply@mail.github.com>"`` is not accepted (pass the address);
    ``a@mail.github.com`` and ``github.com`` give ``github.com``; ``x.foo.co.uk``
    gives ``foo.co.uk``. A domain that is itself a public suffix, or has no known
    suffix (``localhost``), stands for itself. Lower case, IDNA (``xn--``) form;
    ``""`` for an empty or unusable domain.
    """
    domain = address_or_domain.rpartition("@")[2].strip().strip(".").lower()
    if not domain or any(c.isspace() or c in "<>\"'(),;:\\[]" for c in domain):
        return ""
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    found = _suffixes().privatesuffix(domain)
    return str(found) if found else domain
