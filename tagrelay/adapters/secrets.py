"""Keys from the environment or Secret Manager, cached, refetched on rotation, kept through outages.

A key given directly never changes. A key given as a Secret Manager version
name is fetched on first use, cached for ``ttl`` seconds, and refetched at once
when a caller learns it is stale (Mailgun answered 401). The client is created
lazily so cold start does not pay for it when the key is in the environment.

Secret Manager being down must not turn valid mail into 503s: once a key has
been fetched, a failed refresh serves the last good key, and the next attempt
waits (exponential backoff from BACKOFF_FIRST_SECONDS, capped at
BACKOFF_MAX_SECONDS). At most one fetch is in flight per key: callers that
have a key keep using it meanwhile; callers without one wait for that fetch.
Only while no key has ever been fetched does a failure reach the caller
(SecretUnavailable: ingest answers 503 and Mailgun retries), and during the
backoff it does so at once instead of trying again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tagrelay.adapters.lazy import Lazy
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import SecretUnavailable
from tagrelay.core.log import event

ACCESS_TIMEOUT_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
WAIT_FOR_FETCH_SECONDS = ACCESS_TIMEOUT_SECONDS + 5.0  # a caller without a key waits this long for the fetch


def default_client() -> Any:
    from google.cloud import secretmanager

    return secretmanager.SecretManagerServiceClient()


class Secret:
    def __init__(
        self,
        ref: SecretRef,
        client_factory: Callable[[], Any] = default_client,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ref = ref
        self._client = Lazy(client_factory)
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below; never held during a fetch
        self._fetching = threading.Lock()  # held by the one fetch in flight
        self._value = ref.value
        self._good = bool(ref.value)  # a value has been fetched (or given) at least once
        self._fetched_at = float("-inf")
        self._failures = 0
        self._retry_at = float("-inf")
        self._last_error = ""

    @property
    def rotatable(self) -> bool:
        return bool(self._ref.version_name)

    def get(self) -> str:
        """The key: cached, refreshed after ``ttl``, the last good one while Secret Manager fails."""
        if not self.rotatable:
            return self._value
        with self._lock:
            now = self._clock()
            if self._good and now - self._fetched_at < self._ttl:
                return self._value
            if now < self._retry_at:  # backing off after a failure
                return self._serve_or_raise()
        return self._refresh(forced=False)

    def refresh(self) -> str:
        """Refetch now (after the service said the key is wrong); raises SecretUnavailable if that fails."""
        if not self.rotatable:
            return self._value
        return self._refresh(forced=True)

    def _serve_or_raise(self) -> str:
        """With ``_lock`` held: the last good key, or SecretUnavailable when there never was one."""
        if self._good:
            return self._value
        raise SecretUnavailable(self._last_error or f"{self._ref.variable}: Secret Manager failed")

    def _refresh(self, forced: bool) -> str:
        started = self._clock()
        if self._good and not forced:
            if not self._fetching.acquire(blocking=False):  # another refresh is in flight: keep serving
                with self._lock:
                    return self._serve_or_raise()
        elif not self._fetching.acquire(timeout=WAIT_FOR_FETCH_SECONDS):
            with self._lock:
                return self._serve_or_raise() if not forced else self._raise_timeout()
        try:
            with self._lock:  # the fetch we waited for may have done the work
                fresh = self._fetched_at >= started if forced else self._clock() - self._fetched_at < self._ttl
                if self._good and fresh:
                    return self._value
            try:
                value = self._fetch()
            except SecretUnavailable as exc:
                return self._failed(exc, forced)
            with self._lock:
                self._value, self._good = value, True
                self._fetched_at = self._clock()
                self._failures, self._retry_at, self._last_error = 0, float("-inf"), ""
                return value
        finally:
            self._fetching.release()

    def _failed(self, exc: SecretUnavailable, forced: bool) -> str:
        with self._lock:
            self._failures += 1
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (self._failures - 1))
            self._retry_at = self._clock() + delay
            self._last_error = exc.reason
            if forced or not self._good:
                raise exc
            value = self._value
        event(
            logging.WARNING,
            f"{exc.reason}; serving the last good key, next attempt in {delay:g}s",
            stage="secrets",
            outcome="stale key served",
        )
        return value

    def _raise_timeout(self) -> str:
        raise SecretUnavailable(f"{self._ref.variable}: another Secret Manager fetch did not finish in time")

    def _fetch(self) -> str:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        try:
            response = self._client.get().access_secret_version(
                request={"name": self._ref.version_name}, timeout=ACCESS_TIMEOUT_SECONDS
            )
            value = str(response.payload.data.decode("utf-8").strip())
        except (GoogleAPIError, GoogleAuthError) as exc:
            # The reason names the variable and the error class only, never a value.
            raise SecretUnavailable(f"{self._ref.variable}: Secret Manager failed ({type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise SecretUnavailable(f"{self._ref.variable}: secret payload is not UTF-8") from None
        if not value:  # an empty key would sign (or verify) anything: never a key
            raise SecretUnavailable(f"{self._ref.variable}: the secret version is empty")
        return value
