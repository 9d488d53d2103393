"""Operator commands: ``tagrelay deadletters list|replay`` and ``tagrelay status``.

They run against the real project (Application Default Credentials) or, with
``--local``, against the emulators of a running ``tagrelay run``.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from tagrelay.core.config import DEFAULT_DEADLETTER_TOPIC, DEFAULT_TOPIC
from tagrelay_tools.deadletters import DeadLetter, DeadLetterQueue, rows
from tagrelay_tools.localstack import STATE_FILE, running_state
from tagrelay_tools.terminal import say

DEFAULT_HOLD = "tagrelay-deadletter-hold"


def register(commands: Any) -> None:
    dead = commands.add_parser("deadletters", help="list or replay messages in the dead-letter topic")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="recipient, reason and age of every dead letter")
    replay = actions.add_parser("replay", help="publish dead letters to the inbound topic again")
    replay.add_argument("--recipient", default="", help="only those sent to this alias")
    replay.add_argument("--message-id", default="", help="only the message with this Message-ID")
    status = commands.add_parser("status", help="dead-letter count, backlog and last deliveries")
    status.add_argument("--limit", type=int, default=10)
    for parser in (listing, replay, status):
        parser.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
        parser.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
    listing.set_defaults(func=cmd_list)
    replay.set_defaults(func=cmd_replay)
    status.set_defaults(func=cmd_status)


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
    return 0


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
