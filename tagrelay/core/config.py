"""Settings from the environment, validated once at cold start.

Every problem is reported on its own line naming the variable and what to put
there; nothing silently falls back to a default when it was set wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from tagrelay.core.errors import ConfigError, RoutesError
from tagrelay.core.routes import Routes, load_file

DEFAULT_TOPIC = "tagrelay-inbound"
DEFAULT_DEADLETTER_TOPIC = "tagrelay-deadletter"
DEFAULT_API_BASE = "https://api.mailgun.net"  # Mailgun's US region
EU_API_BASE = "https://api.eu.mailgun.net"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# Mailgun's largest message is 25 MB; its form adds the envelope and signature fields.
# This caps a multipart post; a urlencoded one may be 3 times as long (inbound.URLENCODED_EXPANSION).
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_BODY_BYTES = MAX_MESSAGE_BYTES + 1024 * 1024
MIN_ROUTE_KEY_CHARS = 16
DEFAULT_EVENTS_SETTLE_SECONDS = 1800  # Mailgun's Event Polling guidance: trust events older than half an hour
MAX_EVENTS_SETTLE_SECONDS = 24 * 3600  # Mailgun keeps events 1 day (free plans) to 30 days
DEFAULT_LEASE_MARGIN_SECONDS = 30
_SECRET_VERSION = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9._~%+-]{2,254}")
_WHOLE = re.compile(r"[+-]?[0-9]+")


def _plain(number: float) -> str:
    """A bound as people write it: 536870912, not 5.36871e+08; 0.5 stays 0.5."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


@dataclass(frozen=True)
class SecretRef:
    """A key given directly (``value``) or as a Secret Manager version name.

    The value never appears in repr() or str() (a config object printed in a log or a
    traceback must not carry the key); they say only whether one is set.
    """

    variable: str
    value: str = field(default="", repr=False)
    version_name: str = ""

    def __repr__(self) -> str:
        shown = "'***'" if self.value else "''"
        return f"SecretRef(variable={self.variable!r}, value={shown}, version_name={self.version_name!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class IngestConfig:
    project: str
    topic: str
    routes: Routes
    signing_key: SecretRef
    max_age_seconds: float  # the retry horizon: older timestamps are refused
    publish_timeout: float
    max_body_bytes: int
    claim_bucket: str = ""  # Cloud Storage bucket for messages over Pub/Sub's 10 MB cap
    route_key: SecretRef | None = None  # the route URL's ?k=: when set, a post without it is refused first
    route_key_previous: SecretRef | None = None  # still accepted while a rotation settles
    alias_cache_seconds: float = 30.0  # how long ingest trusts its read of the alias control states


@dataclass(frozen=True)
class RelayConfig:
    project: str
    routes: Routes
    mailgun_domain: str
    api_base: str
    api_key: SecretRef
    deadletter_topic: str
    mailgun_timeout: float
    max_delivery_age_seconds: float
    max_attempts: int
    # How old Mailgun's events must be before "no accepted event" is believed (issue 12): a send that
    # may have reached Mailgun unseen is sent again only after this long (Mailgun: about half an hour).
    events_settle_seconds: float = DEFAULT_EVENTS_SETTLE_SECONDS
    lease_margin_seconds: float = DEFAULT_LEASE_MARGIN_SECONDS  # a delivery lease: MAILGUN_TIMEOUT + this


class _Reader:
    """Collects every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def required(self, name: str, hint: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is not set: {hint}")
        return value

    def resource_id(self, name: str, default: str) -> str:
        value = self.env.get(name, default).strip()
        if not _RESOURCE_ID.fullmatch(value):
            self.problems.append(f"{name}={value!r} is not a valid Pub/Sub id (letters first, at least 3 characters)")
        return value

    def number(self, name: str, default: float, low: float, high: float, unit: str) -> float:
        """A decimal setting in ``unit`` (plural: "seconds"), between ``low`` and ``high``."""
        value = self._numeric(name, low, high, f"a number of {unit}", whole=False)
        return default if value is None else value

    def whole(self, name: str, default: int, low: int, high: int, unit: str) -> int:
        """A count or a size in ``unit`` (plural: "bytes", "attempts"): a fraction is refused, never truncated."""
        value = self._numeric(name, low, high, f"a whole number of {unit}", whole=True)
        return default if value is None else int(value)

    def _numeric(self, name: str, low: float, high: float, what: str, whole: bool) -> float | None:
        """The value, or None when unset or wrong (then a problem says so, with ``what`` to put)."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return None
        wanted = f"put {what} between {_plain(low)} and {_plain(high)}"
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a number: {wanted}")
            return None
        if whole and not _WHOLE.fullmatch(raw):
            self.problems.append(f"{name}={raw!r} is not a whole number: {wanted}")
            return None
        if not low <= value <= high:
            self.problems.append(f"{name}={raw!r} is out of range: {wanted}")
            return None
        return float(int(raw)) if whole else value

    def secret(self, name: str) -> SecretRef:
        value = self.env.get(name, "").strip()
        secret_var = f"{name}_SECRET"
        version = self.env.get(secret_var, "").strip()
        if value and version:
            self.problems.append(f"{name} and {secret_var} are both set: keep one")
        elif version and not _SECRET_VERSION.fullmatch(version):
            self.problems.append(f"{secret_var} must be a version name like projects/P/secrets/NAME/versions/latest")
        elif not value and not version:
            self.problems.append(f"{name} is not set: put the key there, or its Secret Manager version in {secret_var}")
        return SecretRef(variable=name, value=value, version_name=version)

    def optional_secret(self, name: str) -> SecretRef | None:
        """Like :meth:`secret`, but absent is allowed (None); a bad value is still a problem."""
        if not self.env.get(name, "").strip() and not self.env.get(f"{name}_SECRET", "").strip():
            return None
        ref = self.secret(name)
        if ref.value and len(ref.value) < MIN_ROUTE_KEY_CHARS:
            self.problems.append(
                f"{name} is shorter than {MIN_ROUTE_KEY_CHARS} characters: put a random key "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return ref

    def routes(self) -> Routes | None:
        path = self.required("TAGRELAY_ROUTES", "put the path of the routing rules file (see routes.example.toml)")
        if not path:
            return None
        try:
            return load_file(path)
        except RoutesError as exc:
            self.problems.append(f"TAGRELAY_ROUTES: {exc.reason}")
            return None

    def url(self, name: str, default: str) -> str:
        """An https URL; http only to this machine (the local stand-in), or the API key would travel in clear."""
        value = self.env.get(name, default).strip().rstrip("/")
        try:
            parsed = urlparse(value)
            host = parsed.hostname or ""
        except ValueError:  # e.g. "http://[bad": one line naming the variable, not a traceback
            parsed, host = urlparse(""), ""
        if parsed.scheme not in ("http", "https") or not parsed.netloc or not host:
            self.problems.append(f"{name}={value!r} is not a URL: put {DEFAULT_API_BASE} or {EU_API_BASE}")
        elif parsed.scheme == "http" and host.lower() not in LOCAL_HOSTS:
            self.problems.append(
                f"{name}={value!r} uses http: the API key would travel in clear; put https://{parsed.netloc} "
                f"(http is only for {', '.join(sorted(LOCAL_HOSTS))})"
            )
        return value

    def done(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def load_ingest(env: Mapping[str, str]) -> IngestConfig:
    reader = _Reader(env)
    project = reader.required("GOOGLE_CLOUD_PROJECT", "put the id of the project that holds the topic")
    topic = reader.resource_id("TAGRELAY_TOPIC", DEFAULT_TOPIC)
    routes = reader.routes()
    key = reader.secret("MAILGUN_WEBHOOK_SIGNING_KEY")
    max_age = reader.number("TAGRELAY_MAX_AGE_SECONDS", 9 * 3600, 60, 7 * 24 * 3600, "seconds")
    timeout = reader.number("TAGRELAY_PUBLISH_TIMEOUT", 10, 0.5, 60, "seconds")
    max_body = reader.whole("TAGRELAY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024, 512 * 1024 * 1024, "bytes")
    route_key = reader.optional_secret("TAGRELAY_ROUTE_KEY")
    route_key_previous = reader.optional_secret("TAGRELAY_ROUTE_KEY_PREVIOUS")
    if route_key_previous is not None and route_key is None:
        reader.problems.append(
            "TAGRELAY_ROUTE_KEY_PREVIOUS is set without TAGRELAY_ROUTE_KEY: set the current key too (or neither)"
        )
    bucket = env.get("TAGRELAY_CLAIM_BUCKET", "").strip()
    if bucket and not _BUCKET.fullmatch(bucket):
        reader.problems.append(f"TAGRELAY_CLAIM_BUCKET={bucket!r} is not a bucket name (3-63 of a-z 0-9 - _ .)")
    cache = reader.number("TAGRELAY_ALIAS_CACHE_SECONDS", 30, 0.5, 300, "seconds")
    reader.done()
    assert routes is not None
    return IngestConfig(
        project, topic, routes, key, max_age, timeout, max_body, bucket, route_key, route_key_previous, cache
    )


def load_public_url(env: Mapping[str, str]) -> str:
    """``TAGRELAY_PUBLIC_URL``: ingest's public URL, the base of block links ("" when unset).

    https (http only to this machine, for the local stack); the links carry a MAC, not a secret,
    but a page that changes state is not served over clear text.
    """
    if not env.get("TAGRELAY_PUBLIC_URL", "").strip():
        return ""
    reader = _Reader(env)
    value = reader.url("TAGRELAY_PUBLIC_URL", "")
    if reader.problems:
        reader.problems = [
            "TAGRELAY_PUBLIC_URL must be ingest's https URL, e.g. https://REGION-PROJECT.cloudfunctions.net/ingest"
        ]
    reader.done()
    return value


def load_relay(env: Mapping[str, str]) -> RelayConfig:
    reader = _Reader(env)
    project = reader.required("GOOGLE_CLOUD_PROJECT", "put the id of the project that holds the topics")
    routes = reader.routes()
    domain = reader.required("MAILGUN_DOMAIN", "put your Mailgun sending domain, e.g. example.org")
    base = reader.url("MAILGUN_API_BASE", DEFAULT_API_BASE)
    key = reader.secret("MAILGUN_API_KEY")
    deadletter = reader.resource_id("TAGRELAY_DEADLETTER_TOPIC", DEFAULT_DEADLETTER_TOPIC)
    timeout = reader.number("MAILGUN_TIMEOUT", 60, 1, 540, "seconds")
    before = len(reader.problems)
    max_age = reader.number("TAGRELAY_MAX_DELIVERY_AGE_SECONDS", 24 * 3600, 1, 7 * 24 * 3600, "seconds")
    age_ok = len(reader.problems) == before
    attempts = reader.whole("TAGRELAY_MAX_ATTEMPTS", 10, 1, 1000, "attempts")
    before = len(reader.problems)
    settle = reader.whole(
        "TAGRELAY_EVENTS_SETTLE_SECONDS", DEFAULT_EVENTS_SETTLE_SECONDS, 0, MAX_EVENTS_SETTLE_SECONDS, "seconds"
    )
    if age_ok and len(reader.problems) == before and settle >= max_age:
        reader.problems.append(
            f"TAGRELAY_EVENTS_SETTLE_SECONDS={settle} is not below "
            f"TAGRELAY_MAX_DELIVERY_AGE_SECONDS={_plain(max_age)}: "
            "a send that may have reached Mailgun would be dead-lettered before its events can be trusted; "
            "put a settle time shorter than the delivery age (or a longer age)"
        )
    margin = reader.whole("TAGRELAY_LEASE_MARGIN_SECONDS", DEFAULT_LEASE_MARGIN_SECONDS, 1, 600, "seconds")
    reader.done()
    assert routes is not None
    return RelayConfig(
        project, routes, domain, base, key, deadletter, timeout, max_age, attempts, settle, margin
    )  # fmt: skip


# -- replying as the alias (issue 13) ------------------------------------------------------

MIN_REPLY_KEY_CHARS = 32


@dataclass(frozen=True)
class ReplyConfig:
    """The reply key (HMAC of reverse addresses) and, during a rotation, the previous one."""

    key: SecretRef
    previous: SecretRef | None = None


def load_replies(env: Mapping[str, str]) -> ReplyConfig | None:
    """Reply settings; None when no reply key is set (then forwarded copies keep the sender's Reply-To).

    ``TAGRELAY_REPLY_KEY`` / ``TAGRELAY_REPLY_KEY_SECRET``: the current key.
    ``TAGRELAY_REPLY_KEY_PREVIOUS`` / ``TAGRELAY_REPLY_KEY_PREVIOUS_SECRET``: the key before
    the last rotation; addresses made with it keep verifying while it is set.
    """
    reader = _Reader(env)

    def given(name: str) -> bool:
        return bool(env.get(name, "").strip() or env.get(f"{name}_SECRET", "").strip())

    if not given("TAGRELAY_REPLY_KEY"):
        if given("TAGRELAY_REPLY_KEY_PREVIOUS"):
            reader.problems.append(
                "TAGRELAY_REPLY_KEY_PREVIOUS is set but TAGRELAY_REPLY_KEY is not: put the new key in "
                "TAGRELAY_REPLY_KEY (or its Secret Manager version in TAGRELAY_REPLY_KEY_SECRET)"
            )
        reader.done()
        return None
    key = reader.secret("TAGRELAY_REPLY_KEY")
    previous = reader.secret("TAGRELAY_REPLY_KEY_PREVIOUS") if given("TAGRELAY_REPLY_KEY_PREVIOUS") else None
    for ref in (key, previous):
        if ref is not None and ref.value and len(ref.value) < MIN_REPLY_KEY_CHARS:
            reader.problems.append(
                f"{ref.variable} is shorter than {MIN_REPLY_KEY_CHARS} characters: put a random key "
                "(e.g. the output of: openssl rand -hex 32)"
            )
    reader.done()
    return ReplyConfig(key, previous)


# -- the events function (issue 12) --------------------------------------------------------

# Mailgun retries a webhook for about 8 hours (5, 10, 15 min, 1, 2, 4 h), and its documentation does not say a
# retry is signed afresh (third-party references say the original signature block is resent): the window covers
# the whole retry span, as ingest's does for route posts. A token stays single use (spent until the window ends).
DEFAULT_EVENT_MAX_AGE_SECONDS = 9 * 3600


@dataclass(frozen=True)
class EventsConfig:
    """The events function: Mailgun's event webhooks in, delivery records, dead letters and notices out."""

    project: str
    routes: Routes
    signing_key: SecretRef  # the HTTP webhook signing key: the same secret as ingest's
    max_age_seconds: float  # an event post's timestamp window (a Mailgun retry may carry its first signature)
    mailgun_domain: str
    api_base: str
    api_key: SecretRef  # for the owner notice
    deadletter_topic: str
    mailgun_timeout: float
    claim_bucket: str = ""


def load_events(env: Mapping[str, str]) -> EventsConfig:
    reader = _Reader(env)
    project = reader.required("GOOGLE_CLOUD_PROJECT", "put the id of the project that holds the ledger")
    routes = reader.routes()
    key = reader.secret("MAILGUN_WEBHOOK_SIGNING_KEY")
    max_age = reader.number("TAGRELAY_EVENT_MAX_AGE_SECONDS", DEFAULT_EVENT_MAX_AGE_SECONDS, 60, 9 * 3600, "seconds")
    domain = reader.required("MAILGUN_DOMAIN", "put your Mailgun sending domain, e.g. example.org")
    base = reader.url("MAILGUN_API_BASE", DEFAULT_API_BASE)
    api_key = reader.secret("MAILGUN_API_KEY")
    deadletter = reader.resource_id("TAGRELAY_DEADLETTER_TOPIC", DEFAULT_DEADLETTER_TOPIC)
    timeout = reader.number("MAILGUN_TIMEOUT", 10, 1, 540, "seconds")  # the notice is sent before the answer
    bucket = env.get("TAGRELAY_CLAIM_BUCKET", "").strip()
    if bucket and not _BUCKET.fullmatch(bucket):
        reader.problems.append(f"TAGRELAY_CLAIM_BUCKET={bucket!r} is not a bucket name (3-63 of a-z 0-9 - _ .)")
    reader.done()
    assert routes is not None
    return EventsConfig(project, routes, key, max_age, domain, base, api_key, deadletter, timeout, bucket)
