"""The ingest service: Mailgun route POST → verified → published → answered.

Statuses (Mailgun treats 200 as done, 406 as "do not retry", anything else as
a failure it retries for about 8 hours):

- 200 published and acknowledged by Pub/Sub; or held for the owner's review (a locked
  alias in ``hold`` mode: kept as a held refusal record, not published);
- 400 not a Mailgun form at all (or an unexpected error before the signature was checked);
- 401 bad or missing signature, or a timestamp outside the window;
- 406 signed, but never deliverable (no route, blocked alias, loop, too large, a sender
  a locked alias does not let through in ``refuse`` mode), or
  signed and impossible to handle (an unexpected error): kept as a refusal record;
- 503 Pub/Sub, the key store, or the refusal record's store unavailable, or the alias
  control states never read by this instance: Mailgun retries.

The control states (``tagrelay block|lock``, issue 14) come from a cache read at most
every ``TAGRELAY_ALIAS_CACHE_SECONDS`` (``tagrelay.core.control.ControlCache``), so a
published post still costs one publish.

Ingest does what only ingest can, at the cost of one publish: verify, decide the
406s that need no state, publish. Replay protection (a token bound to the first
message seen with it) lives in the relay's delivery write, so a Mailgun retry of a
post is published again and the relay acknowledges it as the duplicate it is.
Every 406 of signed mail leaves a refusal record (reason, alias, sender, size and
the message, 7 days) that ``tagrelay refusals release`` can deliver; when that
record cannot be written the answer is 503, not 406: a refusal without a record
would be a silent loss, and Mailgun's retry costs only one more post.

Never a bare 500 for anything a client sent: every failure maps to one of these.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tagrelay.core import control, envelope, spam
from tagrelay.core.config import IngestConfig
from tagrelay.core.errors import (
    BadRequest,
    ClaimMissing,
    LedgerUnavailable,
    RejectedInput,
    SecretUnavailable,
    TransientError,
    Undeliverable,
)
from tagrelay.core.headers import Field, count, header_fields
from tagrelay.core.inbound import (
    EVENT_SNIFF_BYTES,
    EVENT_WEBHOOK_HINT,
    Body,
    Form,
    InboundMessage,
    check_route_key,
    check_signature,
    looks_like_event_webhook,
    media_type,
    parse_form,
    route_post_problem,
    to_inbound,
)
from tagrelay.core.log import event
from tagrelay.core.ports import ClaimStore, ControlStates, KeySource, Publisher, Refusal, RefusalLog
from tagrelay.core.reply import ReplyDesk
from tagrelay.core.rewrite import carries_loop_marker
from tagrelay.core.routes import Reject

MAX_RECEIVED_HEADERS = 25
MAX_SUMMARY_BYTES = 30 * 1024 * 1024  # a form summary is bounded like the post it summarises


def stored_message_url(form: Form) -> str:
    """The ``message-url`` of a ``store(notify=...)`` notification ("" for a forwarded message).

    Mailgun's notification has the parsed fields and ``attachments`` as a JSON list of
    storage URLs, but no files and no ``body-mime``: forwarded as it is, every attachment
    would be lost.
    """
    if "body-mime" in form.fields or "body-mime" in form.files:
        return ""
    return form.text("message-url")


def form_summary(form: Form) -> bytes:
    """What a refused form said, as bytes, when it could not become a message (bounded)."""
    out: list[bytes] = []
    size = 0
    for name in sorted(set(form.fields) | set(form.repeated)):
        if name in ("signature", "timestamp", "token"):
            continue
        for value in form.all(name):
            out.append(name.encode("utf-8", "replace") + b": " + value + b"\n")
    for name, upload in sorted(form.files.items()):
        label = f"--- file {name} ({upload.filename or ''}, {upload.content_type}, {len(upload.data)} bytes)\n"
        out.append(label.encode("utf-8", "replace") + upload.data + b"\n")
    kept: list[bytes] = []
    for piece in out:
        if size + len(piece) > MAX_SUMMARY_BYTES:
            break
        kept.append(piece)
        size += len(piece)
    return b"".join(kept)


@dataclass(frozen=True)
class Response:
    status: int
    text: str


class Ingest:
    def __init__(
        self,
        config: IngestConfig,
        signing_key: KeySource,
        publisher: Publisher,
        ledger: RefusalLog,
        claims: ClaimStore | None = None,
        clock: Callable[[], float] = time.time,
        replies: ReplyDesk | None = None,
        route_keys: Sequence[KeySource] = (),
        controls: ControlStates | None = None,
    ) -> None:
        self.config = config
        self._replies = replies
        self._key = signing_key
        self._publisher = publisher
        self._ledger = ledger
        self._claims = claims
        self._clock = clock
        self._route_keys = tuple(route_keys)  # current first, then the previous one during a rotation
        self._controls = controls  # alias block/lock states (issue 14); None: only the routes file's list
        self._unauthenticated = RefusalSummary(clock)

    def handle(self, content_type: str, body: Body, route_key: str | None = None) -> Response:
        """Answer one POST (its body whole, or as a stream of chunks). Never raises for anything the client sent.

        ``route_key`` is the route URL's ``k``. The order is the perimeter: a JSON
        event webhook is named (400, at most EVENT_SNIFF_BYTES read); the route key
        (when configured) before a byte of a form is read; the signature before any
        large value is decoded; only then the message.
        """
        alias = ""
        signed = False

        def authenticate(fields: Mapping[str, str]) -> None:
            nonlocal signed
            check_signature(fields, self._key.get().encode("utf-8"), now, self.config.max_age_seconds)
            signed = True

        try:
            if media_type(content_type) == "application/json":
                raise BadRequest(_json_refusal(content_type, body))
            now = self._clock()
            if self._route_keys:
                check_route_key(route_key, self._accepted_route_keys())
            form = parse_form(content_type, body, self.config.max_body_bytes, authenticate)
            problem = route_post_problem(set(form.fields) | set(form.files))
            if problem:
                raise BadRequest(problem)
            alias = form.text("recipient")[:200]
            stamp = int(form.text("timestamp"))
            pubsub_id, attributes = self._handle_signed(form, stamp, now)
            if not pubsub_id:
                return Response(200, "held for the owner's review")
        except RejectedInput as exc:
            if signed:
                event(
                    logging.WARNING,
                    f"refused: {exc.reason}",
                    stage="ingest",
                    alias=alias,
                    outcome=f"http {exc.status}",
                    reason=exc.reason,
                )
            else:
                self._unauthenticated.refused(exc)
            return Response(exc.status, exc.reason)
        except TransientError as exc:
            event(logging.ERROR, f"unavailable: {exc.reason}", stage="ingest", alias=alias, outcome="http 503")
            return Response(503, "temporarily unavailable, retry later")
        except Exception as exc:  # before the signature was checked (after it, _handle_signed keeps the message)
            event(logging.ERROR, f"unexpected {type(exc).__name__}", stage="ingest", alias=alias, outcome="http 400")
            return Response(400, "could not read this post")
        event(
            logging.INFO,
            "published",
            stage="ingest",
            alias=attributes.get("recipient", alias),
            message_id=attributes.get("message_id", ""),
            pubsub_id=pubsub_id,
            outcome="published",
        )
        return Response(200, "queued")

    def _accepted_route_keys(self) -> list[str]:
        """The current key (SecretUnavailable: 503, Mailgun retries) and the previous one when it can be read."""
        current, *previous = self._route_keys
        keys = [current.get()]
        for source in previous:
            with contextlib.suppress(SecretUnavailable):  # a missing previous key only narrows what is accepted
                keys.append(source.get())
        return keys

    def _handle_signed(self, form: Form, stamp: int, now: float) -> tuple[str, dict[str, str]]:
        """A verified post: decide the stateless 406s and the alias's block or lock, publish (the Pub/Sub
        id and attributes; ``("", {})`` when a locked alias held it instead). Every 406 from here on leaves a
        refusal record, and so does an unexpected error (then a 406 too: the record keeps the
        message, and a deterministic error would fail every one of Mailgun's retries for 8 hours)."""
        message: InboundMessage | None = None
        try:
            message = to_inbound(form, stamp)
            stored = stored_message_url(form)
            fields, routed = self._check_deliverable(message, stored)
            held = self._check_control(message, fields, routed)
            if held:
                ident = self._keep_refusal(form, message, held, kind="held")
                event(logging.INFO, f"held: {held}", stage="ingest", alias=message.recipient[:200],
                      outcome="held", refusal=ident, reason=held)  # fmt: skip
                return "", {}
            return self._publish_once(message, now, stored, fields)
        except Undeliverable as exc:
            self._keep_refusal(form, message, exc.reason)
            raise
        except (RejectedInput, TransientError):
            raise
        except Exception as exc:
            reason = f"internal error: {type(exc).__name__}"
            event(
                logging.CRITICAL,
                f"unexpected {type(exc).__name__} on a signed post",
                stage="ingest",
                alias=form.text("recipient")[:200],
                outcome="http 406",
                reason=reason,
            )
            self._keep_refusal(form, message, reason)
            raise Undeliverable(f"{reason}; kept as a refusal record") from None

    def _keep_refusal(self, form: Form, message: InboundMessage | None, reason: str, kind: str = "message") -> str:
        """Record a refusal of signed mail; LedgerUnavailable (so 503, and Mailgun retries) when it cannot.

        ``kind`` "held": a message a locked alias holds for review (answered 200, releasable)."""
        alias, sender, token = form.text("recipient")[:300], form.text("sender")[:600], form.text("token")[:300]
        upload = form.files.get("body-mime")
        raw = upload.data if upload is not None else form.fields.get("body-mime")
        if message is not None:
            # A store(notify=...) post keeps where Mailgun stored the message, so a release fetches
            # the whole message (attachments included), not the notification; and the verdicts go along.
            stored = stored_message_url(form)
            kept = {"stored": stored, "spam_flag": message.spam_flag, "spam_score": message.spam_score}
            attributes = {k: v for k, v in kept.items() if v} or None
            refusal = Refusal(reason, alias, sender, message.mime, kind, attributes)
        elif raw is not None:
            refusal = Refusal(reason, alias, sender, raw, "message")  # the envelope was refused, not the message
        else:
            refusal = Refusal(reason, alias, sender, form_summary(form), "form")
        try:
            ident = self._ledger.record_refusal(refusal, token=token)
        except TransientError as exc:
            raise LedgerUnavailable(f"refusal not recorded ({exc.reason}); answering 503 so Mailgun retries") from None
        except Exception as exc:
            raise LedgerUnavailable(f"refusal not recorded ({type(exc).__name__})") from None
        event(
            logging.INFO,
            "refusal recorded",
            stage="ingest",
            alias=alias,
            outcome="refusal recorded",
            refusal=ident,
            reason=reason,
        )
        return ident

    def _check_control(self, message: InboundMessage, fields: list[Field], routed: _Routed) -> str:
        """The alias's block or lock (issue 14): Undeliverable to refuse, a reason to hold, "" to publish.

        A post to a reverse address whose contact record verified is an exchange the alias already
        has (the owner's replies come this way), so a lock does not apply to it; a block does.
        """
        if self._controls is None:
            return ""
        found = self._controls.current().lookup(routed.alias)
        if found is None or (routed.contact and found.state == "locked"):
            return ""
        decision = control.decide(found, control.sender_org(fields, message.sender))
        if decision.action == "refuse":
            raise Undeliverable(decision.reason)
        return decision.reason if decision.action == "hold" else ""

    def _publish_once(
        self, message: InboundMessage, now: float, stored: str = "", fields: list[Field] | None = None
    ) -> tuple[str, dict[str, str]]:
        """Publish once: the only network round trip of a post (two for a claim check).

        A message over Pub/Sub's size cap goes to the claim-check bucket first (an object
        of its own, never shared) and only its header block travels through Pub/Sub. The
        ``digest`` attribute (SHA-256 of the exact bytes) is the relay's delivery identity.
        A store(notify=...) notification carries the storage URL; the relay fetches the message.
        """
        digest = envelope.stored_digest(stored) if stored else envelope.message_digest(message.mime)
        large = self._claims is not None and len(message.mime) > envelope.MAX_DATA_BYTES and not stored
        ref = self._claims.put(message.mime) if self._claims is not None and large else ""
        received = datetime.fromtimestamp(now, UTC)
        data, attributes = envelope.encode(message, received, claim=ref, digest=digest, stored=stored, fields=fields)
        try:
            pubsub_id = self._publisher.publish(data, attributes)
        except TransientError:
            if ref and self._claims is not None:
                with contextlib.suppress(TransientError, ClaimMissing):
                    self._claims.delete(ref)  # Mailgun's retry makes its own object
            raise
        return pubsub_id, attributes

    def _check_deliverable(self, message: InboundMessage, stored: str = "") -> tuple[list[Field], _Routed]:
        """Raise Undeliverable for the 406s that need no state; return the parsed header fields and the alias."""
        recipient, mime = message.recipient, message.mime
        routed = self._route_address(recipient)
        resolved = self.config.routes.resolve(routed.alias)
        if isinstance(resolved, Reject):
            raise Undeliverable(resolved.reason)
        seen = spam.verdict(message.spam_flag, message.spam_score)
        if spam.decide(resolved.rule.spam, seen) == "refuse":
            raise Undeliverable(f"spam refused by the route's policy ({seen.describe()})")
        domain = recipient.rpartition("@")[2]
        fields = header_fields(mime)
        if carries_loop_marker(fields, domain):
            raise Undeliverable(f"mail loop: already forwarded for {domain.lower()}")
        if count(fields, "received") > MAX_RECEIVED_HEADERS:
            raise Undeliverable(f"mail loop: more than {MAX_RECEIVED_HEADERS} Received headers")
        if stored:
            event(
                logging.ERROR,
                "a store(notify=...) notification reached ingest: its message is fetched from Mailgun by the relay; "
                'fix the route: forward("https://<region>-<project>.cloudfunctions.net/ingest/mime?k=<route key>") '
                "instead of store(notify=...)",
                stage="ingest",
                alias=recipient,
                outcome="stored message",
            )
            return fields, routed
        if len(mime) > envelope.MAX_DATA_BYTES and self._claims is None:
            raise Undeliverable(
                f"message of {len(mime)} bytes is over the {envelope.MAX_DATA_BYTES} byte Pub/Sub limit "
                "and no claim-check bucket is set (TAGRELAY_CLAIM_BUCKET)"
            )
        return fields, routed

    def _route_address(self, recipient: str) -> _Routed:
        """The address to route: a reverse address routes as its alias (issue 13).

        Its MAC is checked before any lookup. A made-up or altered one that still names
        an alias goes on (the relay forwards it to that alias's owner, marked, which
        anyone could do by writing to the alias); one that names none, or whose contact
        is blocked, is refused with 406. A blocked alias is refused by the routes.
        """
        if self._replies is None:
            return _Routed(recipient)
        found = self._replies.identify(recipient)
        if found is None:
            return _Routed(recipient)
        if not found.alias:
            raise Undeliverable(f"reply address: {found.reason}")
        if found.contact is not None and found.contact.blocked:
            raise Undeliverable("reply address: the contact is blocked")
        return _Routed(found.alias, contact=found.contact is not None)


@dataclass(frozen=True)
class _Routed:
    """The address a recipient routes as: itself, or the alias of a reverse address (``contact``: verified)."""

    alias: str
    contact: bool = False


SUMMARY_SECONDS = 60.0  # at most one WARNING line per this many seconds about unauthenticated posts
REASON_CHARS = 120


def _json_refusal(content_type: str, body: Body) -> str:
    """Why a JSON post is refused: an event webhook is named, at the cost of reading at most its first 64 KiB."""
    head = bytearray()
    pieces = [body] if isinstance(body, bytes) else body
    for piece in pieces:
        head += piece[: EVENT_SNIFF_BYTES + 1 - len(head)]
        if len(head) > EVENT_SNIFF_BYTES:
            break
    if looks_like_event_webhook(content_type, bytes(head)):
        return EVENT_WEBHOOK_HINT
    return "expected a Mailgun route post (a form), got JSON"


def _printable(text: str, limit: int = REASON_CHARS) -> str:
    """Text safe to log: control characters escaped, cut to ``limit`` characters."""
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return escaped if len(escaped) <= limit else escaped[:limit] + "…"


class RefusalSummary:
    """Logs refusals of unauthenticated posts without letting their senders write the log.

    Each refusal is one INFO line (status and tagrelay's reason, escaped and cut,
    no alias: nothing the sender chose is trusted before the signature). At most
    one WARNING line per SUMMARY_SECONDS counts them, so unsigned traffic neither
    floods the log at WARNING nor goes unnoticed.
    """

    def __init__(self, clock: Callable[[], float], every: float = SUMMARY_SECONDS) -> None:
        self._clock = clock
        self._every = every
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}
        self._next = float("-inf")

    def refused(self, exc: RejectedInput) -> None:
        reason = _printable(exc.reason)
        event(logging.INFO, f"refused before authentication: {reason}", stage="ingest", outcome=f"http {exc.status}")
        with self._lock:
            self._counts[exc.status] = self._counts.get(exc.status, 0) + 1
            now = self._clock()
            if now < self._next:
                return
            counts, self._counts, self._next = self._counts, {}, now + self._every
        total = sum(counts.values())
        by_status = ", ".join(f"{count} × {status}" for status, count in sorted(counts.items()))
        event(
            logging.WARNING,
            f"{total} unauthenticated post(s) refused ({by_status}); next summary in {self._every:g}s at most",
            stage="ingest",
            outcome="refused unauthenticated",
        )
