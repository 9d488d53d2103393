"""Control without a redeploy (issue 14): block and lock an alias, and the one-click block link. Pure.

The state lives in ``tagrelay_aliases`` (schema in :mod:`tagrelay.core.aliases`); this
module decides from it and never does I/O. Control writes these fields of an alias
document (merge writes, disjoint from the relay's insight fields):

- ``alias`` (the :func:`~tagrelay.core.aliases.alias_key`), ``state`` (``active``,
  ``locked``, ``blocked``; absent means active), ``lock_mode`` (``refuse`` or ``hold``),
  ``state_changed_at`` (seconds since the epoch);
- ``allowed``: the sender organisations a lock lets through, a snapshot of the keys of
  the relay's ``domains`` map taken when the alias was locked (plus any the owner added
  with ``--allow``). A snapshot, not the live map: what passes is what the owner saw when
  locking, and a sender that was held or refused, or delivered only because the owner
  released it, never becomes "allowed" by the relay counting it later;
- ``unblocked_at``: when the owner last unblocked it; a block link made before that does
  nothing (the owner's later decision wins over an old link).

**Who passes a lock.** The sender's organisation is the registrable domain of the single
``From`` address (the envelope sender when ``From`` has not exactly one address). ``From``
is written by the sender, so it counts only when Mailgun's own verdicts (the prepended
``X-Mailgun-Spf`` / ``X-Mailgun-Dkim-Check-Result`` run, read as :mod:`tagrelay.core.reply`
reads it) tie it to that organisation, DMARC-style with relaxed alignment:

- SPF ``Pass`` and the envelope sender in the same organisation as ``From``; or
- DKIM ``Pass`` and every ``DKIM-Signature`` of the message signed by (``d=``) that
  organisation (Mailgun's verdict does not say which signature passed, so one stray
  signature of another domain makes the DKIM route fail).

A locked alias lets a message through only when its organisation is allowed *and*
authenticated this way. Everything else is refused (406) or held (200 to Mailgun, kept as
a held refusal record, released with ``tagrelay refusals release``), the owner's choice.
Locking is about unwanted mail, not a proof of who wrote: a legitimate sender whose mail is
not aligned (a mailing list, some bulk senders) is held or refused like a stranger, which is
why ``hold`` is the default mode.

**The block link.** ``<ingest URL>/block?a=<alias>&x=<expiry>&s=<mac>``, the MAC
``HMAC-SHA256(link key, "block\\n" + alias + "\\n" + expiry)``, the link key
``HMAC-SHA256(reply key, "tagrelay block-link v1")``: derived from the reply key (32+
random characters that ingest, the relay and the owner's tools already have; the route key
travels in Mailgun's route URL and so is known to one more party), with a label of its own
so a block-link MAC is never a reverse-address MAC or the other way round. Valid
:data:`LINK_SECONDS` (7 days); links made under the previous reply key keep working while
it is set. GET shows a confirmation page (mail scanners and link previews fetch links:
a GET never changes anything); POST blocks.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import html
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from tagrelay.core.aliases import (
    ALIAS_STATES,
    LOCK_MODES,
    AliasState,
    LockMode,
    alias_base,
    alias_key,
    registrable_domain,
)
from tagrelay.core.errors import LedgerUnavailable, TransientError
from tagrelay.core.headers import Field, first
from tagrelay.core.log import event
from tagrelay.core.reply import mailgun_verdicts

DEFAULT_LOCK_MODE: LockMode = "hold"
BLOCKED_REASON = "blocked alias (tagrelay block)"
LINK_SECONDS = 7 * 24 * 3600
LINK_LABEL = b"tagrelay block-link v1"
LINK_PATH = "/block"
MAX_ALLOWED = 500  # organisations a lock lets through (Firestore documents are capped at 1 MiB)
_DIGITS = re.compile(r"[0-9]{1,12}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DKIM_D = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)

Action = Literal["pass", "refuse", "hold"]


@dataclass(frozen=True)
class Control:
    """The control state of one alias (only non-active ones are cached)."""

    alias: str
    state: AliasState
    lock_mode: LockMode = DEFAULT_LOCK_MODE
    allowed: frozenset[str] = frozenset()
    changed_at: float = 0.0


def from_record(data: Mapping[str, Any]) -> Control | None:
    """A control state from an alias document (None when it is active or unreadable)."""
    alias = alias_key(str(data.get("alias", "")))
    state = data.get("state", "active")
    if alias is None or state not in ALIAS_STATES or state == "active":
        return None
    mode = data.get("lock_mode", DEFAULT_LOCK_MODE)
    allowed = data.get("allowed") or []
    return Control(
        alias=alias,
        state=state,
        lock_mode=mode if mode in LOCK_MODES else DEFAULT_LOCK_MODE,
        allowed=frozenset(str(d).lower() for d in allowed if isinstance(d, str)),
        changed_at=float(data.get("state_changed_at", 0.0) or 0.0),
    )


@dataclass(frozen=True)
class Snapshot:
    """Every alias that is not active, as one read saw them."""

    controls: Mapping[str, Control] = field(default_factory=dict)
    taken_at: float = 0.0

    @staticmethod
    def of(records: Iterable[Mapping[str, Any]], taken_at: float) -> Snapshot:
        found = (from_record(r) for r in records)
        return Snapshot({c.alias: c for c in found if c is not None}, taken_at)

    def lookup(self, recipient: str) -> Control | None:
        """The control that applies to a recipient: a block of the address or of its ``+detail`` base
        first, then a lock of the address, then a lock of its base."""
        alias = alias_key(recipient)
        if alias is None:
            return None
        candidates = [self.controls.get(alias), self.controls.get(alias_base(alias))]
        present = [c for c in candidates if c is not None]
        blocked = next((c for c in present if c.state == "blocked"), None)
        return blocked or (present[0] if present else None)


@dataclass(frozen=True)
class SenderOrg:
    """Who a message says it is from, and whether Mailgun's verdicts tie it to that organisation."""

    org: str  # registrable domain ("" when there is no usable address)
    authenticated: bool
    how: str  # "SPF", "DKIM", or why neither holds


def sender_org(fields: list[Field], envelope_sender: str) -> SenderOrg:
    """The sender's organisation from ``From`` (else the envelope sender), checked against Mailgun's verdicts."""
    from_field = first(fields, "from")
    addresses = [a for _, a in email.utils.getaddresses([from_field.unfolded])] if from_field is not None else []
    addresses = [a for a in addresses if "@" in a]
    org = registrable_domain(addresses[0]) if len(addresses) == 1 else registrable_domain(envelope_sender or "")
    if not org:
        return SenderOrg("", False, "no sender address")
    verdicts = mailgun_verdicts(fields)
    if verdicts.spf == "pass" and registrable_domain(envelope_sender or "") == org:
        return SenderOrg(org, True, "SPF")
    signers = [registrable_domain(d) for d in dkim_domains(fields)]
    if verdicts.dkim == "pass" and signers and all(s == org for s in signers):
        return SenderOrg(org, True, "DKIM")
    why = f"not authenticated (SPF {verdicts.spf or 'missing'}, DKIM {verdicts.dkim or 'missing'}"
    if signers and any(s != org for s in signers):
        why += ", signed by another domain"
    return SenderOrg(org, False, why + ")")


def dkim_domains(fields: list[Field]) -> list[str]:
    """The ``d=`` of every DKIM-Signature field (a signature without one counts as an unknown signer)."""
    found = []
    for f in fields:
        if f.name == "dkim-signature":
            match = _DKIM_D.search(f.unfolded)
            found.append(match.group(1).strip().lower() if match else "?")
    return found


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str = ""


def decide(control: Control | None, sender: SenderOrg) -> Decision:
    """What ingest does with a signed, routable message to an alias under ``control``."""
    if control is None or control.state == "active":
        return Decision("pass")
    if control.state == "blocked":
        return Decision("refuse", BLOCKED_REASON)
    if sender.org and sender.org in control.allowed:
        if sender.authenticated:
            return Decision("pass")
        reason = f"locked alias (tagrelay lock): From {sender.org} {sender.how}"
    else:
        reason = f"locked alias (tagrelay lock): sender domain {sender.org or '(none)'} not allowed"
    return Decision(control.lock_mode, reason)


# -- the one-click block link --------------------------------------------------------------


def link_key(reply_key: str) -> bytes:
    """The block-link key, derived from the reply key under its own label."""
    return hmac.new(reply_key.encode("utf-8"), LINK_LABEL, hashlib.sha256).digest()


def link_mac(key: bytes, alias: str, expiry: int) -> str:
    return hmac.new(key, f"block\n{alias}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def block_link(base_url: str, alias: str, now: float, key: bytes, seconds: int = LINK_SECONDS) -> str:
    """The signed link that blocks ``alias``, valid ``seconds`` from ``now``; ``base_url`` is ingest's URL."""
    normal = alias_key(alias)
    if normal is None:
        raise ValueError(f"{alias!r} is not an address")
    expiry = int(now) + seconds
    query = urlencode({"a": normal, "x": str(expiry), "s": link_mac(key, normal, expiry)})
    return f"{base_url.rstrip('/')}{LINK_PATH}?{query}"


class BadLink(Exception):
    """A link that must not do anything: forged, altered, expired or malformed."""


@dataclass(frozen=True)
class Link:
    alias: str
    expiry: int

    @property
    def issued_at(self) -> int:
        return self.expiry - LINK_SECONDS


def check_link(params: Mapping[str, str], now: float, keys: Sequence[bytes]) -> Link:
    """The link's alias and expiry when its MAC verifies under one of ``keys`` and it has not expired."""
    alias_given, expiry_given, mac = params.get("a", ""), params.get("x", ""), params.get("s", "").lower()
    alias = alias_key(alias_given) if len(alias_given) <= 254 else None
    if alias is None or alias != alias_given or not _DIGITS.fullmatch(expiry_given) or not _HEX64.fullmatch(mac):
        raise BadLink("not a block link")
    expiry = int(expiry_given)
    if not any(hmac.compare_digest(link_mac(key, alias, expiry), mac) for key in keys):
        raise BadLink("this link is not valid (altered or made up)")
    if expiry < now:
        raise BadLink("this link has expired: make a new one with 'tagrelay block-link'")
    if expiry > now + LINK_SECONDS + 300:
        raise BadLink("this link is not valid (expiry too far ahead)")
    return Link(alias, expiry)


LinkAnswer = Literal["blocked", "already", "unblocked-since"]


def link_change(record: Mapping[str, Any] | None, link: Link, now: float) -> dict[str, Any] | None:
    """The fields a block link writes to the alias document, or None when it changes nothing."""
    current = record or {}
    if current.get("state") == "blocked":
        return None
    if float(current.get("unblocked_at", 0) or 0) > link.issued_at:
        return None
    return {"alias": link.alias, "state": "blocked", "state_changed_at": now}


def link_answer(record: Mapping[str, Any] | None, link: Link) -> LinkAnswer:
    """What a link that changed nothing found (``record`` as it was read)."""
    if (record or {}).get("state") == "blocked":
        return "already"
    return "unblocked-since"


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def page(title: str, text: str, form: Mapping[str, str] | None = None) -> str:
    """A small HTML page; every value is escaped. ``form``: hidden fields of a POST back to the link."""
    body = f"<p>{html.escape(text)}</p>"
    if form is not None:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in form.items()
        )
        body += f'<form method="post" action="block">{hidden}<button type="submit">Block this alias</button></form>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title></head>"
        f'<body style="font-family:sans-serif;max-width:40em;margin:2em auto"><h1>{html.escape(title)}</h1>'
        f"{body}</body></html>"
    )


# -- the owner's commands (tagrelay block|unblock|lock|unlock) -------------------------------


def block_change(record: Mapping[str, Any] | None, alias: str, now: float) -> dict[str, Any] | None:
    if (record or {}).get("state") == "blocked":
        return None
    return {"alias": alias, "state": "blocked", "state_changed_at": now}


def unblock_change(record: Mapping[str, Any] | None, alias: str, now: float) -> dict[str, Any] | None:
    if (record or {}).get("state") != "blocked":
        return None
    return {"alias": alias, "state": "active", "state_changed_at": now, "unblocked_at": now}


def unlock_change(record: Mapping[str, Any] | None, alias: str, now: float) -> dict[str, Any] | None:
    if (record or {}).get("state") != "locked":
        return None
    return {"alias": alias, "state": "active", "state_changed_at": now}


def seen_domains(record: Mapping[str, Any] | None) -> list[str]:
    """The organisations the relay has seen writing to the alias (the keys of ``domains``)."""
    domains = (record or {}).get("domains") or {}
    return sorted(str(d).lower() for d in domains if isinstance(d, str) and d) if isinstance(domains, Mapping) else []


def suspect_domains(record: Mapping[str, Any] | None) -> list[str]:
    """The seen organisations a lock does not snapshot: those flagged as a leak (``leaks``) and every one
    first seen since the first flagged leak (the fourth unrelated sender makes an alias look shared,
    and is never flagged itself)."""
    current = record or {}
    leaks = current.get("leaks") or {}
    leaks = leaks if isinstance(leaks, Mapping) else {}
    flagged = {str(d).lower() for d in leaks if isinstance(d, str)}
    times = [_number(v.get("at")) for v in leaks.values() if isinstance(v, Mapping)]
    since = min((t for t in times if t is not None), default=None)
    domains = current.get("domains") or {}
    domains = domains if isinstance(domains, Mapping) else {}
    later = set()
    if since is not None:
        for name, entry in domains.items():
            first_seen = _number(entry.get("first_seen")) if isinstance(entry, Mapping) else None
            if isinstance(name, str) and (first_seen is None or first_seen >= since):
                later.add(name.lower())
    return sorted((flagged | later) & set(seen_domains(current)))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def lock_change(
    record: Mapping[str, Any] | None, alias: str, mode: LockMode, now: float, also: Iterable[str] = ()
) -> dict[str, Any] | None:
    """Lock to the organisations seen so far (a snapshot of ``domains``) plus ``also``; None when nothing changes.

    Locking a locked alias again keeps what it allowed and adds what has been seen since. A domain the
    relay flagged as a leak, or first saw since the first flagged leak (:func:`suspect_domains`), wrote
    to the alias but is not snapshotted: the leak notice tells the owner that locking lets only the
    domains known *before* it through. ``also`` (``--allow``) still lets one through on purpose.
    """
    current = record or {}
    kept = current.get("allowed") or [] if current.get("state") == "locked" else []
    allowed = sorted(
        (set(seen_domains(current)) - set(suspect_domains(current)))
        | {str(d) for d in kept if isinstance(d, str)}
        | {registrable_domain(d) for d in also if registrable_domain(d)}
    )
    allowed = allowed[:MAX_ALLOWED]
    if current.get("state") == "locked" and current.get("lock_mode") == mode and current.get("allowed") == allowed:
        return None
    return {"alias": alias, "state": "locked", "lock_mode": mode, "allowed": allowed, "state_changed_at": now}


# -- the cache ingest reads through ---------------------------------------------------------

DEFAULT_CACHE_SECONDS = 30.0
RETRY_SECONDS = 5.0  # after a failed refresh, the next attempt waits this long (not one per post)
COLD_WAIT_SECONDS = 10.0


class ControlCache:
    """The control states of every non-active alias, read at most every ``seconds``.

    - Fresh: served from memory (no round trip per post).
    - Stale: the first caller refreshes (one query); others keep the last snapshot meanwhile
      (at most one refresh in flight per instance).
    - A refresh that fails: the last good snapshot is served, with a WARNING, and the next
      attempt waits :data:`RETRY_SECONDS`; an alias blocked before the outage stays blocked.
    - Cold and unreadable (no snapshot yet): LedgerUnavailable, so ingest answers 503 and
      Mailgun retries for hours. Publishing without knowing the state could forward mail of a
      blocked alias; refusing would lose mail; a 503 loses nothing.
    """

    def __init__(
        self,
        load: Callable[[], list[dict[str, Any]]],
        seconds: float = DEFAULT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._load = load
        self._seconds = seconds
        self._retry = min(retry_seconds, seconds)
        self._clock = clock
        self._condition = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._next = float("-inf")  # when the next refresh is due
        self._refreshing = False

    def current(self) -> Snapshot:
        with self._condition:
            now = self._clock()
            snapshot = self._snapshot
            if now < self._next:
                if snapshot is None:
                    raise LedgerUnavailable("alias states unknown (the last read failed moments ago)")
                return snapshot
            if self._refreshing:
                if snapshot is not None:
                    return snapshot
                self._condition.wait_for(lambda: not self._refreshing, timeout=COLD_WAIT_SECONDS)
                if self._snapshot is None:
                    raise LedgerUnavailable("alias states unknown (the first read failed)")
                return self._snapshot
            self._refreshing = True
        return self._refresh(now, snapshot)

    def _refresh(self, now: float, previous: Snapshot | None) -> Snapshot:
        fresh: Snapshot | None = None
        reason = ""
        try:
            fresh = Snapshot.of(self._load(), now)
        except TransientError as exc:
            reason = exc.reason
        except Exception as exc:  # a programming error must not stop mail either: same as an outage
            reason = f"unexpected {type(exc).__name__}"
        with self._condition:
            self._refreshing = False
            if fresh is not None:
                self._snapshot, self._next = fresh, now + self._seconds
            else:
                self._next = now + self._retry
            self._condition.notify_all()
        if fresh is not None:
            return fresh
        if previous is None:
            event(logging.ERROR, f"alias states unreadable: {reason}", stage="ingest", outcome="http 503")
            raise LedgerUnavailable(f"alias states unreadable ({reason})")
        age = now - previous.taken_at
        event(
            logging.WARNING,
            f"alias states not refreshed ({reason}); serving the snapshot read {age:.0f}s ago",
            stage="ingest",
            outcome="stale alias states",
            reason=reason,
        )
        return previous
