"""Whether to send again a delivery that may already have reached Mailgun (issue 12).

Mailgun's API has no idempotency key. When a send's outcome is unknown (the relay died or was
killed during it, or the request was written and no answer came back), the ledger keeps a
:class:`~tagrelay.core.ports.Doubt`, and before sending again the relay asks Mailgun's Events
API for an ``accepted`` event to the first target since the doubt began, carrying this
delivery's key as the ``tagrelay-delivery`` user variable:

- found: Mailgun has it; the delivery is recorded ``sent`` with that Mailgun id, not sent again;
- not found, and the last unsure send ended less than the settle time ago: wait (Mailgun:
  "events ... follow different routes to the event storage", so the newest page may still miss
  some; a page is trustworthy once its events are older than a threshold, "e.g. half an hour":
  https://documentation.mailgun.com/docs/mailgun/user-manual/events/event-polling);
- not found, and settled: it never reached Mailgun; send it (once).

Pure: the adapter (:mod:`tagrelay.adapters.mailgun`) walks the pages, this module reads them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from tagrelay.core.ports import DELIVERY_VARIABLE, Doubt

# The query begins this long before the unsure send started: clocks (ours, Mailgun's event
# timestamps) disagree by far less, and a wider range only costs a few more events to read.
QUERY_MARGIN_SECONDS = 60.0
# How long Mailgun surely keeps events: "one day for free accounts and up to 30 days for paid
# accounts" (https://documentation.mailgun.com/docs/mailgun/user-manual/events/); the API reference
# says "at least 3 days". Past this, "not found" may only mean "forgotten" (a late replay).
EVENTS_RETENTION_SECONDS = 24 * 3600.0

Verdict = Literal["sent", "wait", "send"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    mailgun_id: str = ""  # "sent": the id Mailgun gave the earlier send
    wait_seconds: float = 0.0  # "wait": until "not found" can be believed
    forgotten: bool = False  # "send": the unsure send is older than Mailgun surely keeps events


def query_since(doubt: Doubt) -> float:
    """The ``begin`` of the Events API query (epoch seconds, never negative)."""
    return max(0.0, doubt.since - QUERY_MARGIN_SECONDS)


def decide(found: str | None, doubt: Doubt, now: float, settle_seconds: float) -> Decision:
    """What to do with a delivery in doubt, given what the Events API answered (``found``: a Mailgun id)."""
    if found:
        return Decision("sent", mailgun_id=found)
    trusted_at = doubt.until + settle_seconds
    if now < trusted_at:
        return Decision("wait", wait_seconds=trusted_at - now)
    return Decision("send", forgotten=now - doubt.since > EVENTS_RETENTION_SECONDS)


def accepted_id(items: Iterable[Any], delivery: str, skip: Collection[str] = ()) -> str | None:
    """The Mailgun id (``<...>``, as the send API returns it) of the first ``accepted`` event in ``items``
    whose ``user-variables`` carry ``delivery``; None when none does.

    Events name the message as ``message.headers.message-id`` without the angle brackets. A
    user variable Mailgun parsed as JSON comes back as a number or an object, never equal to a
    hex key; anything malformed is skipped, not trusted. An event Mailgun flags as not
    authenticated (``flags.is-authenticated`` false: mail it received, whose sender may have
    written ``X-Mailgun-Variables``) is never taken for our send, nor is one whose id is in ``skip`` (an earlier
    send of the same delivery, before a dead-letter replay: its events carry the same key).
    """
    skipped = {str(s).strip().strip("<>") for s in skip}
    for item in items:
        if not isinstance(item, dict) or item.get("event") != "accepted":
            continue
        flags = item.get("flags")
        if isinstance(flags, dict) and flags.get("is-authenticated") is False:
            continue  # a message Mailgun received from outside (a route), not one the API sent for us
        variables = item.get("user-variables")
        if not isinstance(variables, dict) or variables.get(DELIVERY_VARIABLE) != delivery:
            continue
        message = item.get("message")
        headers = message.get("headers") if isinstance(message, dict) else None
        ident = headers.get("message-id") if isinstance(headers, dict) else None
        if isinstance(ident, str) and ident.strip("<> \t"):
            if ident.strip().strip("<>") in skipped:
                continue
            return f"<{ident.strip().strip('<>')}>"
        return "<unknown: accepted without a message-id>"
    return None
