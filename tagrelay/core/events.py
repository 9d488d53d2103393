"""Mailgun's event webhooks, pure: read and verify one post, and what it does to a delivery record.

A webhook post is JSON ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``
(Mailgun: "Webhook payloads" and "Securing webhooks"), signed like a route post: hex
HMAC-SHA256 of ``timestamp + token`` under the HTTP webhook signing key
(:func:`tagrelay.core.inbound.check_signature`: constant time, timestamp window).

The body is read whole up to :data:`MAX_BODY_BYTES` (256 KiB; Mailgun's event documents are a
few KiB) before anything is parsed; more, or anything that is not such a JSON object, is
``BadRequest`` (400). A signed post whose ``event-data`` cannot be read is ``Undeliverable``
(406: Mailgun's "rejected, do not retry"; a retry of it would fail the same way).

Every forward carries its delivery key as the user variable ``tagrelay-delivery``
(:data:`tagrelay.core.ports.DELIVERY_VARIABLE`); an event without one (mail someone else sent
through the domain, an owner notice) is not ours: answered 200 and ignored. A sender controls
nothing here: the user variables are ours (the rewrite drops every ``X-Mailgun-*`` header, so
``X-Mailgun-Variables`` cannot add one), the recipient is a route's target.

The transition (:func:`apply`) is the one rule both ledgers use. Per recipient, the state only
rises: ``sent`` < ``delivered`` = ``failed`` < ``complained`` (of two equal ranks the first
wins); a temporary failure records its reason and time without leaving ``sent``. The record's
``state`` is the most telling of its recipients' (``complained`` > ``failed`` > ``delivered``
> ``sent``), and never lower than it was: for one target this is exactly the rank above; with
several, one target's permanent failure shows even after another's delivery. Any event proves
Mailgun accepted the message, so a record still ``sending`` or ``retry`` (the webhook can come
before the relay's own ``sent`` write) moves to at least ``sent`` and adopts the event's Mailgun
id. An event for another send of the same message (a Mailgun id other than the record's, or one of
its ``earlier_ids``: the sends before a dead-letter replay, kept while the replay's own send is not yet
recorded) is stale and changes nothing. A target a replay spared (it did not fail; the replay goes to the
failed ones only) keeps the Mailgun id of the send that reached it in its ``recipients`` entry: that send's
events still count for it, and never lift the replay's own lease.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tagrelay.core.errors import BadRequest, Undeliverable
from tagrelay.core.headers import clean_text
from tagrelay.core.inbound import check_signature
from tagrelay.core.ports import DELIVERY_VARIABLE

MAX_BODY_BYTES = 256 * 1024
# What the relay sent is kept until its outcome is known (a bounce needs it for the dead letter):
# in the delivery record up to this size (Firestore caps a document at 1 MiB), else in the claim-check
# bucket under ``sent/``; a claim-checked message keeps its claim object.
KEEP_INLINE_BYTES = 512 * 1024
KEPT_PREFIX = "sent/"
MAX_TEXT_CHARS = 500  # reason, message and ids kept and logged from an event, cut
MAX_RECIPIENTS = 50  # per record: the route's targets (Mailgun's events name nothing else)
MAX_EARLIER_IDS = 20  # Mailgun ids of a record's sends before a dead-letter replay, whose events are stale
_KEY = re.compile(r"[0-9a-f]{64}")
SUPPRESSION_REASONS = {
    "suppress-bounce": "bounces",
    "suppress-complaint": "complaints",
    "suppress-unsubscribe": "unsubscribes",
}

Kind = Literal["delivered", "failed", "temporary", "complained", "other"]
# The rank of a recipient's state; a record's state ranks by ORDER (most telling last).
RANK = {"sending": 0, "retry": 0, "dead": 0, "": 0, "sent": 1, "delivered": 2, "failed": 2, "complained": 3}
ORDER = {"sending": 0, "retry": 0, "dead": 0, "": 0, "sent": 1, "delivered": 2, "failed": 3, "complained": 4}
FINAL = frozenset({"delivered", "failed", "complained"})


@dataclass(frozen=True)
class Signature:
    timestamp: int
    token: str


@dataclass(frozen=True)
class Event:
    """What one event says, cleaned and bounded (every string one printable line)."""

    kind: Kind
    name: str  # Mailgun's ``event`` as sent ("delivered", "failed", "opened"...)
    key: str  # the delivery key ("" when the event is not about one of our forwards)
    recipient: str
    mailgun_id: str  # as the API returned it, with <> ("" when the event has none)
    at: float  # the event's timestamp
    event_id: str = ""
    severity: str = ""
    reason: str = ""
    code: int = 0
    message: str = ""

    @property
    def suppression(self) -> str:
        """The suppression list behind a failure ("bounces", "complaints", "unsubscribes"), else ""."""
        return SUPPRESSION_REASONS.get(self.reason, "") if self.kind == "failed" else ""

    def describe(self) -> str:
        """Mailgun's verdict in one line: reason, code and message."""
        parts = [self.reason or self.name, str(self.code) if self.code else "", self.message]
        return " ".join(p for p in parts if p)


def read_post(body: bytes, key: bytes, now: float, max_age_seconds: float) -> tuple[Signature, dict[str, Any]]:
    """Parse and verify one webhook post: its signature and its ``event-data`` (not yet read).

    BadRequest (400) for what is not a JSON event post or is too large; BadSignature (401)
    for a bad, missing or stale signature.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"event post over {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("event post is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("signature"), dict):
        raise BadRequest("not a Mailgun event webhook (no signature object)")
    signature = document["signature"]
    fields = {name: signature.get(name) for name in ("timestamp", "token", "signature")}
    strings = {name: str(value) for name, value in fields.items() if isinstance(value, (str, int)) and value != ""}
    stamp = check_signature(strings, key, now, max_age_seconds)
    return Signature(stamp, strings["token"]), document.get("event-data")  # type: ignore[return-value]


def read_event(data: Any) -> Event:
    """The event of a verified post. Undeliverable (406) when ``event-data`` is not an event."""
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise Undeliverable("signed, but event-data is not a Mailgun event")
    name = _text(data["event"], 40)
    severity = _text(data.get("severity"), 20)
    if name == "delivered":
        kind: Kind = "delivered"
    elif name in ("failed", "rejected"):
        kind = "temporary" if name == "failed" and severity == "temporary" else "failed"
    elif name == "complained":
        kind = "complained"
    else:
        kind = "other"
    variables = data.get("user-variables")
    key = variables.get(DELIVERY_VARIABLE) if isinstance(variables, dict) else None
    key = key if isinstance(key, str) and _KEY.fullmatch(key) else ""
    status = _object(data.get("delivery-status"))
    headers = _object(_object(data.get("message")).get("headers"))
    bare = _text(headers.get("message-id"), MAX_TEXT_CHARS).strip("<>")
    stamp = data.get("timestamp")
    return Event(
        kind=kind,
        name=name,
        key=key,
        recipient=_text(data.get("recipient"), 320).lower(),
        mailgun_id=f"<{bare}>" if bare else "",
        at=float(stamp) if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else 0.0,
        event_id=_text(data.get("id"), 100),
        severity=severity,
        reason=_text(data.get("reason"), 100),
        code=_code(status.get("code")),
        message=_text(status.get("message") or status.get("description"), MAX_TEXT_CHARS),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any, limit: int) -> str:
    return clean_text(value[: limit * 4])[:limit] if isinstance(value, str) else ""


def _code(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 <= value < 10_000 else 0
    if isinstance(value, str) and value.isdigit() and len(value) <= 4:
        return int(value)
    return 0


# -- the transition -------------------------------------------------------------------

Outcome = Literal["applied", "unchanged", "stale", "early"]


@dataclass(frozen=True)
class Change:
    """What an event does to a record: the fields to write (empty: nothing), and what it meant."""

    outcome: Outcome  # "early": a permanent failure before the relay kept the message (answer 503)
    fields: dict[str, Any]
    before: str  # the record's state before
    after: str  # and after
    failed_now: bool = False  # this event moved its recipient to failed: dead-letter and notify
    complained_now: bool = False


def _most_telling(state: str, recipients: Mapping[str, Mapping[str, Any]]) -> str:
    """``state``, raised to the most telling of the recipients' states."""
    for entry in recipients.values():
        seen = str(entry.get("state", ""))
        if ORDER.get(seen, 0) > ORDER.get(state, 0):
            state = seen
    return state


def same_id(a: str, b: str) -> bool:
    return a.strip("<>") == b.strip("<>")


def apply(record: Mapping[str, Any], event: Event, now: float) -> Change:
    """The change ``event`` makes to the delivery ``record`` (pure; see the module docstring)."""
    before = str(record.get("state", ""))
    current = str(record.get("mailgun_id", "") or "")
    recipients: dict[str, dict[str, Any]] = {
        str(k): dict(v) for k, v in (record.get("recipients") or {}).items() if isinstance(v, Mapping)
    }
    old = recipients.get(event.recipient)
    own = str(old.get("mailgun_id", "") or "") if old else ""  # a target a replay spared: its own send's id
    if own:
        stale = not same_id(own, event.mailgun_id)
    else:
        stale = (current and not same_id(current, event.mailgun_id)) or earlier_send(record, event)
    if not event.mailgun_id or stale:
        return Change("stale", {}, before, before)  # another send of this message, or no way to tell
    if event.kind == "other":
        return Change("unchanged", {}, before, before)
    was = str(old.get("state", "sent")) if old else "sent"
    new: dict[str, Any] | None = None
    if event.kind == "temporary":
        if RANK.get(was, 0) <= RANK["sent"]:  # after the outcome, a late temporary failure says nothing new
            new = {"state": "sent", "reason": event.reason, "code": event.code, "at": event.at, "severity": "temporary"}
    elif RANK[event.kind] > RANK.get(was, 0):
        new = {"state": event.kind, "reason": event.reason, "code": event.code, "at": event.at}
    if new is not None and own:
        new["mailgun_id"] = own
    # The event proves Mailgun accepted the record's current send (not so for an earlier send a replay spared).
    promote = not own and (not current or RANK.get(before, 0) < RANK["sent"])
    if new is None and not promote:
        return Change("unchanged", {}, before, before)  # a duplicate, or out of order: never back
    failed_now = new is not None and new["state"] == "failed"
    if failed_now and not record.get("attributes") and before in ("sending", "retry"):
        return Change("early", {}, before, before)  # the relay's sent write (with the message) comes next
    if new is not None and event.recipient and (old is not None or len(recipients) < MAX_RECIPIENTS):
        recipients[event.recipient] = new
    if ORDER.get(before, 0) >= ORDER["sent"] or promote:
        after = _most_telling(before if ORDER.get(before, 0) >= ORDER["sent"] else "sent", recipients)
    else:  # a spared target's event while the replay's own send is not recorded: the lease stays as it is
        after = before
    fields: dict[str, Any] = {"state": after, "recipients": recipients, "updated_at": now}
    if new is not None:
        fields.update(event_at=event.at, reason=event.reason, code=event.code, severity=event.severity)
        fields["event_message"] = event.message
    if not current and not own:
        fields.update(mailgun_id=event.mailgun_id, detail=event.mailgun_id, lease_until=0)
    if _all_delivered(record, recipients):
        fields.update(message=None, blob=None)  # the kept copy is no longer needed (None deletes a field)
    complained_now = new is not None and new["state"] == "complained"
    return Change("applied", fields, before, after, failed_now=failed_now, complained_now=complained_now)


def earlier_send(record: Mapping[str, Any], event: Event) -> bool:
    """Whether ``event`` is about a send before this record's current one (a dead-letter replay took the
    record over: its ``mailgun_id`` is empty until the new send is recorded, and the old id is kept in
    ``earlier_ids``), so it can never pass for the new send's own early event."""
    earlier = record.get("earlier_ids") or []
    return isinstance(earlier, list) and any(same_id(str(x), event.mailgun_id) for x in earlier)


def earlier_ids(record: Mapping[str, Any]) -> list[str]:
    """The ``earlier_ids`` of a record taken over for a new send: those it had, and its current Mailgun id."""
    earlier = (
        [str(x) for x in (record.get("earlier_ids") or []) if x] if isinstance(record.get("earlier_ids"), list) else []
    )
    current = str(record.get("mailgun_id", "") or "")
    if current and not any(same_id(current, x) for x in earlier):
        earlier.append(current)
    return earlier[-MAX_EARLIER_IDS:]


def carried_over(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The recipients a record taken over for a dead-letter replay keeps, when a target of it failed: every
    target but the failed ones (delivered, complained, or with no outcome yet from the recorded send), each
    with the Mailgun id of the send that went to it (``mailgun_id`` in its entry: its late events still
    count). The replay is sent to the others only; none of these gets a second copy. A replay taken over
    again after a retry keeps what it spared."""
    raw = record.get("recipients") or {}
    recipients = {str(t): r for t, r in raw.items() if isinstance(r, Mapping)} if isinstance(raw, Mapping) else {}
    if not any(r.get("state") == "failed" for r in recipients.values()):
        return {t: dict(r) for t, r in recipients.items() if r.get("mailgun_id")}  # a replay's retry, or nothing
    current = str(record.get("mailgun_id", "") or "")
    targets = [t.strip().lower() for t in str(record.get("targets", "")).split(",") if t.strip()]
    carried: dict[str, dict[str, Any]] = {}
    for target in dict.fromkeys([*targets, *recipients]):
        seen = recipients.get(target)
        if seen is None and not current:
            continue  # no recorded send went to it (a replay's own target): it is sent
        entry = dict(seen) if seen is not None else {"state": "sent"}
        if entry.get("state") == "failed":
            continue
        if current and not entry.get("mailgun_id"):
            entry["mailgun_id"] = current
        carried[target] = entry
    return carried


def _all_delivered(record: Mapping[str, Any], recipients: Mapping[str, Mapping[str, Any]]) -> bool:
    """Every target of the record has its outcome, and none failed: the kept copy can go."""
    targets = [t.strip().lower() for t in str(record.get("targets", "")).split(",") if t.strip()]
    wanted = targets or list(recipients)
    return bool(wanted) and all(
        str(recipients.get(t, {}).get("state", "")) in ("delivered", "complained") for t in wanted
    )


@dataclass(frozen=True)
class Recorded:
    """What the ledger did with one event post.

    ``outcome``: "replayed" (the token was used before: 401, nothing written), "unknown" (no
    such delivery record, or not about one: the token is spent, nothing else), or the
    :class:`Change`'s outcome ("early" writes nothing at all).
    """

    outcome: Literal["replayed", "unknown", "applied", "unchanged", "stale", "early"]
    change: Change | None = None
    record: dict[str, Any] | None = None  # the record the change was decided on


def token_expiry(stamp: int, max_age_seconds: float) -> float:
    """How long a used token is kept: as long as its timestamp passes the window (then it is stale anyway)."""
    return stamp + max_age_seconds + 300


def sent_fields(record: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The relay's ``sent`` write over what is there now: events that came first (same Mailgun id) keep their
    higher state, and so do the targets a replay spared; a previous send's events give way to ``sent``."""
    out = {**fields, "state": "sent"}
    if record is None:
        return out
    state = str(record.get("state", ""))
    current = str(record.get("mailgun_id", "") or "")
    raw = record.get("recipients") or {}
    recipients = {str(k): v for k, v in raw.items() if isinstance(v, Mapping)} if isinstance(raw, Mapping) else {}
    if current and not same_id(current, str(fields.get("mailgun_id", ""))):
        if recipients:
            out["recipients"] = {}  # what events said was about another send, not this one
        return out
    if current and ORDER.get(state, 0) > ORDER["sent"]:
        out["state"] = state
    out["state"] = _most_telling(str(out["state"]), recipients)
    if _all_delivered(record, recipients):
        out.pop("message", None)  # delivered everywhere already: nothing to keep for a bounce
        out.pop("blob", None)
    return out


def accepted(record: Mapping[str, Any]) -> bool:
    """Whether an event already proved Mailgun accepted this send (then the relay's ``dead`` or
    ``retry`` must not overwrite it: Mailgun has the message, though the relay never heard so)."""
    return bool(record.get("mailgun_id")) and ORDER.get(str(record.get("state", "")), 0) >= ORDER["sent"]


def retakes(record: Mapping[str, Any]) -> bool:
    """Whether a dead-letter replay sends this record's message again: dead, or a target failed."""
    if record.get("state") in ("dead", "failed"):
        return True
    recipients = record.get("recipients") or {}
    return any(isinstance(r, Mapping) and r.get("state") == "failed" for r in recipients.values())
