"""Operator commands: ``tagrelay refusals list`` and ``tagrelay refusals release ID``.

Every refusal of signed mail (a 406 at ingest: no route, blocked, loop, too many
Received headers, spam refused by policy, an unrebuildable form, an internal
error; or a message the relay never delivers: a Mailgun token reused for another
message) leaves a record for 7 days: reason, alias, sender, size, time and the
message itself. ``release`` publishes that message to the inbound topic marked
``release=<id>``, so the relay delivers it despite the refusal reason (the token
binding is not checked; routes still are), exactly once: the record is marked
released with a precondition before the publish (a second release is refused),
and the relay's delivery record makes a redelivered copy a duplicate.
Against the real project (Application Default Credentials), or with ``--local``
against the emulators of a running ``tagrelay run``.

Held messages (a locked alias in ``hold`` mode: Mailgun got a 200, nothing was published)
are refusal records of kind ``held``: ``list`` marks them ``HELD`` (``--held`` shows only
them) and ``release`` delivers them like any other refusal. The relay does not check an
alias's block or lock (only ingest does), so a released message is delivered even while
the alias stays locked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from tagrelay.core.config import DEFAULT_TOPIC
from tagrelay.core.envelope import MAX_DATA_BYTES, SCHEMA, stored_digest
from tagrelay.core.headers import header_block
from tagrelay.core.ports import ClaimStore, Record
from tagrelay_tools import terminal
from tagrelay_tools.terminal import say, warn

DROPPED_ATTRIBUTES = ("deadletter_reason", "deadlettered_at", "original_pubsub_id", "replay", "release")
HELD_SCAN = 1000  # newest refusals looked through for held ones (no composite index needed)
RELEASABLE_KINDS = ("message", "held")  # "form": only a summary of a form that could not become a message


class ReleaseError(Exception):
    """A refusal that cannot be released; the message says why."""


class RefusalStore(Protocol):
    def recent_refusals(self, limit: int) -> list[Record]: ...
    def refusal_message(self, ident: str) -> bytes: ...
    def mark_released(self, ident: str, released: str) -> dict[str, Any] | None: ...
    def unmark_released(self, ident: str) -> None: ...


def printable(value: object, width: int = 0) -> str:
    """A sender-controlled value for a table cell: escaped (tagrelay_tools.terminal), cut to ``width``."""
    text = terminal.printable(value)
    return text[:width] if width else text


def rows(records: list[Record], now: float) -> list[str]:
    lines = []
    for record in records:
        data = record.data
        age = _human(max(0.0, now - float(data.get("at", now))))
        released = f" released {printable(data['released'], 25)}" if data.get("released") else ""
        held = "HELD  " if data.get("kind") == "held" else ""
        lines.append(
            f"  {record.key}  {age:>6}  {held}{printable(data.get('alias', ''), 32):<32} "
            f"from {printable(data.get('sender', ''), 40):<40} {int(data.get('size', 0)):>9} B  "
            f"{printable(data.get('reason', ''), 200)}{released}"
            + ("" if data.get("kind", "message") in RELEASABLE_KINDS else "  (form summary only)")
        )
    return lines


def release(
    store: RefusalStore,
    publish: Callable[[bytes, dict[str, str]], str],
    ident: str,
    now: datetime,
    claims: ClaimStore | None = None,
) -> str:
    """Publish a refused message for delivery despite its refusal; return the Pub/Sub id."""
    record = store.mark_released(ident, now.astimezone(UTC).isoformat())
    if record is None:
        raise ReleaseError(f"no refusal {ident!r}, or it was released already (see 'tagrelay refusals list')")
    try:
        if record.get("kind", "message") not in RELEASABLE_KINDS:
            raise ReleaseError("only a summary of the form was kept (it could not become a message): not releasable")
        if record.get("truncated"):
            raise ReleaseError("only the start of this message was kept (no claim-check bucket): not releasable")
        message = store.refusal_message(ident)
        attributes = {k: v for k, v in dict(record.get("attributes") or {}).items() if k not in DROPPED_ATTRIBUTES}
        attributes.update(schema=SCHEMA, recipient=str(record.get("alias", "")), release=ident)
        if record.get("sender"):
            attributes.setdefault("sender", str(record["sender"]))
        data = message
        if attributes.get("stored"):  # a store(notify=...) message: the relay fetches it whole from Mailgun
            attributes["digest"] = stored_digest(attributes["stored"])
        elif not attributes.get("claim"):
            attributes["digest"] = hashlib.sha256(message).hexdigest()
            if len(message) > MAX_DATA_BYTES:
                if claims is None:
                    raise ReleaseError("the message is over Pub/Sub's limit: set TAGRELAY_CLAIM_BUCKET")
                attributes["claim"] = claims.put(message)
                data = header_block(message)
        return publish(data, attributes)
    except BaseException:
        store.unmark_released(ident)  # nothing was published: the refusal can be released again
        raise


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def register(commands: Any) -> None:
    refusals = commands.add_parser("refusals", help="list or release refused signed mail (kept 7 days)")
    actions = refusals.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="id, age, alias, sender, size and reason of every refusal")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--held", action="store_true", help="only messages a locked alias holds for review")
    releasing = actions.add_parser("release", help="deliver a refused message despite the refusal, exactly once")
    releasing.add_argument("id", help="the refusal id from 'tagrelay refusals list'")
    for parser in (listing, releasing):
        parser.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
        parser.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
    listing.set_defaults(func=cmd_list)
    releasing.set_defaults(func=cmd_release)


def _store(project: str) -> Any:
    from tagrelay.adapters.claimcheck import ClaimStore as BucketStore
    from tagrelay.adapters.ledger import FirestoreLedger, default_firestore

    bucket = os.environ.get("TAGRELAY_CLAIM_BUCKET", "")
    blobs = BucketStore(bucket) if bucket else None
    return FirestoreLedger(default_firestore(project), blobs=blobs), blobs


def cmd_list(args: argparse.Namespace) -> int:
    from tagrelay_tools.ops import _project

    store, _ = _store(_project(args))
    records = store.recent_refusals(max(args.limit, HELD_SCAN) if args.held else args.limit)
    if args.held:
        records = [r for r in records if r.data.get("kind") == "held"][: args.limit]
    if not records:
        say("no held messages in the last 7 days" if args.held else "no refusals in the last 7 days")
        return 0
    what = "held message(s)" if args.held else "refusal(s)"
    say(f"{len(records)} {what}, newest first:")
    for line in rows(records, datetime.now(UTC).timestamp()):
        say(line)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from tagrelay.adapters.bus import Publisher
    from tagrelay_tools.ops import _project

    project = _project(args)
    store, blobs = _store(project)
    topic = os.environ.get("TAGRELAY_TOPIC", DEFAULT_TOPIC)
    publisher = Publisher(project, topic, timeout=10.0)
    try:
        pubsub_id = release(store, publisher.publish, args.id, datetime.now(UTC), blobs)
    except ReleaseError as exc:
        warn(f"error: {exc}")
        return 1
    say(f"released {printable(args.id)} to {topic} (Pub/Sub id {pubsub_id}); the relay delivers it once")
    return 0
