"""Operator commands: ``tagrelay aliases`` and ``tagrelay senders ALIAS`` (issue 14, the insight).

``aliases`` prints one line per alias the relay has forwarded mail for: messages (all
and the last 30 days), distinct sender domains, first and last seen, spam share, state
(``active`` when the control fields are absent), refusals (records of
``tagrelay_refusals`` whose alias matches, kept 7 days: one bounded scan of their alias field) and
the leak flag with the flagged domains. ``senders ALIAS`` lists the alias's sender
domains with counts and first seen. ``--json`` prints one JSON document for scripts.
``aliases --links`` adds, for each alias whose route has ``block_link = true``, the signed
one-click link that blocks it (``tagrelay block-link``: needs ingest's URL and the reply key).
Against the real project (Application Default Credentials), or with ``--local`` against
the emulators of a running ``tagrelay run``. Every value a sender wrote is escaped.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagrelay.core.insight import last_30_days
from tagrelay.core.routes import normalize
from tagrelay_tools.terminal import printable, say, say_json, warn

DEFAULT_LIMIT = 500
REFUSAL_SCAN = 5000  # refusal records read at most (newest first; they are kept 7 days)


def _when(seconds: object) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(seconds)))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return "-"


def summary(record: dict[str, Any], refusals: int, now: float) -> dict[str, Any]:
    """One alias's line, as data (pure: the tests feed it records)."""
    messages = int(record.get("messages", 0) or 0)
    spam = int(record.get("spam", 0) or 0)
    leaks = record.get("leaks") or {}
    return {
        "alias": str(record.get("alias", "")),
        "messages": messages,
        "last_30_days": last_30_days(dict(record.get("days") or {}), now),
        "senders": len(record.get("domains") or {}),
        "first_seen": record.get("first_seen"),
        "last_seen": record.get("last_seen"),
        "spam_share": round(spam / messages, 3) if messages else 0.0,
        "state": str(record.get("state") or "active"),
        "refusals": refusals,
        "leak": bool(leaks),
        "leaks": sorted(leaks),
    }


def line(row: dict[str, Any]) -> str:
    leak = f"  LEAK? {', '.join(row['leaks'])}" if row["leak"] else ""
    text = (
        f"{printable(row['alias'])[:40]:<40} {row['messages']:>6} msgs ({row['last_30_days']:>4} in 30d)  "
        f"{row['senders']:>3} senders  first {_when(row['first_seen'])}  last {_when(row['last_seen'])}  "
        f"spam {row['spam_share']:>5.0%}  {row['state']:<7}  {row['refusals']:>3} refused{leak}"
    )
    return text + (f"\n    block: {printable(row['block_link'])}" if row.get("block_link") else "")


def link_maker(routes_path: Path | None, now: float) -> Callable[[str], str] | None:
    """alias -> its one-click block link ("" when its route has no ``block_link``); None, with a
    warning, when links cannot be made here (no routes, ingest URL or reply key)."""
    from tagrelay.core.routes import Forward
    from tagrelay_tools.control import ControlError, block_link, routes_for

    routes = routes_for(routes_path)
    if routes is None:
        warn("no block links: no routes file (pass --routes or set TAGRELAY_ROUTES)")
        return None
    try:
        block_link("probe@" + next(iter(sorted(routes.domains)), "example.org"), now)
    except ControlError as exc:
        warn(f"no block links: {exc}")
        return None

    def make(alias: str) -> str:
        resolved = routes.resolve(alias)
        return block_link(alias, now) if isinstance(resolved, Forward) and resolved.rule.block_link else ""

    return make


def senders(record: dict[str, Any]) -> list[dict[str, Any]]:
    domains = record.get("domains") or {}
    rows = [
        {"domain": str(d), "count": int((v or {}).get("count", 0)), "first_seen": (v or {}).get("first_seen")}
        for d, v in domains.items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["domain"]))


def register(commands: Any) -> None:
    listing = commands.add_parser("aliases", help="one line per alias: messages, senders, spam, state, leak flag")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    listing.add_argument("--links", action="store_true", help="add the one-click block link (block_link routes)")
    listing.add_argument("--routes", type=Path, default=None, help="rules file (default: $TAGRELAY_ROUTES)")
    who = commands.add_parser("senders", help="the sender domains of one alias, with counts and first seen")
    who.add_argument("alias")
    for parser in (listing, who):
        parser.add_argument("--json", action="store_true", help="one JSON document, for scripts")
        parser.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
        parser.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
    listing.set_defaults(func=cmd_aliases)
    who.set_defaults(func=cmd_senders)


def _client(args: argparse.Namespace) -> Any:
    from google.cloud import firestore

    from tagrelay_tools.ops import _project

    return firestore.Client(project=_project(args))


def refusal_counts(client: Any, limit: int = REFUSAL_SCAN, timeout: float = 10.0) -> Counter[str]:
    """Refusal records per alias key: one bounded scan of the newest records (kept 7 days), alias field
    only. Ingest records the recipient as Mailgun posted it, so keys are normalised here (case, IDNA)."""
    from google.cloud import firestore as fs

    from tagrelay.adapters import firestore
    from tagrelay.adapters.ledger import REFUSALS

    query = client.collection(REFUSALS).order_by("at", direction=fs.Query.DESCENDING).limit(limit).select(["alias"])
    counts: Counter[str] = Counter()
    for document in firestore.call(query.get, timeout=timeout, what="Firestore (refusals)"):
        written = str((document.to_dict() or {}).get("alias", ""))
        counts[normalize(written) or written.lower()] += 1
    return counts


def cmd_aliases(args: argparse.Namespace) -> int:
    from tagrelay.adapters.insight import ALIASES
    from tagrelay.core.errors import LedgerUnavailable

    client = _client(args)
    try:
        from tagrelay.adapters import firestore as fs

        documents = fs.call(client.collection(ALIASES).limit(max(1, args.limit)).get, timeout=10.0)
        records = [dict(d.to_dict() or {}) for d in documents]
        refused = refusal_counts(client)
        now = time.time()
        rows = [summary(r, refused[str(r.get("alias", ""))], now) for r in records if r.get("alias")]
    except LedgerUnavailable as exc:
        warn(f"error: {exc.reason}")
        return 1
    rows.sort(key=lambda r: r["alias"])
    make = link_maker(args.routes, now) if args.links else None
    if make is not None:
        for row in rows:
            row["block_link"] = make(row["alias"])
    if args.json:
        say_json({"aliases": rows})
    elif not rows:
        say("no alias has received mail yet")
    else:
        for row in rows:
            say(line(row))
    return 0


def cmd_senders(args: argparse.Namespace) -> int:
    from tagrelay.adapters.insight import FirestoreInsight
    from tagrelay.core.errors import LedgerUnavailable

    alias = normalize(args.alias)
    if alias is None:
        warn(f"error: {printable(args.alias)} is not an address")
        return 2
    client = _client(args)
    try:
        record = FirestoreInsight(lambda: client).lookup(alias)
    except LedgerUnavailable as exc:
        warn(f"error: {exc.reason}")
        return 1
    rows = senders(record or {})
    if args.json:
        say_json({"alias": alias, "senders": rows})
        return 0
    if not rows:
        say(f"no sender has written to {alias} yet")
    for row in rows:
        say(f"{printable(row['domain'])[:60]:<60} {row['count']:>6}  first {_when(row['first_seen'])} UTC")
    return 0
