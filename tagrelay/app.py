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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tagrelay.adapters import bus, claimcheck
from tagrelay.adapters.bus import Publisher
from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.lazy import Lazy
from tagrelay.adapters.ledger import FirestoreLedger, default_firestore
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import load_events, load_ingest, load_public_url, load_relay, load_replies
from tagrelay.core.control import ControlCache
from tagrelay.core.errors import ConfigError
from tagrelay.core.inbound import CHUNK_BYTES
from tagrelay.core.log import event
from tagrelay.core.ports import (
    AliasInsight,
    AliasRecords,
    DeadLetters,
    EventLedger,
    Ledger,
    RefusalLog,
    Sender,
    SentLog,
    StoredMessages,
)
from tagrelay.core.ports import ClaimStore as ClaimStorePort
from tagrelay.core.ports import Publisher as PublisherPort

if TYPE_CHECKING:
    from tagrelay.adapters.mailgun import MailgunClient
    from tagrelay.core.config import SecretRef
    from tagrelay.core.reply import ReplyDesk
    from tagrelay.core.routes import Routes
    from tagrelay.services.blocklink import BlockLinks
    from tagrelay.services.events import Events
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
    sent_log: SentLog | None = None
    aliases: AliasRecords | None = None  # alias control states (issue 14)
    insight: AliasInsight | None = None
    event_ledger: EventLedger | None = None  # the events function's (issue 12)
    # Client factories behind the real adapters (the benchmarks count every call through them).
    firestore_client: Callable[[], Any] | None = None
    publisher_client: Callable[[], Any] | None = None
    storage_client: Callable[[], Any] | None = None
    http_session: Callable[[], Any] | None = None


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


def _firestore(project: str) -> Callable[[], Any]:
    """One Firestore client per instance, shared by the ledger and the contact records (one channel)."""
    return Lazy(_stand_ins.firestore_client or default_firestore(project)).get


def _publisher(project: str, topic: str, timeout: float) -> Publisher:
    return Publisher(project, topic, timeout, client_factory=_stand_ins.publisher_client or bus.default_client)


def _claims(bucket: str) -> ClaimStore:
    return ClaimStore(bucket, client_factory=_stand_ins.storage_client or claimcheck.default_client)


def build_ingest() -> Ingest:
    from tagrelay.services.ingest import Ingest

    config = load_ingest(os.environ)
    publisher = _unless(_stand_ins.publisher, lambda: _publisher(config.project, config.topic, config.publish_timeout))
    claims = _claims(config.claim_bucket) if config.claim_bucket else None
    firestore = _firestore(config.project)
    # Firestore is used on the 406 path (refusal records) and for a reply address's contact
    # (one read, after its MAC verified); never for an ordinary published post.
    refusals = _unless(_stand_ins.refusals, lambda: FirestoreLedger(firestore, blobs=claims))
    route_keys = [Secret(ref) for ref in (config.route_key, config.route_key_previous) if ref is not None]
    # Block and lock (issue 14): one query for every non-active alias, at most once per cache period.
    aliases = _unless(_stand_ins.aliases, lambda: _aliases(firestore))
    controls = ControlCache(aliases.controlled, config.alias_cache_seconds)
    return Ingest(
        config,
        Secret(config.signing_key),
        publisher,
        refusals,
        claims,
        replies=build_replies(firestore),
        route_keys=route_keys,
        controls=controls,
    )


def _aliases(firestore: Callable[[], Any]) -> AliasRecords:
    from tagrelay.adapters.aliases import FirestoreAliases

    return FirestoreAliases(firestore)


def build_block_links() -> BlockLinks | None:
    """The one-click block link served by ingest at /block (issue 14); None without a reply key
    (the link key is derived from it), and then /block answers 404."""
    from tagrelay.services.blocklink import BlockLinks

    replies = load_replies(os.environ)
    if replies is None:
        return None
    config = load_ingest(os.environ)
    keys = [Secret(ref) for ref in (replies.key, replies.previous) if ref is not None]
    aliases = _unless(_stand_ins.aliases, lambda: _aliases(_firestore(config.project)))
    return BlockLinks(config.routes, keys, aliases)


def _mailgun(api_base: str, domain: str, api_key: SecretRef, timeout: float) -> MailgunClient:
    """The Mailgun API client of the relay and the events function (making it opens no connection)."""
    import requests

    from tagrelay.adapters.mailgun import MailgunClient

    session = (_stand_ins.http_session or requests.Session)()
    return MailgunClient(session, api_base, domain, Secret(api_key), timeout)


def _deadletters(project: str, topic: str) -> DeadLetters:
    from tagrelay.services.relay import PubSubDeadLetters

    return _unless(_stand_ins.deadletters, lambda: PubSubDeadLetters(_publisher(project, topic, timeout=10.0)))


def build_relay() -> Relay:
    from tagrelay.services.relay import Limits, Relay

    config = load_relay(os.environ)
    # Sends and fetches of stored messages (store(notify=...) routes) go through one Mailgun client;
    # making it opens no connection.
    mailgun = _mailgun(config.api_base, config.mailgun_domain, config.api_key, config.mailgun_timeout)
    deadletters = _deadletters(config.project, config.deadletter_topic)
    limits = Limits(
        config.max_attempts,
        config.max_delivery_age_seconds,
        config.mailgun_timeout,
        config.events_settle_seconds,
        config.lease_margin_seconds,
    )
    # A claim reference names its bucket (gs://BUCKET/claims/...), so the relay needs a store, not a
    # bucket of its own: without one, every message over Pub/Sub's limit would be dead-lettered.
    # TAGRELAY_CLAIM_BUCKET (if set) is where large refusals go (without it a refused message over
    # 512 KiB keeps only its start, and is not releasable).
    bucket = os.environ.get("TAGRELAY_CLAIM_BUCKET", "").strip()
    claims = _unless(_stand_ins.claims, lambda: _claims(bucket))
    firestore = _firestore(config.project)
    ledger = _unless(_stand_ins.ledger, lambda: FirestoreLedger(firestore, blobs=claims if bucket else None))
    return Relay(
        config.routes,
        _unless(_stand_ins.sender, lambda: mailgun),
        deadletters,
        ledger,
        claims,
        limits,
        stored=_unless(_stand_ins.stored, lambda: mailgun),
        replies=build_replies(firestore),
        sent_log=_unless(_stand_ins.sent_log, lambda: mailgun),  # Mailgun's Events API (issue 12)
        insight=_unless(_stand_ins.insight, lambda: _insight(firestore)),
        block_link=_leak_block_link(config.routes),
        keep=claims if bucket or _stand_ins.claims is not None else None,
    )


def _leak_block_link(routes: Routes) -> Callable[[str], str] | None:
    """The one-click block link a leak notice carries (issue 14): only for a route with
    ``block_link = true``, with a reply key (the link key derives from it) and TAGRELAY_PUBLIC_URL."""
    from tagrelay.core.control import block_link, link_key
    from tagrelay.core.routes import Reject

    replies = load_replies(os.environ)
    base_url = load_public_url(os.environ)
    if replies is None or not base_url:
        return None
    key = Secret(replies.key)

    def link(alias: str) -> str:
        found = routes.resolve(alias)
        if isinstance(found, Reject) or not found.rule.block_link:
            return ""
        return block_link(base_url, alias, time.time(), link_key(key.get()))

    return link


def _insight(firestore: Callable[[], Any]) -> AliasInsight:
    """Per-alias counts, sender domains and the leak signal (issue 14), on the relay's Firestore client."""
    from tagrelay.adapters.insight import FirestoreInsight

    return FirestoreInsight(firestore)


def build_events() -> Events:
    """The events function (issue 12): Firestore ledger, dead-letter publisher, claim store for the kept
    copies, a Mailgun client for the owner notice, the routes for ``notify``, ingest's signing key."""
    from tagrelay.services.events import Events

    config = load_events(os.environ)
    mailgun = _mailgun(config.api_base, config.mailgun_domain, config.api_key, config.mailgun_timeout)
    deadletters = _deadletters(config.project, config.deadletter_topic)
    bucket = config.claim_bucket
    claims = _stand_ins.claims if _stand_ins.claims is not None else (_claims(bucket) if bucket else None)
    ledger = _unless(_stand_ins.event_ledger, lambda: FirestoreLedger(_firestore(config.project)))
    return Events(
        config, Secret(config.signing_key), ledger, deadletters, _unless(_stand_ins.sender, lambda: mailgun), claims
    )


def read_capped(request: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of the request body, whatever its Content-Length says."""
    out = bytearray()
    while len(out) < limit and (chunk := request.stream.read(min(CHUNK_BYTES, limit - len(out)))):
        out += chunk
    return bytes(out)


def build_replies(firestore: Callable[[], Any]) -> ReplyDesk | None:
    """Reverse addresses (issue 13), when a reply key is set; contact records in Firestore."""
    from tagrelay.adapters.contacts import FirestoreContacts
    from tagrelay.core.reply import ReplyDesk, ReplyKeys

    config = load_replies(os.environ)
    if config is None:
        return None
    previous = Secret(config.previous) if config.previous is not None else None
    return ReplyDesk(ReplyKeys(Secret(config.key), previous), FirestoreContacts(firestore))


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
