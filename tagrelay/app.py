"""Wiring: build the ingest and relay services from the environment, once per instance.

The function entry points call :func:`cold_start` at import time, so a missing
or wrong setting fails the deploy (or the local start) with one line per
problem. Network clients are created lazily on first use, and each function
imports only what it uses (ingest never loads requests or the relay).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from tagrelay.adapters.bus import Publisher
from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.ledger import FirestoreLedger, default_firestore
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import load_ingest, load_relay, load_replies
from tagrelay.core.errors import ConfigError
from tagrelay.core.inbound import CHUNK_BYTES
from tagrelay.core.log import event

if TYPE_CHECKING:
    from tagrelay.core.reply import ReplyDesk
    from tagrelay.services.ingest import Ingest
    from tagrelay.services.relay import Relay

T = TypeVar("T")


def build_ingest() -> Ingest:
    from tagrelay.services.ingest import Ingest

    config = load_ingest(os.environ)
    publisher = Publisher(config.project, config.topic, config.publish_timeout)
    claims = ClaimStore(config.claim_bucket) if config.claim_bucket else None
    # Firestore is used only on the 406 path (refusal records), never per published post.
    refusals = FirestoreLedger(default_firestore(config.project), blobs=claims)
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
    mailgun = MailgunClient(
        requests.Session(), config.api_base, config.mailgun_domain, Secret(config.api_key), config.mailgun_timeout
    )
    deadletters = PubSubDeadLetters(Publisher(config.project, config.deadletter_topic, timeout=10.0))
    limits = Limits(config.max_attempts, config.max_delivery_age_seconds, config.mailgun_timeout)
    # A claim reference names its bucket; TAGRELAY_CLAIM_BUCKET (if set) is where large refusals go
    # (without it a refused message over 512 KiB keeps only its start, and is not releasable).
    bucket = os.environ.get("TAGRELAY_CLAIM_BUCKET", "").strip()
    claims = ClaimStore(bucket)
    ledger = FirestoreLedger(default_firestore(config.project), blobs=claims if bucket else None)
    return Relay(
        config.routes,
        mailgun,
        deadletters,
        ledger,
        claims,
        limits,
        stored=mailgun,
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
