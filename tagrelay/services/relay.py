"""The relay service: Pub/Sub delivery → dedupe → route → rewrite → send through Mailgun.

The retry idiom of Cloud Functions: raise to be redelivered, return to stop.

- A delivery record in the ledger (alias, targets and the SHA-256 of the exact
  message bytes, never the sender-chosen Message-ID) makes a redelivered message
  that was already sent a no-op, and lets only one instance send a message at a
  time (a lease that runs out if that instance dies). The same atomic write binds
  the Mailgun token to the message digest: a different message under a used token
  is never delivered, and is kept as a refusal record.
- The message body is fetched (claim check, Mailgun storage) only once the ledger
  says the delivery is still to do, and is checked against its digest.
- Transient failures (Mailgun 429/5xx/timeouts, the ledger, the key store)
  raise, so Pub/Sub redelivers with backoff, until the message has used up its
  attempts or is older than the max-age guard; then it is dead-lettered instead
  of spinning forever. (The emulator ignores retry and dead-letter policies, so
  the relay counts attempts itself; in production the subscription's own
  dead-letter policy is the backstop.)
- Permanent failures (Mailgun 4xx, no route any more, not a tagrelay message)
  go to the dead-letter topic with the reason and are acknowledged.
- A send that may have reached Mailgun unseen (issue 12: a timeout or a lost connection
  after the request was written, or a lease that ran out while ``sending``: the instance
  died) is never sent again blind: the ledger answers it as ``Begin.doubt``, and the relay
  asks Mailgun's Events API first (``SentLog``). Accepted: recorded ``sent``, not sent
  again. Not found: sent only once the window is older than the settle time
  (``Limits.events_settle_seconds``); until then, and while the Events API cannot be asked,
  the lease is released without counting an attempt and the message waits for Pub/Sub's
  redelivery (``Settling``). See :mod:`tagrelay.core.resend`.

Nothing is dropped without a record: a dead-letter publish that fails raises too,
and an exception outside the tree (a programming error) dead-letters the whole
message with its reason instead of spinning until Pub/Sub gives up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tagrelay.core import insight, spam
from tagrelay.core.envelope import (
    Delivery,
    Envelope,
    delivery_key,
    digest_of,
    from_cloud_event_data,
    message_digest,
    token_binding,
)
from tagrelay.core.errors import (
    Busy,
    ClaimMissing,
    LedgerUnavailable,
    MailgunTransient,
    MailgunUnsure,
    PermanentError,
    SchemaError,
    Settling,
    TransientError,
    Unrewritable,
)
from tagrelay.core.events import KEEP_INLINE_BYTES, KEPT_PREFIX
from tagrelay.core.log import event
from tagrelay.core.notice import build_notice
from tagrelay.core.ports import (
    DELIVERY_VARIABLE,
    AliasInsight,
    ClaimStore,
    DeadLetters,
    Doubt,
    Ledger,
    Refusal,
    Sender,
    SentLog,
    StoredMessages,
)
from tagrelay.core.reply import ReplyDesk, ReplyPlan
from tagrelay.core.resend import decide, query_since
from tagrelay.core.rewrite import rewrite
from tagrelay.core.routes import Reject, Routes, normalize

MAX_INLINE_WAIT_SECONDS = 10.0  # longest Retry-After honoured by sleeping before the redelivery
LEASE_MARGIN_SECONDS = 30.0


@dataclass(frozen=True)
class Outcome:
    status: str  # "sent", "duplicate", "dead-lettered" or "refused"
    detail: str


@dataclass(frozen=True)
class Limits:
    max_attempts: int = 10
    max_age_seconds: float = 24 * 3600
    send_timeout_seconds: float = 60.0  # the lease outlives one Mailgun call
    events_settle_seconds: float = 1800.0  # "not in Mailgun's events" is believed this long after a send
    lease_margin_seconds: float = LEASE_MARGIN_SECONDS


@dataclass
class _Progress:
    """How far one message got: the delivery key once its record was taken (to record it dead),
    and the Mailgun id once Mailgun accepted it (after that, nothing may turn it into a dead letter)."""

    key: str = ""
    mailgun_id: str = ""


@dataclass(frozen=True)
class Failure:
    """What giving up on one message needs."""

    key: str
    data: bytes  # what came through Pub/Sub, for the dead letter
    original: bytes  # the whole message, for the owner's notice
    attributes: dict[str, str]
    pubsub_id: str
    notify: str
    doubt: Doubt | None = None  # kept through a release: an earlier send may have reached Mailgun


class Relay:
    def __init__(
        self,
        routes: Routes,
        sender: Sender,
        deadletters: DeadLetters,
        ledger: Ledger,
        claims: ClaimStore | None = None,
        limits: Limits = Limits(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        stored: StoredMessages | None = None,
        replies: ReplyDesk | None = None,
        sent_log: SentLog | None = None,
        insight: AliasInsight | None = None,
        block_link: Callable[[str], str] | None = None,
        keep: ClaimStore | None = None,
    ) -> None:
        self._keep = keep  # where a sent message over KEEP_INLINE_BYTES is kept for a bounce (issue 12)
        self._insight = insight  # None: no per-alias record (issue 14's insight)
        self._block_link = block_link  # alias -> a one-click block URL for the leak notice ("" for none)
        self._stored = stored
        self._sent_log = sent_log  # Mailgun's Events API: asked before a send that may have happened is redone
        self._routes = routes
        self._sender = sender
        self._deadletters = deadletters
        self._ledger = ledger
        self._claims = claims
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._replies = replies  # None: no reply key, forwarded copies keep the sender's Reply-To

    def handle_event_data(self, data: Any) -> Outcome:
        """Handle the data of a Pub/Sub CloudEvent; raises TransientError to be redelivered."""
        try:
            delivery = from_cloud_event_data(data)
        except Exception as exc:  # SchemaError, or anything else the decoding meets: kept, never spun on
            raw = json.dumps(data, default=str).encode("utf-8")
            why = exc.reason if isinstance(exc, SchemaError) else f"{type(exc).__name__}: {str(exc)[:200]}"
            return self._dead_letter(raw, {}, f"not a tagrelay message: {why}", "")
        return self.handle(delivery)

    def handle(self, delivery: Delivery) -> Outcome:
        """Deliver one message. Raises only TransientError (to be redelivered): anything else,
        a programming error included, ends in a dead letter with the whole message and the reason."""
        progress = _Progress()
        try:
            return self._handle(delivery, progress)
        except TransientError:
            raise
        except Exception as exc:  # the one place an unexpected error becomes a dead letter
            return self._unexpected(delivery, progress, exc)

    def _unexpected(self, delivery: Delivery, progress: _Progress, exc: Exception) -> Outcome:
        reason = f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
        message = delivery.envelope
        if progress.mailgun_id:  # sent: a dead letter (and its replay) would send it a second time
            event(
                logging.CRITICAL,
                f"unexpected {type(exc).__name__} after the message was sent; it stays sent",
                stage="relay",
                outcome="sent",
                alias=message.recipient,
                pubsub_id=delivery.pubsub_id,
                mailgun_id=progress.mailgun_id,
                reason=reason,
            )
            return Outcome("sent", progress.mailgun_id)
        attributes = {**message.attributes(), "original_pubsub_id": delivery.pubsub_id}
        event(
            logging.CRITICAL,
            f"unexpected {type(exc).__name__} while handling a message",
            stage="relay",
            outcome="dead-lettered",
            alias=message.recipient,
            pubsub_id=delivery.pubsub_id,
            reason=reason,
        )
        outcome = self._dead_letter(message.mime, attributes, reason, delivery.pubsub_id)
        if progress.key:
            self._record(progress.key, "dead", reason)
        return outcome

    def _handle(self, delivery: Delivery, progress: _Progress) -> Outcome:
        message = delivery.envelope
        fields = {"alias": message.recipient, "message_id": message.message_id, "pubsub_id": delivery.pubsub_id}
        attributes = {**message.attributes(), "original_pubsub_id": delivery.pubsub_id}
        # Dead letters carry what came through Pub/Sub: for a claim check, the header block
        # and the claim attribute (the object stays for replay), never the 25 MB message.
        carried = message.mime
        # A reverse address routes as its alias; the owner's reply goes to the correspondent (issue 13).
        found = self._replies.identify(message.recipient) if self._replies is not None else None
        route_to = message.recipient if found is None else found.alias
        resolved = self._routes.resolve(route_to) if route_to else Reject(message.recipient, "reply address: no alias")
        if isinstance(resolved, Reject):
            reason = f"no route any more: {resolved.reason}"
            return self._dead_letter(carried, attributes, reason, delivery.pubsub_id)
        try:
            digest = digest_of(message)
        except SchemaError as exc:
            return self._dead_letter(carried, attributes, exc.reason, delivery.pubsub_id)
        if not (message.claim or message.stored) and message_digest(carried) != digest:
            reason = "the message bytes do not match their digest attribute"
            return self._dead_letter(carried, attributes, reason, delivery.pubsub_id)
        # The reply plan reads only the header block (Mailgun's verdicts and From), which is
        # what travels through Pub/Sub even for a claim-checked message.
        plan = None
        if found is not None and self._replies is not None:
            plan = self._replies.plan(found, message.mime, message.sender, resolved.targets)
        targets = (plan.correspondent,) if plan is not None and plan.correspondent else resolved.targets

        key = delivery_key(message.recipient, targets, digest)
        info = {"alias": message.recipient, "message_id": message.message_id, "targets": ",".join(targets)}
        lease = self._limits.send_timeout_seconds + self._limits.lease_margin_seconds
        begin = self._ledger.begin_delivery(
            key,
            lease,
            info,
            retake_dead=bool(message.replay or message.release),
            token=message.token,
            digest=token_binding(message.recipient, message.sender, digest),
            ignore_token=bool(message.release),
        )
        if begin.state == "conflict":
            return self._refuse_replayed_token(message, carried, attributes, begin.detail, fields)
        if begin.state == "done":
            return self._already_done(message, begin.detail, begin.previous, fields)
        if begin.state == "busy":
            event(logging.INFO, "another instance is sending it", stage="relay", outcome="retry", **fields)
            raise Busy("delivery in progress elsewhere")
        progress.key = key
        if begin.spared:  # a replay after some targets failed: the others had (or may still get) a copy
            kept = tuple(t for t in targets if t.lower() not in begin.spared)
            event(
                logging.INFO,
                f"replay: not sent again to {', '.join(t for t in targets if t not in kept)} (they did not fail)",
                stage="relay",
                outcome="replay",
                **fields,
            )
            targets = kept or targets

        failed = Failure(key, carried, carried, attributes, delivery.pubsub_id, resolved.rule.notify)
        if begin.doubt is not None:
            try:
                earlier = self._earlier_send(key, begin.doubt, targets[0], fields, begin.earlier)
            except TransientError as exc:
                self._release(key, begin.doubt, attempted=False)  # a wait is not a send attempt
                age = self._age(delivery)
                if age is not None and age > self._limits.max_age_seconds:
                    reason = (
                        f"gave up after {age:.0f}s: an earlier send may have reached Mailgun, "
                        f"and its events cannot tell ({exc.reason})"
                    )
                    return self._give_up(replace(failed, doubt=begin.doubt), reason)
                if not isinstance(exc, Settling):
                    event(logging.WARNING, f"will retry: {exc.reason}", stage="relay", outcome="retry", **fields)
                raise
            if earlier:
                progress.mailgun_id = earlier
                self._record_sent(key, earlier, self._sent_fields(delivery, carried, attributes, earlier), message)
                self._after_sent(message, plan, route_to)
                return Outcome("duplicate", earlier)
        started = 0.0
        try:
            mime = self._message_bytes(message, digest)
            failed = replace(failed, original=mime)
            seen = spam.verdict(message.spam_flag, message.spam_score)
            tag = seen.describe() if spam.decide(resolved.rule.spam, seen) == "tag" else ""
            alias = normalize(route_to) or route_to
            if self._replies is not None:
                outgoing = self._replies.compose(
                    plan, mime, alias, message.sender, resolved.targets,
                    resolved.rule.reply_name, self._routes.domains, spam_tag=tag,
                )  # fmt: skip
            else:
                outgoing = rewrite(mime, alias, message.sender, spam_tag=tag).pieces
            started = self._clock()
            mailgun_id = self._sender.send_mime(targets, outgoing, {DELIVERY_VARIABLE: key})
        except Unrewritable as exc:
            return self._give_up(failed, f"cannot rewrite: {exc.reason}")
        except PermanentError as exc:
            return self._give_up(failed, exc.reason)
        except MailgunUnsure as exc:
            # Mailgun may have it: never given up on (nor sent again) before its events say so.
            self._release(key, Doubt(started, self._clock()))
            event(
                logging.WARNING,
                f"will ask Mailgun's events before sending again: {exc.reason}",
                stage="relay",
                outcome="retry",
                **fields,
            )
            raise
        except TransientError as exc:
            self._release(key)
            age = self._age(delivery)
            if begin.attempts >= self._limits.max_attempts or (age is not None and age > self._limits.max_age_seconds):
                return self._give_up(
                    failed, f"gave up after {begin.attempts} attempts in {age or 0:.0f}s: {exc.reason}"
                )
            event(logging.WARNING, f"will retry: {exc.reason}", stage="relay", outcome="retry", **fields)
            wait = getattr(exc, "retry_after", None)
            if wait:
                self._sleep(min(float(wait), MAX_INLINE_WAIT_SECONDS))
            raise

        progress.mailgun_id = mailgun_id
        self._record_sent(key, mailgun_id, self._sent_fields(delivery, carried, attributes, mailgun_id), message)
        self._after_sent(message, plan, route_to)
        spam_seen = seen.flagged or (seen.score is not None and seen.score >= resolved.rule.spam.threshold)
        if found is None:  # a forwarded message (never a reply as the alias, nor an owner's notice)
            self._observe(message, mime, alias, resolved.targets, resolved.rule.notify, spam_seen)
        event(
            logging.INFO,
            "sent",
            stage="relay",
            outcome="sent",
            mailgun_id=mailgun_id,
            targets=list(targets),
            reason="fallback: the forward address would be invalid" if resolved.fallback_used else "",
            **fields,
        )
        return Outcome("sent", mailgun_id)

    def _after_sent(self, message: Envelope, plan: ReplyPlan | None, route_to: str) -> None:
        """What follows a send Mailgun accepted: the contact record (replies on). A claim-checked message
        keeps its object until Mailgun says delivered (the events function drops it then; the bucket's
        lifecycle rule is the backstop): a bounce needs it for the dead letter."""
        if self._replies is not None:
            self._replies.sent(plan, normalize(route_to) or route_to, message.mime, message.sender)

    def _earlier_send(
        self, key: str, doubt: Doubt, recipient: str, fields: dict[str, str], skip: tuple[str, ...] = ()
    ) -> str:
        """The Mailgun id of an earlier send of this delivery that Mailgun accepted, or "" when its events
        surely show none (then it is sent now). Raises Settling while "none" cannot be believed yet, and
        MailgunTransient while the Events API cannot be asked: never sent blind."""
        if self._sent_log is None:
            raise MailgunTransient("an earlier send may have reached Mailgun, and no Events API client is set up")
        found = self._sent_log.find_accepted(recipient, key, query_since(doubt), skip=skip)
        decision = decide(found, doubt, self._clock(), self._limits.events_settle_seconds)
        if decision.verdict == "sent":
            event(
                logging.INFO,
                "Mailgun had accepted an earlier send (found in its events): recorded sent, not sent again",
                stage="relay",
                outcome="duplicate",
                mailgun_id=decision.mailgun_id,
                **fields,
            )
            return decision.mailgun_id
        if decision.verdict == "wait":
            event(
                logging.INFO,
                "waiting for Mailgun's events to settle: an earlier send may have reached Mailgun "
                f"({decision.wait_seconds:.0f}s more before its absence is believed)",
                stage="relay",
                outcome="retry",
                **fields,
            )
            raise Settling("waiting for Mailgun's events to settle", decision.wait_seconds)
        if decision.forgotten:  # a replay days later: Mailgun may have dropped the events that would tell
            event(
                logging.WARNING,
                "sending it: an earlier send may have reached Mailgun over a day ago, longer than Mailgun "
                "surely keeps its events; if it did, this is a second copy",
                stage="relay",
                outcome="resend",
                **fields,
            )
            return ""
        event(
            logging.INFO,
            "Mailgun's settled events show no earlier send: sending it",
            stage="relay",
            outcome="resend",
            **fields,
        )
        return ""

    def _observe(
        self, message: Envelope, mime: bytes, alias: str, targets: tuple[str, ...], notify: str, spam: bool
    ) -> None:
        """Count the sent message (``mime``: as received, fetched whole for a claim check or a stored
        message) in its alias's record and judge a leak; a failure here is only logged (the message
        was sent: nothing may undo or repeat that)."""
        if self._insight is None:
            return
        try:
            seen = insight.sighting(alias, mime, message.sender, spam, self._clock())
            flag = insight.observe(self._insight, seen)
            if flag is None:
                return
            leak = flag.leak
            event(
                logging.WARNING,
                f"possible leak: first mail from {leak.domain}",
                stage="relay",
                outcome="leak",
                alias=alias,
                reason=f"new organisation {leak.domain}; known: {', '.join(leak.known)}",
            )
            if not flag.notify:
                event(logging.INFO, "leak notice withheld: over today's notice limit (the flag is recorded)",
                      stage="relay", alias=alias, outcome="leak")  # fmt: skip
            notified = flag.notify and self._tell_leak(leak, [notify] if notify else list(targets))
            write = insight.leak_write(flag.record, leak, notified)
            if write is not None:
                self._insight.update(alias, write)
        except Exception as exc:  # the message is sent: the insight is informational
            why = exc.reason if isinstance(exc, (TransientError, PermanentError)) else type(exc).__name__
            event(logging.WARNING, f"alias insight not recorded: {why}", stage="relay", alias=alias, outcome="sent")

    def _tell_leak(self, leak: insight.Leak, to: list[str]) -> bool:
        """Send the owner the leak notice (once: the marker is taken); False when it could not be sent."""
        link = ""
        try:
            link = self._block_link(leak.alias) if self._block_link is not None else ""
        except Exception as exc:  # the marker is taken: a notice lost now is never sent; it goes without the link
            why = exc.reason if isinstance(exc, (TransientError, PermanentError)) else type(exc).__name__
            event(logging.WARNING, f"leak notice sent without its block link: {why}", stage="relay",
                  alias=leak.alias, outcome="leak")  # fmt: skip
        try:
            self._sender.send_mime(to, insight.leak_notice(leak, ", ".join(to), link))
        except Exception as exc:  # the flag stays recorded (and logged); only the notice is lost
            why = exc.reason if isinstance(exc, (TransientError, PermanentError)) else type(exc).__name__
            event(logging.WARNING, f"leak notice not sent: {why}", stage="relay", alias=leak.alias, outcome="leak")
            return False
        event(logging.INFO, "owner told of a leak", stage="relay", alias=leak.alias, outcome="notified", targets=to)
        return True

    def _sent_fields(
        self, delivery: Delivery, carried: bytes, attributes: dict[str, str], mailgun_id: str
    ) -> dict[str, Any]:
        """What the ``sent`` write records besides the state (issue 12), in that same write: the ids and
        times, the attributes and what came through Pub/Sub, kept until the outcome is known."""
        fields: dict[str, Any] = {
            "mailgun_id": mailgun_id,
            "pubsub_id": delivery.pubsub_id,
            "received_at": delivery.publish_time.timestamp() if delivery.publish_time else 0.0,
            "sent_at": self._clock(),
            "attributes": attributes,
        }
        if len(carried) <= KEEP_INLINE_BYTES:
            fields["message"] = carried
        elif self._keep is not None:
            try:
                fields["blob"] = self._keep.put(carried, prefix=KEPT_PREFIX)
            except Exception as exc:  # the message is sent; only the copy for a bounce is missing
                why = exc.reason if isinstance(exc, TransientError) else type(exc).__name__
                event(logging.WARNING, f"sent copy not kept for a bounce: {why}", stage="relay", outcome="sent")
        else:
            event(
                logging.WARNING,
                f"sent copy of {len(carried)} bytes not kept for a bounce: no claim-check bucket "
                "(TAGRELAY_CLAIM_BUCKET)",
                stage="relay",
                outcome="sent",
            )
        return fields

    def _message_bytes(self, message: Envelope, digest: str) -> bytes:
        """The message to send: carried, fetched from the claim check (checked against its digest),
        or fetched from Mailgun's storage for a store(notify=...) route. Only called once the ledger
        said this delivery is still to do."""
        if message.claim:
            if self._claims is None:
                raise ClaimMissing("a claim-checked message, and no claim store is configured")
            mime = self._claims.get(message.claim)
            if message_digest(mime) != digest:
                raise ClaimMissing("the claim-check object does not match the message digest")
            return mime
        if message.stored:
            if self._stored is None:
                raise ClaimMissing("a store(notify=...) message, and no way to fetch it is configured")
            return self._stored.fetch_stored(message.stored)
        return message.mime

    def _already_done(self, message: Envelope, detail: str, previous: str, fields: dict[str, str]) -> Outcome:
        """A record says this exact message was handled for these targets: not sent again, and said so."""
        if message.replay or message.release:
            # A replay is never swallowed silently: it was already sent (or dead-lettered and
            # not retaken, which cannot happen with retake_dead), so say which.
            event(
                logging.WARNING,
                f"replay not sent: these exact bytes were already {previous or 'handled'} for these targets "
                f"({detail or 'no detail'})",
                stage="relay",
                outcome="duplicate",
                reason=f"already {previous}",
                **fields,
            )
        else:
            event(
                logging.INFO,
                "already handled: not sent again",
                stage="relay",
                outcome="duplicate",
                mailgun_id=detail,
                **fields,
            )
        # A duplicate's claim object is left to the bucket's lifecycle rule: a Pub/Sub redelivery of the
        # sent message itself names the very object kept for a bounce (issue 12), and nothing here tells them apart.
        return Outcome("duplicate", detail)

    def _refuse_replayed_token(
        self, message: Envelope, carried: bytes, attributes: dict[str, str], bound: str, fields: dict[str, str]
    ) -> Outcome:
        """A token already bound to another message: never delivered, kept as a refusal (raises to retry
        if the refusal cannot be written, so nothing goes unrecorded)."""
        reason = f"token reused for a different message (the token is bound to sha256 {bound[:16]}...)"
        refusal = Refusal(reason, message.recipient, message.sender, carried, "message", attributes)
        ident = self._ledger.record_refusal(refusal, token=message.token)  # LedgerUnavailable: redelivered
        event(
            logging.ERROR,
            f"refused: {reason}",
            stage="relay",
            outcome="refused",
            reason=reason,
            refusal=ident,
            **fields,
        )
        return Outcome("refused", ident)

    def _age(self, delivery: Delivery) -> float | None:
        if delivery.publish_time is None:
            return None
        return self._clock() - delivery.publish_time.timestamp()

    def _give_up(self, failed: Failure, reason: str) -> Outcome:
        try:
            outcome = self._dead_letter(failed.data, failed.attributes, reason, failed.pubsub_id)
        except TransientError:
            self._release(failed.key, failed.doubt)
            raise
        self._record(failed.key, "dead", reason)
        if failed.notify:
            self._notify(failed, reason)
        return outcome

    def _notify(self, failed: Failure, reason: str) -> None:
        """Tell the owner, with the original attached; a failure here is only logged (the dead letter exists)."""
        alias = failed.attributes.get("recipient", "")
        try:
            self._sender.send_mime([failed.notify], build_notice(failed.original, alias, reason, failed.notify))
        except Exception as exc:  # the dead letter exists; a notice must not undo that
            why = exc.reason if isinstance(exc, (TransientError, PermanentError)) else type(exc).__name__
            event(logging.WARNING, f"notice not sent: {why}", stage="relay", alias=alias, outcome="notice failed")
            return
        event(logging.INFO, "owner notified", stage="relay", alias=alias, outcome="notified", targets=[failed.notify])

    def _record(self, key: str, state: Any, detail: str, fields: dict[str, Any] | None = None) -> bool:
        """Record the end of a delivery (False: the kept copy in ``fields`` was not stored). If the ledger
        fails here, the message is still acknowledged; a redelivery Pub/Sub makes on its own finds the record
        ``sending``, and once the lease runs out it asks Mailgun's events before sending (issue 12)."""
        try:
            return self._ledger.delivery_done(key, state, detail, fields)
        except LedgerUnavailable as exc:
            event(logging.ERROR, f"{state} but not recorded: {exc.reason}", stage="relay", outcome=state)
            return True

    def _record_sent(self, key: str, mailgun_id: str, fields: dict[str, Any], message: Envelope) -> None:
        """Record ``sent``; when Mailgun's events already said delivered to every target (they came first and
        found nothing kept to drop), drop what was kept for a bounce here: the ``sent/`` copy, the claim object."""
        if self._record(key, "sent", mailgun_id, fields):
            return
        for store, ref in ((self._keep, str(fields.get("blob", ""))), (self._claims, message.claim)):
            if ref and store is not None:
                try:
                    store.delete(ref)
                except Exception as exc:  # cleanup: whatever fails, the bucket's lifecycle rule deletes it
                    why = exc.reason if isinstance(exc, (ClaimMissing, TransientError)) else type(exc).__name__
                    event(logging.WARNING, f"kept copy left for the lifecycle rule: {why}", stage="relay")

    def _release(self, key: str, doubt: Doubt | None = None, attempted: bool = True) -> None:
        try:
            self._ledger.release_delivery(key, doubt, attempted)
        except LedgerUnavailable as exc:
            event(logging.WARNING, f"lease not released (it runs out): {exc.reason}", stage="relay")

    def _dead_letter(self, data: bytes, attributes: dict[str, str], reason: str, pubsub_id: str) -> Outcome:
        self._deadletters.put(data, attributes, reason)
        event(
            logging.ERROR,
            f"dead-lettered: {reason}",
            stage="relay",
            outcome="dead-lettered",
            reason=reason,
            alias=attributes.get("recipient", ""),
            message_id=attributes.get("message_id", ""),
            pubsub_id=pubsub_id,
        )
        return Outcome("dead-lettered", reason)


class PubSubDeadLetters:
    """Dead letters published to their own topic, with the reason as an attribute."""

    def __init__(self, publisher: Any, clock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._clock = clock

    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        stamped = {
            **attributes,
            "deadletter_reason": reason.encode("utf-8")[:1000].decode("utf-8", "ignore"),  # attributes: 1 KB
            "deadlettered_at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
        }
        self._publisher.publish(data, stamped)
