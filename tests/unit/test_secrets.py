"""tagrelay.adapters.secrets.Secret: direct keys, the TTL cache, refresh on rotation, safe errors.

The Secret Manager client is passed in through ``client_factory`` (the intended
seam): a tiny fake with ``access_secret_version`` that records its calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core.exceptions import GoogleAPIError, PermissionDenied, ServiceUnavailable

from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import SecretUnavailable

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
        secret.get()
    error = caught.value
    assert value not in str(error) and value not in error.reason and value not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__  # the original error is not chained


def test_payload_that_is_not_utf8() -> None:
    secret = Secret(REF, client_factory=Factory(FakeSecretManager([b"\xff\xfe"])), clock=Clock())
    with pytest.raises(SecretUnavailable, match="UTF-8"):
        secret.get()


def test_a_failed_fetch_is_retried_on_the_next_call() -> None:
    client = FakeSecretManager([google_error(ServiceUnavailable, "down"), b"key-back"])
    secret = Secret(REF, client_factory=Factory(client), clock=Clock())
    with pytest.raises(SecretUnavailable):
        secret.get()
    assert secret.get() == "key-back"
