"""``tagrelay trace ID``: one message's journey, from the delivery records (and refusals).

ID is any of: a Message-ID (with or without ``<>``), a Pub/Sub message id, a Mailgun id (as the
API returned it, ``<...>``, or bare), or a delivery key (the id of the record in
``tagrelay_deliveries``). :func:`lookups` turns it into a few equality queries, each on one
field (``message_id``, ``mailgun_id``, ``pubsub_id``, and ``earlier_ids`` for the Mailgun id of a send
before a dead-letter replay; Firestore indexes single fields by
itself, so no index has to be deployed) or a read by document id, each bounded to
``MAX_RECORDS``. One Message-ID sent to several aliases has one record per alias: one journey
each. Refusal records (``tagrelay_refusals``) whose attributes carry the Message-ID are shown
too (a refusal at ingest, before publishing, has none and is found with ``tagrelay refusals list``).

:func:`journey` (pure) prints a record as what happened, with times (UTC):

    received and verified   Pub/Sub publish time (``received_at``)
    published               Pub/Sub id (``pubsub_id``)
    sent                    Mailgun id, attempts (``sent_at``, ``mailgun_id``, ``attempts``)
    delivered / failed / complained, per recipient when Mailgun said so (``recipients``)
    dead-lettered           the reason (``detail``)

Every value in a record came, at some point, from a sender (alias, Message-ID, Mailgun's reason
quoting the remote server), so everything is printed through ``terminal.say``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tagrelay_tools.terminal import say, warn

MAX_RECORDS = 20  # per query: one Message-ID to a few aliases, never a scan
QUERY_TIMEOUT_SECONDS = 10.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
STATE_WORDS = {
    "sending": "being sent (lease held)",
    "retry": "waiting for a retry",
    "sent": "sent, no event from Mailgun yet",
    "delivered": "delivered",
    "failed": "failed permanently",
    "complained": "delivered, then marked as spam",
    "dead": "dead-lettered",
}


@dataclass(frozen=True)
class Lookup:
    """One way to find records: ``field == value`` in ``collection``, or the document ``value`` (field "")."""

    collection: str
    field: str
    value: str
    op: str = "=="  # "array_contains" for a list field (``earlier_ids``)


def lookups(ident: str) -> list[Lookup]:
    """Where ID can be found; the same query is never listed twice."""
    from tagrelay.adapters.ledger import DELIVERIES, REFUSALS, document_id

    text = ident.strip()
    bare = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    found: list[Lookup] = []
    if _HEX64.fullmatch(bare.lower()):
        found += [Lookup(DELIVERIES, "", bare.lower()), Lookup(DELIVERIES, "", document_id(bare.lower()))]
    if bare.isdigit():
        found.append(Lookup(DELIVERIES, "pubsub_id", bare))
    if bare:
        for value in (f"<{bare}>", bare):
            found += [
                Lookup(DELIVERIES, "message_id", value),
                Lookup(DELIVERIES, "mailgun_id", value),
                Lookup(DELIVERIES, "earlier_ids", value, "array_contains"),  # a send before a replay
                Lookup(REFUSALS, "attributes.message_id", value),
            ]
    return list(dict.fromkeys(found))


# -- the journey (pure) --------------------------------------------------------------


def when(value: object) -> str:
    """A record time (epoch seconds, an ISO or RFC 3339 string, a datetime) as ``YYYY-MM-DD HH:MM:SSZ``."""
    moment: datetime | None = None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        moment = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromtimestamp(float(value), UTC)
        except ValueError:
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                return value.strip()
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment is None:
        return "?" + " " * 19
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _targets(data: dict[str, Any]) -> str:
    targets = data.get("targets", "")
    return ", ".join(map(str, targets)) if isinstance(targets, list | tuple) else str(targets)


def _outcome(state: str, reason: object, code: object, severity: object = "") -> str:
    words = {"delivered": "delivered", "failed": "failed", "complained": "complained (marked as spam)"}
    line = words.get(state, state)
    if state == "failed" and severity:
        line += f" ({severity})"
    detail = " ".join(str(part) for part in (code, reason) if part not in (None, "", 0))
    return f"{line}: {detail}" if detail else line


def _temporary(seen: dict[str, Any]) -> str:
    return "temporary failure, Mailgun retries: " + " ".join(
        str(p) for p in (seen.get("code"), seen.get("reason")) if p
    )


def journey(key: str, data: dict[str, Any]) -> list[str]:
    """The lines of one delivery record's journey, oldest step first."""
    state = str(data.get("state", "?"))
    lines = [
        f"delivery {key}",
        f"  alias {data.get('alias', '?')} → {_targets(data) or '?'}",
        f"  Message-ID {data.get('message_id') or '(none)'}",
    ]
    received = data.get("received_at")
    lines.append(f"  {when(received)}  received and verified" + ("" if received else " (time not recorded)"))
    if data.get("pubsub_id"):
        lines.append(f"  {when(received)}  published    Pub/Sub id {data['pubsub_id']}")
    attempts = data.get("attempts")
    tries = f", attempt {attempts}" if attempts not in (None, "", 0, 1) else ""
    mailgun_id = data.get("mailgun_id") or (data.get("detail") if state not in ("dead", "retry", "sending") else "")
    earlier = data.get("earlier_ids")
    if isinstance(earlier, list) and earlier:
        lines.append(f"  earlier sends (before a dead-letter replay): Mailgun id {', '.join(map(str, earlier))}")
    if mailgun_id:
        lines.append(f"  {when(data.get('sent_at'))}  sent         Mailgun id {mailgun_id}{tries}")
    recipients = data.get("recipients")
    if isinstance(recipients, dict) and recipients:
        for recipient, seen in sorted(recipients.items(), key=lambda kv: str(kv[0])):
            seen = seen if isinstance(seen, dict) else {}
            if seen.get("severity") == "temporary" and seen.get("state") == "sent":
                outcome = _temporary(seen)
            else:
                outcome = _outcome(
                    str(seen.get("state", "?")), seen.get("reason"), seen.get("code"), seen.get("severity")
                )
            lines.append(f"  {when(seen.get('at'))}  {recipient}: {outcome}")
    elif state in ("delivered", "failed", "complained"):
        outcome = _outcome(state, data.get("reason"), data.get("code"), data.get("severity"))
        lines.append(f"  {when(data.get('event_at'))}  {outcome}")
    elif state == "sent" and data.get("reason"):  # a temporary failure: Mailgun keeps trying
        lines.append(f"  {when(data.get('event_at'))}  {_temporary(data)}")
    if state == "dead":
        lines.append(f"  {when(data.get('updated_at'))}  dead-lettered: {data.get('detail') or '(no reason recorded)'}")
    elif state in ("sending", "retry"):
        lines.append(f"  {when(data.get('updated_at'))}  {STATE_WORDS[state]}{tries}")
    entries = [data, *(r for r in (recipients.values() if isinstance(recipients, dict) else ()) if isinstance(r, dict))]
    retrying = state == "sent" and any(entry.get("severity") == "temporary" for entry in entries)
    lines.append(
        f"  now: {'sent, Mailgun retrying after a temporary failure' if retrying else STATE_WORDS.get(state, state)}"
    )
    failed = {str(r): e for r, e in (recipients or {}).items() if isinstance(e, dict) and e.get("state") == "failed"}
    if state in ("dead", "failed") or failed:
        # quoted: a sender chose the Message-ID (and maybe a tag in the address); these lines are pasted into a shell
        replay = f"tagrelay deadletters replay --message-id {shlex.quote(str(data.get('message_id', '')))}"
        suppressed = [r for r, e in sorted(failed.items()) if str(e.get("reason", "")).startswith("suppress-")]
        if suppressed:
            lines += [f"  fix: tagrelay suppressions clear {shlex.quote(r)}" for r in suppressed]
            lines.append(f"       {replay}")
        else:
            lines.append(f"  fix the cause, then: {replay}")
    return lines


def refusal_journey(ident: str, data: dict[str, Any]) -> list[str]:
    released = data.get("released")
    return [
        f"refusal {ident}",
        f"  alias {data.get('alias', '?')}  sender {data.get('sender', '?')}",
        f"  {when(data.get('at'))}  refused: {data.get('reason', '?')}",
        f"  now: {'released as ' + str(released) if released else 'kept 7 days; tagrelay refusals release ' + ident}",
    ]


# -- reading (Firestore) -------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    collection: str
    id: str
    data: dict[str, Any]


def find(db: Any, ident: str, call: Callable[..., Any] | None = None) -> list[Found]:
    """Every record ID names, deliveries first, each once (bounded queries, each with a timeout)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from tagrelay.adapters import firestore
    from tagrelay.adapters.ledger import DELIVERIES

    def run(operation: Callable[..., Any]) -> Any:
        return (call or firestore.call)(operation, timeout=QUERY_TIMEOUT_SECONDS)

    seen: dict[tuple[str, str], Found] = {}
    for lookup in lookups(ident):
        collection = db.collection(lookup.collection)
        if not lookup.field:
            snapshot = run(collection.document(lookup.value).get)
            documents = [snapshot] if snapshot.exists else []
        else:
            query = collection.where(filter=FieldFilter(lookup.field, lookup.op, lookup.value)).limit(MAX_RECORDS)
            documents = run(query.get)
        for document in documents:
            found = Found(lookup.collection, document.id, document.to_dict() or {})
            seen.setdefault((lookup.collection, document.id), found)
    return sorted(seen.values(), key=lambda f: (f.collection != DELIVERIES, str(f.data.get("alias", "")), f.id))


def show(found: Iterable[Found]) -> None:
    for number, item in enumerate(found):
        if number:
            say("")
        if item.collection == "tagrelay_deliveries":
            say(*journey(item.id, item.data))
        else:
            say(*refusal_journey(item.id, item.data))


def json_safe(value: Any) -> Any:
    """A record as JSON: times as ISO strings, bytes (a refused message) left out."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items() if not isinstance(v, bytes | bytearray)}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# -- the command line ----------------------------------------------------------------


def register(commands: Any) -> None:
    trace = commands.add_parser(
        "trace",
        help="one message's journey: received, published, sent, delivered/failed/dead-lettered, with times",
        description="ID: a Message-ID (with or without <>), a Pub/Sub message id, a Mailgun id or a delivery key.",
    )
    trace.add_argument("id")
    trace.add_argument("--json", action="store_true", help="the records as one JSON document")
    trace.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
    trace.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
    trace.set_defaults(func=cmd_trace)


def cmd_trace(args: argparse.Namespace) -> int:
    from google.api_core.exceptions import GoogleAPIError

    from tagrelay.adapters.ledger import default_firestore
    from tagrelay.core.errors import LedgerUnavailable
    from tagrelay_tools.ops import project_of

    if not lookups(args.id):
        warn("error: give a Message-ID, a Pub/Sub id, a Mailgun id or a delivery key")
        return 2
    project = project_of(args)
    try:
        found = find(default_firestore(project)(), args.id)
    except (LedgerUnavailable, GoogleAPIError) as exc:
        warn(f"error: cannot read Firestore in {project}: {getattr(exc, 'reason', type(exc).__name__)}")
        return 1
    if args.json:
        say(json.dumps([{"collection": f.collection, "id": f.id, "record": json_safe(f.data)} for f in found]))
    elif found:
        show(found)
    else:
        say(
            f"nothing recorded for {args.id} in {project} (records are kept 8 days; refusals at ingest: "
            "tagrelay refusals list)"
        )
    return 0 if found else 1
