"""Keys from the environment or Secret Manager, cached, refetched on rotation.

A key given directly never changes. A key given as a Secret Manager version
name is fetched on first use, cached for ``ttl`` seconds, and refetched at once
when a caller learns it is stale (Mailgun answered 401). The client is created
lazily so cold start does not pay for it when the key is in the environment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from tagrelay.adapters.lazy import Lazy
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import SecretUnavailable

ACCESS_TIMEOUT_SECONDS = 10.0


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
        self._lock = threading.Lock()
        self._value = ref.value
        self._fetched_at = float("-inf")

    @property
    def rotatable(self) -> bool:
        return bool(self._ref.version_name)

    def get(self) -> str:
        if not self.rotatable:
            return self._value
        with self._lock:
            if self._clock() - self._fetched_at >= self._ttl:
                self._fetch()
            return self._value

    def refresh(self) -> str:
        """Refetch now (after the service said the key is wrong)."""
        if not self.rotatable:
            return self._value
        with self._lock:
            self._fetch()
            return self._value

    def _fetch(self) -> None:
        from google.api_core.exceptions import GoogleAPIError

        try:
            response = self._client.get().access_secret_version(
                request={"name": self._ref.version_name}, timeout=ACCESS_TIMEOUT_SECONDS
            )
            self._value = response.payload.data.decode("utf-8").strip()
        except GoogleAPIError as exc:
            # The reason names the variable and the error class only, never a value.
            raise SecretUnavailable(f"{self._ref.variable}: Secret Manager failed ({type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise SecretUnavailable(f"{self._ref.variable}: secret payload is not UTF-8") from None
        self._fetched_at = self._clock()
