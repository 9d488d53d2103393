"""The exception tree of tagrelay.

The tree mirrors the decision a caller makes: answer the client, retry later,
or give up and keep a record.

    TagrelayError
    ├── ConfigError              a setting is missing or wrong; fails at cold start
    │   └── RoutesError          the rules file is invalid (line and reason)
    ├── RejectedInput            the client sent it; ingest answers 4xx, nothing published
    │   ├── BadRequest           400: not a Mailgun form at all
    │   ├── BadSignature         401: bad/missing signature, stale timestamp, reused token
    │   └── Undeliverable        406: signed, but never deliverable (no route, loop, too large)
    ├── TransientError           retry later: ingest answers 503, relay raises for redelivery
    │   ├── Busy                 another instance holds the same work right now (not an outage)
    │   ├── BusUnavailable       Pub/Sub did not acknowledge in time
    │   ├── LedgerUnavailable    Firestore did not answer
    │   ├── SecretUnavailable    Secret Manager did not answer
    │   ├── ClaimUnavailable     Cloud Storage did not answer
    │   ├── Settling             a send may have reached Mailgun and its events are not trustworthy yet: wait
    │   └── MailgunTransient     429 (with retry_after), 5xx, timeout, connection error, 401
    │       └── MailgunUnsure    the request was written, then a timeout or lost connection: Mailgun may
    │                            have accepted it (ask its Events API before sending again)
    └── PermanentError           retrying cannot help: dead-letter with the reason
        ├── SchemaError          a Pub/Sub message that is not a tagrelay.v1 envelope
        ├── Unrewritable         the rewrite cannot produce a safe header block
        ├── ClaimMissing         the claim-check object is gone
        └── MailgunRejected      Mailgun answered 4xx (other than 401 and 429)

Tooling (``tagrelay_tools``) adds ``StackError`` under ``TagrelayError`` for a
local stack that cannot start; runtime code never raises it.

Every error carries a short ``reason`` that is safe to log: no secret values.
"""

from __future__ import annotations


class TagrelayError(Exception):
    """Base of every error tagrelay raises on purpose."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(TagrelayError):
    """One or more settings are missing or wrong; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class RoutesError(ConfigError):
    """The routing rules file is invalid."""

    def __init__(self, reason: str) -> None:
        super().__init__([reason])
        self.reason = reason


class RejectedInput(TagrelayError):
    """Input from a client that is answered with a 4xx status."""

    status = 400


class BadRequest(RejectedInput):
    status = 400


class BadSignature(RejectedInput):
    status = 401


class Undeliverable(RejectedInput):
    status = 406


class TransientError(TagrelayError):
    """A dependency is down or slow; the same input may succeed later."""


class Busy(TransientError):
    """Another instance is doing the same work right now: retry soon; not an outage, not logged as one."""


class BusUnavailable(TransientError):
    pass


class LedgerUnavailable(TransientError):
    pass


class SecretUnavailable(TransientError):
    pass


class ClaimUnavailable(TransientError):
    """Cloud Storage did not answer; retry later."""


class Settling(TransientError):
    """An earlier send may have reached Mailgun, its Events API does not show it, and the window is too
    recent to trust that: retry later (not an outage; the wait does not count as a send attempt)."""

    def __init__(self, reason: str, wait_seconds: float) -> None:
        super().__init__(reason)
        self.wait_seconds = wait_seconds


class MailgunTransient(TransientError):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class MailgunUnsure(MailgunTransient):
    """The request reached Mailgun (at least in part) and no answer came back: it may have been accepted.

    Raised for a read timeout or a connection lost after it was established; never for a refused
    connection, a connect timeout or an answer (429, 5xx), which say for sure nothing was accepted.
    """


class PermanentError(TagrelayError):
    """Retrying cannot help; the message goes to the dead-letter topic."""


class SchemaError(PermanentError):
    """A Pub/Sub message that is not a tagrelay.v1 envelope."""


class Unrewritable(PermanentError):
    """The rewrite cannot produce a header block that says what it means."""


class ClaimMissing(PermanentError):
    """The claim-check object is gone (deleted by the lifecycle rule, or never written)."""


class MailgunRejected(PermanentError):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status
