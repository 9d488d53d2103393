"""tagrelay.adapters.secrets.Secret: direct keys, the TTL cache, refresh on rotation, safe errors.

The Secret Manager client is passed in through ``client_factory`` (the intended
seam): a tiny fake with ``access_secret_version`` that records its calls.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core.exceptions import GoogleAPIError, PermissionDenied, ServiceUnavailable

from tagrelay.adapters.secrets import BACKOFF_FIRST_SECONDS, BACKOFF_MAX_SECONDS, Secret
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import SecretUnavailable
from tagrelay.core.log import JsonFormatter, logger

VERSION = "projects/demo/secrets/mailgun-key/versions/latest"


def google_error(kind: type[GoogleAPIError], message: str) -> GoogleAPIError:
    """A real google.api_core exception (its constructor is not annotated)."""
    return kind(message)


REF = SecretRef(variable="MAILGUN_API_KEY", version_name=VERSION)


@dataclass
class FakeSecretManager:
    """Answers access_secret_version with the next value, or raises the next error."""

    values: list[bytes | Exception]
    requests: list[dict[str, Any]] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)

    def access_secret_version(self, request: dict[str, Any], timeout: float | None = None) -> Any:
        self.requests.append(request)
        self.timeouts.append(timeout)
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, Exception):
            raise value
        return SimpleNamespace(payload=SimpleNamespace(data=value))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Factory:
    def __init__(self, client: FakeSecretManager) -> None:
        self.client = client
        self.created = 0

    def __call__(self) -> FakeSecretManager:
        self.created += 1
        return self.client


def test_direct_value_never_creates_a_client() -> None:
    def factory() -> Any:
        raise AssertionError("no client may be created for a key given directly")

    secret = Secret(SecretRef(variable="MAILGUN_API_KEY", value="key-direct"), client_factory=factory)
    assert not secret.rotatable
    assert secret.get() == "key-direct"
    assert secret.refresh() == "key-direct"


def test_version_name_is_fetched_on_first_use_only() -> None:
    client = FakeSecretManager([b"key-one\n"])
    factory = Factory(client)
    secret = Secret(REF, client_factory=factory, ttl=300, clock=Clock())
    assert factory.created == 0  # lazily: nothing at construction
    assert secret.rotatable
    assert secret.get() == "key-one"  # the payload's trailing newline is stripped
    assert client.requests == [{"name": VERSION}]
    assert client.timeouts[0] is not None and client.timeouts[0] > 0


def test_cached_within_ttl_and_refetched_after() -> None:
    client = FakeSecretManager([b"key-one", b"key-two"])
    clock = Clock()
    secret = Secret(REF, client_factory=Factory(client), ttl=300, clock=clock)
    assert secret.get() == "key-one"
    clock.now += 299
    assert secret.get() == "key-one"
    assert len(client.requests) == 1
    clock.now += 2  # 301 s after the fetch
    assert secret.get() == "key-two"
    assert len(client.requests) == 2
    clock.now += 100
    assert secret.get() == "key-two"
    assert len(client.requests) == 2


def test_refresh_refetches_immediately_and_restarts_the_ttl() -> None:
    client = FakeSecretManager([b"key-old", b"key-new"])
    clock = Clock()
    factory = Factory(client)
    secret = Secret(REF, client_factory=factory, ttl=300, clock=clock)
    assert secret.get() == "key-old"
    clock.now += 1
    assert secret.refresh() == "key-new"
    assert len(client.requests) == 2
    clock.now += 299
    assert secret.get() == "key-new"
    assert len(client.requests) == 2
    assert factory.created == 1  # the client is reused


@pytest.mark.parametrize(
    "error",
    [
        google_error(ServiceUnavailable, "secretmanager.googleapis.com unavailable"),
        google_error(PermissionDenied, "denied"),
    ],
)
def test_client_error_becomes_secret_unavailable(error: Exception) -> None:
    secret = Secret(REF, client_factory=Factory(FakeSecretManager([error])), clock=Clock())
    with pytest.raises(SecretUnavailable) as caught:
        secret.get()
    assert "MAILGUN_API_KEY" in caught.value.reason
    assert type(error).__name__ in caught.value.reason


def test_error_message_never_contains_the_secret_value() -> None:
    value = "key-s3cr3t-0123456789abcdef"
    # The service's error text carries the value (as a misbehaving proxy might echo it).
    client = FakeSecretManager([value.encode(), google_error(ServiceUnavailable, f"upstream said {value}")])
    clock = Clock()
    secret = Secret(REF, client_factory=Factory(client), ttl=10, clock=clock)
    assert secret.get() == value
    clock.now += 11
    with pytest.raises(SecretUnavailable) as caught:
        secret.refresh()  # a forced refresh reports its failure (a stale get would serve the old key)
    error = caught.value
    assert value not in str(error) and value not in error.reason and value not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__  # the original error is not chained


def test_payload_that_is_not_utf8() -> None:
    secret = Secret(REF, client_factory=Factory(FakeSecretManager([b"\xff\xfe"])), clock=Clock())
    with pytest.raises(SecretUnavailable, match="UTF-8"):
        secret.get()


def test_a_failed_first_fetch_is_503_and_retried_after_the_backoff() -> None:
    client = FakeSecretManager([google_error(ServiceUnavailable, "down"), b"key-back"])
    clock = Clock()
    secret = Secret(REF, client_factory=Factory(client), clock=clock)
    with pytest.raises(SecretUnavailable, match="ServiceUnavailable"):
        secret.get()
    with pytest.raises(SecretUnavailable, match="ServiceUnavailable"):
        secret.get()  # within the backoff: refused at once, Secret Manager is not asked again
    assert len(client.requests) == 1
    clock.now += BACKOFF_FIRST_SECONDS
    assert secret.get() == "key-back"
    assert len(client.requests) == 2


def test_an_outage_serves_the_last_good_key_with_capped_exponential_backoff() -> None:
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setFormatter(JsonFormatter())
    logger().addHandler(handler)
    try:
        outage(logged)
    finally:
        logger().removeHandler(handler)


def outage(logged: io.StringIO) -> None:
    down = google_error(ServiceUnavailable, "down")
    client = FakeSecretManager([b"key-good", down])
    clock = Clock()
    secret = Secret(REF, client_factory=Factory(client), ttl=300, clock=clock)
    assert secret.get() == "key-good"
    clock.now += 300  # stale: every get from now on would refresh
    attempts_at: list[float] = []
    for _ in range(2000):  # one call every 0.5 s for about 17 minutes of outage
        before = len(client.requests)
        assert secret.get() == "key-good"
        if len(client.requests) > before:
            attempts_at.append(clock.now)
        clock.now += 0.5
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(attempts_at)]
    # 1, 2, 4, ... seconds between attempts, never more than the cap, never a retry storm
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert set(gaps[6:]) == {BACKOFF_MAX_SECONDS}
    assert len(attempts_at) < 30
    warnings = [json.loads(line) for line in logged.getvalue().splitlines()]
    assert warnings and {line["severity"] for line in warnings} == {"WARNING"}
    assert "serving the last good key, next attempt in 1s" in warnings[0]["message"]
    client.values[:] = [b"key-rotated"]  # Secret Manager is back
    clock.now += BACKOFF_MAX_SECONDS
    assert secret.get() == "key-rotated"
    count = len(client.requests)
    clock.now += 299
    assert secret.get() == "key-rotated"
    assert len(client.requests) == count  # cached again for the TTL: the backoff is reset


class BlockingSecretManager:
    """Answers the first ``free`` calls at once, then waits until released: one fetch held in flight."""

    def __init__(self, value: bytes, free: int = 0) -> None:
        self.value = value
        self.free = free
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.calls_lock = threading.Lock()

    def access_secret_version(self, request: dict[str, Any], timeout: float | None = None) -> Any:
        with self.calls_lock:
            self.calls += 1
            if self.calls <= self.free:
                return SimpleNamespace(payload=SimpleNamespace(data=b"key-old"))
        self.started.set()
        assert self.release.wait(10)
        return SimpleNamespace(payload=SimpleNamespace(data=self.value))


def test_never_more_than_one_refresh_in_flight_and_the_old_key_meanwhile() -> None:
    clock = Clock()
    blocking = BlockingSecretManager(b"key-new", free=1)
    secret = Secret(REF, client_factory=lambda: blocking, ttl=300, clock=clock)
    assert secret.get() == "key-old"
    clock.now += 300
    results: list[str] = []
    refresher = threading.Thread(target=lambda: results.append(secret.get()))
    refresher.start()
    assert blocking.started.wait(10)
    # While that refresh hangs, other callers get the last good key at once, and start no fetch.
    assert [secret.get() for _ in range(50)] == ["key-old"] * 50
    assert blocking.calls == 2
    blocking.release.set()
    refresher.join(10)
    assert results == ["key-new"]
    assert secret.get() == "key-new"
    assert blocking.calls == 2


def test_callers_without_a_key_share_the_first_fetch() -> None:
    blocking = BlockingSecretManager(b"key-first")
    secret = Secret(REF, client_factory=lambda: blocking, clock=Clock())
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(secret.get())) for _ in range(5)]
    for thread in threads:
        thread.start()
    assert blocking.started.wait(10)
    blocking.release.set()
    for thread in threads:
        thread.join(10)
    assert results == ["key-first"] * 5
    assert blocking.calls == 1


def test_an_empty_secret_version_is_never_a_key() -> None:
    """An empty signing key would let anyone who knows the route key forge a signature."""
    secret = Secret(REF, client_factory=Factory(FakeSecretManager([b"  \n"])), clock=Clock())
    with pytest.raises(SecretUnavailable, match="empty"):
        secret.get()


def test_a_credentials_refresh_failure_is_an_outage_not_a_crash() -> None:
    from google.auth.exceptions import RefreshError

    refresh_failed = RefreshError("metadata server")  # type: ignore[no-untyped-call]
    secret = Secret(REF, client_factory=Factory(FakeSecretManager([refresh_failed])), clock=Clock())
    with pytest.raises(SecretUnavailable, match="RefreshError"):
        secret.get()
