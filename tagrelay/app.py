"""Wiring: build the ingest and relay services from the environment, once per instance.

The function entry points call :func:`cold_start` at import time, so a missing
or wrong setting fails the deploy (or the local start) with one line per
problem. Network clients are created lazily on first use, and each function
imports only what it uses (ingest never loads requests or the relay).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tagrelay.adapters.bus import Publisher
from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.ledger import FirestoreLedger, default_firestore
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import load_ingest, load_relay, load_replies
from tagrelay.core.errors import ConfigError
from tagrelay.core.inbound import CHUNK_BYTES
from tagrelay.core.log import event
from tagrelay.core.ports import ClaimStore as ClaimStorePort
from tagrelay.core.ports import DeadLetters, Ledger, RefusalLog, Sender, StoredMessages
from tagrelay.core.ports import Publisher as PublisherPort

if TYPE_CHECKING:
    from tagrelay.core.reply import ReplyDesk
    from tagrelay.services.ingest import Ingest
    from tagrelay.services.relay import Relay

T = TypeVar("T")


@dataclass(frozen=True)
class StandIns:
    """In-memory collaborators that replace the Google and Mailgun clients the builders would create.

    For the in-process entry-point tests only (tests/unit/test_entrypoints.py): they load
    ``functions/*/main.py`` through functions-framework, whose import runs the builders
    below. Production never sets any, so every field is None there and the builders
    create the real adapters; configuration is read from the environment either way.
    """

    publisher: PublisherPort | None = None
    ledger: Ledger | None = None
    refusals: RefusalLog | None = None
    stored: StoredMessages | None = None
    sender: Sender | None = None
    deadletters: DeadLetters | None = None
    claims: ClaimStorePort | None = None


_stand_ins = StandIns()


@contextlib.contextmanager
def stand_ins(replacements: StandIns) -> Iterator[None]:
    """Tests only: build services with ``replacements`` while the block runs."""
    global _stand_ins
    previous, _stand_ins = _stand_ins, replacements
    try:
        yield
    finally:
        _stand_ins = previous


def _unless(stand_in: T | None, build: Callable[[], T]) -> T:
    return build() if stand_in is None else stand_in


def build_ingest() -> Ingest:
    from tagrelay.services.ingest import Ingest

    config = load_ingest(os.environ)
    publisher = _unless(_stand_ins.publisher, lambda: Publisher(config.project, config.topic, config.publish_timeout))
    claims = ClaimStore(config.claim_bucket) if config.claim_bucket else None
    # Firestore is used only on the 406 path (refusal records), never per published post.
    refusals = _unless(_stand_ins.refusals, lambda: FirestoreLedger(default_firestore(config.project), blobs=claims))
    route_keys = [Secret(ref) for ref in (config.route_key, config.route_key_previous) if ref is not None]
    return Ingest(
        config,
        Secret(config.signing_key),
        publisher,
        refusals,
        claims,
        replies=build_replies(config.project),
        route_keys=route_keys,
    )


def build_relay() -> Relay:
    import requests

    from tagrelay.adapters.mailgun import MailgunClient
    from tagrelay.services.relay import Limits, PubSubDeadLetters, Relay

    config = load_relay(os.environ)
    # Sends and fetches of stored messages (store(notify=...) routes) go through one Mailgun client;
    # making it opens no connection.
    mailgun = MailgunClient(
        requests.Session(), config.api_base, config.mailgun_domain, Secret(config.api_key), config.mailgun_timeout
    )
    deadletters = _unless(
        _stand_ins.deadletters,
        lambda: PubSubDeadLetters(Publisher(config.project, config.deadletter_topic, timeout=10.0)),
    )
    limits = Limits(config.max_attempts, config.max_delivery_age_seconds, config.mailgun_timeout)
    # A claim reference names its bucket (gs://BUCKET/claims/...), so the relay needs a store, not a
    # bucket of its own: without one, every message over Pub/Sub's limit would be dead-lettered.
    # TAGRELAY_CLAIM_BUCKET (if set) is where large refusals go (without it a refused message over
    # 512 KiB keeps only its start, and is not releasable).
    bucket = os.environ.get("TAGRELAY_CLAIM_BUCKET", "").strip()
    claims = _unless(_stand_ins.claims, lambda: ClaimStore(bucket))
    ledger = _unless(
        _stand_ins.ledger, lambda: FirestoreLedger(default_firestore(config.project), blobs=claims if bucket else None)
    )
    return Relay(
        config.routes,
        _unless(_stand_ins.sender, lambda: mailgun),
        deadletters,
        ledger,
        claims,
        limits,
        stored=_unless(_stand_ins.stored, lambda: mailgun),
        replies=build_replies(config.project),
    )


def build_replies(project: str) -> ReplyDesk | None:
    """Reverse addresses (issue 13), when a reply key is set; contact records in Firestore."""
    from tagrelay.adapters.contacts import FirestoreContacts
    from tagrelay.core.reply import ReplyDesk, ReplyKeys

    config = load_replies(os.environ)
    if config is None:
        return None
    previous = Secret(config.previous) if config.previous is not None else None
    return ReplyDesk(ReplyKeys(Secret(config.key), previous), FirestoreContacts(default_firestore(project)))


def request_chunks(request: Any) -> Iterator[bytes]:
    """The request body as it arrives, in pieces: ingest never holds a 25 MB post twice."""
    while chunk := request.stream.read(CHUNK_BYTES):
        yield chunk


def cold_start(builder: Callable[[], T]) -> T:
    """Build a service or stop the process with one log line per configuration problem."""
    try:
        return builder()
    except ConfigError as exc:
        for problem in exc.problems:
            event(logging.CRITICAL, f"configuration: {problem}", stage="config", outcome="refused to start")
            print(f"tagrelay configuration: {problem}", file=sys.stderr)
        raise SystemExit(2) from None
