"""Operator commands: ``tagrelay deadletters list|replay`` and ``tagrelay status``.

They run against the real project (Application Default Credentials) or, with
``--local``, against the emulators of a running ``tagrelay run``.

``tagrelay status`` also counts the last 24 hours of delivery records by what Mailgun said
(:func:`count_deliveries`: delivered, failed, suppressed, complained, sent with no event yet,
dead-lettered, in flight). The query is ``updated_at >= now - 24h`` alone, a single-field
range that Firestore indexes by itself (a composite index would have to be deployed), read at
most ``STATUS_MAX_RECORDS`` records and counted here. Then the suppression check: every address
the routes file can send to (forward targets, fallbacks, notify addresses; a templated target
such as ``owner+{tag}@gmail.com`` stands for every address of that shape, because Mailgun
suppresses exact addresses, one per tag) is compared with Mailgun's bounce, complaint and
unsubscribe lists. A suppressed target is printed as an ERROR with the two commands that fix it,
and the exit status is 1, so cron or a script can alert. Without ``MAILGUN_API_KEY`` (and not
``--local``) the check is skipped with a warning on stderr and the exit status stays 0.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tagrelay.core.config import DEFAULT_DEADLETTER_TOPIC, DEFAULT_TOPIC
from tagrelay_tools.deadletters import DeadLetter, DeadLetterQueue, rows
from tagrelay_tools.localstack import STATE_FILE, running_state
from tagrelay_tools.mailgun_api import MailgunApi, MailgunApiError, TargetError, add_target_arguments, target
from tagrelay_tools.suppressions import Suppression, Watched
from tagrelay_tools.terminal import say, warn

DEFAULT_HOLD = "tagrelay-deadletter-hold"
STATUS_WINDOW_SECONDS = 24 * 3600
STATUS_MAX_RECORDS = 5000  # a few friends' mail for a day; beyond it the counts say "at least"
STATUS_QUERY_TIMEOUT_SECONDS = 20.0
SUPPRESSED_PREFIX = "suppress-"  # Mailgun's reasons: suppress-bounce, suppress-complaint, suppress-unsubscribe
STATUS_FIELDS = ("state", "reason", "severity", "recipients", "updated_at")
COUNTED = ("delivered", "failed", "suppressed", "complained", "sent", "temporary", "dead", "in flight")


def register(commands: Any) -> None:
    dead = commands.add_parser("deadletters", help="list or replay messages in the dead-letter topic")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recipient, reason and age of every dead letter")
    replay = actions.add_parser("replay", help="publish dead letters to the inbound topic again")
    replay.add_argument("--recipient", default="", help="only those sent to this alias")
    replay.add_argument("--message-id", default="", help="only the message with this Message-ID")
    status = commands.add_parser(
        "status",
        help="dead letters, backlog, last deliveries, 24-hour outcome counts and the suppression check",
        description="Exit status 1 when a route target is on a Mailgun suppression list (or the check failed).",
    )
    status.add_argument("--limit", type=int, default=10)
    status.add_argument("--routes", type=Path, default=None, help="rules file (default: $TAGRELAY_ROUTES, routes.toml)")
    add_target_arguments(status)
    for parser in (listing, replay, status):
        parser.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
    for parser in (listing, replay):
        parser.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
    listing.set_defaults(func=cmd_list)
    replay.set_defaults(func=cmd_replay)
    status.set_defaults(func=cmd_status)


def project_of(args: argparse.Namespace) -> str:
    """The project of ``--project``/``$GOOGLE_CLOUD_PROJECT``, or with ``--local`` the running stack's
    (pointing the Google clients at its emulators)."""
    return _project(args)


def _project(args: argparse.Namespace) -> str:
    if args.local:
        state = running_state()
        if state is None:
            raise SystemExit(f"error: no running local stack ({STATE_FILE} missing); start 'tagrelay run'")
        os.environ["PUBSUB_EMULATOR_HOST"] = state["pubsub_host"]
        if state.get("firestore_host"):
            os.environ["FIRESTORE_EMULATOR_HOST"] = state["firestore_host"]
        return str(state["project"])
    project = args.project or os.environ.get("GOOGLE_CLOUD_PROJECT", "")
    if not project:
        raise SystemExit("error: pass --project or set GOOGLE_CLOUD_PROJECT (or --local for the local stack)")
    return project


def _queue(project: str) -> DeadLetterQueue:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    hold = os.environ.get("TAGRELAY_DEADLETTER_SUBSCRIPTION", DEFAULT_HOLD)
    return DeadLetterQueue(pubsub_v1.SubscriberClient(), f"projects/{project}/subscriptions/{hold}")


def cmd_list(args: argparse.Namespace) -> int:
    queue = _queue(_project(args))
    letters = queue.take_all()
    queue.give_back(letters)
    show_deadletters(letters, datetime.now(UTC))
    return 0


def show_deadletters(letters: list[DeadLetter], now: datetime) -> None:
    """The rows of ``tagrelay deadletters list`` (what senders wrote is escaped by ``say``)."""
    if not letters:
        say("no dead letters")
        return
    say(f"{len(letters)} dead letter(s):")
    for recipient, message_id, age, reason in rows(letters, now):
        say(f"  {age:>6}  {recipient:<32} {message_id:<40} {reason}")


def cmd_replay(args: argparse.Namespace) -> int:
    from tagrelay.adapters.bus import Publisher

    project = _project(args)
    topic = os.environ.get("TAGRELAY_TOPIC", DEFAULT_TOPIC)
    publisher = Publisher(project, topic, timeout=10.0)

    def wanted(letter: Any) -> bool:
        return (not args.recipient or letter.attributes.get("recipient", "").lower() == args.recipient.lower()) and (
            not args.message_id or letter.attributes.get("message_id", "").strip("<>") == args.message_id.strip("<>")
        )

    count = _queue(project).replay(publisher.publish, wanted)
    say(f"replayed {count} message(s) to {topic}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from tagrelay.adapters.ledger import FirestoreLedger, default_firestore

    project = _project(args)
    queue = _queue(project)
    letters = queue.take_all()
    queue.give_back(letters)
    say(
        f"project {project}",
        f"  backlog of {os.environ.get('TAGRELAY_TOPIC', DEFAULT_TOPIC)}: {_backlog(project)}",
        f"  dead letters in {os.environ.get('TAGRELAY_DEADLETTER_TOPIC', DEFAULT_DEADLETTER_TOPIC)}: {len(letters)}",
    )
    records = FirestoreLedger(default_firestore(project)).recent_deliveries(args.limit)
    show_deliveries([record.data for record in records])
    now = time.time()
    recent = deliveries_since(default_firestore(project)(), now - STATUS_WINDOW_SECONDS)
    show_counts(count_deliveries(recent), len(recent) >= STATUS_MAX_RECORDS)
    return suppression_check(args)


def deliveries_since(db: Any, since: float, limit: int = STATUS_MAX_RECORDS) -> list[dict[str, Any]]:
    """Delivery records updated since ``since`` (epoch seconds): one single-field range query, bounded."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    from tagrelay.adapters import firestore
    from tagrelay.adapters.ledger import DELIVERIES

    query = db.collection(DELIVERIES).where(filter=FieldFilter("updated_at", ">=", since))
    # only the fields counted: a record may also hold the kept copy of its message (up to ~1 MiB)
    query = query.select(list(STATUS_FIELDS)).limit(limit)
    documents = firestore.call(query.get, timeout=STATUS_QUERY_TIMEOUT_SECONDS)
    return [document.to_dict() or {} for document in documents]


def is_suppressed(data: dict[str, Any]) -> bool:
    """A failure because Mailgun suppresses the address: of the record, or of one of its recipients
    (a record to two targets can be ``complained`` for one and failed, suppressed, for the other)."""
    entries = [data] + [seen for seen in (data.get("recipients") or {}).values() if isinstance(seen, dict)]
    return any(
        entry.get("state") == "failed" and str(entry.get("reason") or "").startswith(SUPPRESSED_PREFIX)
        for entry in entries
    )


def is_temporary(data: dict[str, Any]) -> bool:
    """Still ``sent``, but Mailgun reported a temporary failure (it keeps trying)."""
    entries = [data] + [seen for seen in (data.get("recipients") or {}).values() if isinstance(seen, dict)]
    return any(entry.get("severity") == "temporary" for entry in entries)


def count_deliveries(records: list[dict[str, Any]]) -> dict[str, int]:
    """Records by state: ``suppressed`` is the part of ``failed`` Mailgun dropped for a suppression;
    ``sent`` is accepted with no event yet, ``temporary`` accepted with a temporary failure (Mailgun
    retries); ``in flight`` is sending or waiting for a retry."""
    counts = dict.fromkeys(COUNTED, 0)
    for data in records:
        state = str(data.get("state", ""))
        if state in ("sending", "retry"):
            counts["in flight"] += 1
        elif state == "sent" and is_temporary(data):
            counts["temporary"] += 1
        elif state in counts:
            counts[state] += 1
        if is_suppressed(data):
            counts["suppressed"] += 1
    return counts


def show_counts(counts: dict[str, int], capped: bool = False) -> None:
    at_least = "at least " if capped else ""
    say(
        f"  last 24 hours ({at_least}{sum(counts[k] for k in COUNTED if k != 'suppressed')} deliveries):",
        f"    delivered {counts['delivered']}   failed {counts['failed']} (suppressed {counts['suppressed']})"
        f"   complained {counts['complained']}",
        f"    sent, no event yet {counts['sent']}   temporary failures {counts['temporary']}"
        f"   dead-lettered {counts['dead']}   in flight {counts['in flight']}",
    )
    if counts["suppressed"]:
        say("    ERROR: Mailgun dropped mail to suppressed addresses; see the suppression check below")


def _routes_path(args: argparse.Namespace) -> Path | None:
    if args.routes is not None:
        return Path(args.routes)
    if getattr(args, "local", False):
        state = running_state() or {}
        if state.get("routes"):
            return Path(str(state["routes"]))
    named = os.environ.get("TAGRELAY_ROUTES", "")
    for candidate in (named, "routes.toml"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def suppression_check(args: argparse.Namespace) -> int:
    """Compare the route targets with Mailgun's suppression lists; 1 when one is suppressed or the check failed."""
    import requests

    from tagrelay.core.errors import RoutesError
    from tagrelay.core.routes import load_file
    from tagrelay_tools.suppressions import SuppressionsClient, suppressed_targets, watched_targets

    path = _routes_path(args)
    if path is None:
        warn("warning: suppression check skipped: no routes file (pass --routes, set TAGRELAY_ROUTES)")
        return 0
    try:
        watched = watched_targets(load_file(str(path)))
        where = target(args)
    except RoutesError as exc:
        warn(f"error: {path}: {exc.reason}")
        return 1
    except TargetError as exc:
        warn(f"warning: suppression check skipped: {exc.reason}")
        return 0
    try:
        with requests.Session() as session:
            lists = SuppressionsClient(MailgunApi(session, where.base, where.api_key), where.domain).all()
    except MailgunApiError as exc:
        warn(f"error: suppression check failed: {exc.reason}")
        return 1
    hits = suppressed_targets(watched, lists)
    return show_suppressed(hits, len(watched), where.domain, " --local" if where.local else "")


def show_suppressed(hits: list[tuple[Suppression, list[Watched]]], watched: int, domain: str, local: str = "") -> int:
    """The suppression check's lines; the exit status (1 when a target is suppressed)."""
    templated = " (templated ones by shape)" if any(w.templated for _, why in hits for w in why) else ""
    if not hits:
        say(f"  suppression check: none of the {watched} route targets is on {domain}'s suppression lists")
        return 0
    say(f"  suppression check: {len(hits)} route target(s) suppressed by Mailgun{templated}:")
    for entry, why in hits:
        say(
            f"  ERROR: {entry.address} is on Mailgun's {entry.list} list ({entry.describe()}): every message to it"
            " is accepted by Mailgun and dropped",
            *(f"    {w.why}: {w.template}" for w in why),
            f"    fix: tagrelay suppressions clear {shlex.quote(entry.address)}{local}",  # pasted into a shell
            f"         tagrelay deadletters replay{local}",
        )
    return 1


def show_deliveries(deliveries: list[dict[str, Any]]) -> None:
    """The delivery rows of ``tagrelay status``: alias, targets and Message-ID came from senders."""
    say(f"  last {len(deliveries)} deliveries:")
    for data in deliveries:
        when = datetime.fromtimestamp(float(data.get("updated_at", 0)), UTC).strftime("%Y-%m-%d %H:%M:%S")
        targets = data.get("targets", "")
        targets = ", ".join(map(str, targets)) if isinstance(targets, list) else targets
        say(
            f"    {when}  {data.get('state', '?'):<7} {data.get('alias', ''):<28} → {targets}"
            f"  {data.get('message_id', '')}  attempts={data.get('attempts', '?')}"
        )


def _backlog(project: str) -> str:
    """Undelivered messages of the trigger subscription, from Cloud Monitoring (not on the emulator)."""
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        return "not measurable on the emulator (push subscriptions deliver at once)"
    import google.auth
    import requests
    from google.auth.exceptions import GoogleAuthError
    from google.auth.transport.requests import AuthorizedSession

    now = datetime.now(UTC)
    params = {
        "filter": 'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages"',
        "interval.endTime": now.isoformat().replace("+00:00", "Z"),
        "interval.startTime": (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z"),
    }
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/monitoring.read"])
        session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        response = session.get(
            f"https://monitoring.googleapis.com/v3/projects/{project}/timeSeries", params=params, timeout=10
        )
        response.raise_for_status()
        series = response.json().get("timeSeries", [])
        values = [int(s["points"][0]["value"]["int64Value"]) for s in series if s.get("points")]
    except (GoogleAuthError, requests.RequestException, KeyError, ValueError) as exc:
        return f"unknown ({type(exc).__name__})"
    return str(sum(values)) if values else "0 (no recent data points)"
