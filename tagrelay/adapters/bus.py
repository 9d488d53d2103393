"""Pub/Sub publishing with bounded waits.

``publish`` returns only once Pub/Sub acknowledged the message, and never waits
longer than ``timeout``: past that it raises BusUnavailable so ingest answers
503 and Mailgun retries. The client is passed in (or created lazily), so tests
use a real client pointed at the emulator.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from tagrelay.adapters.lazy import Lazy
from tagrelay.core.envelope import MAX_DATA_BYTES
from tagrelay.core.errors import BusUnavailable


def default_client() -> Any:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_messages=1, max_latency=0.0))


class Publisher:
    def __init__(
        self, project: str, topic: str, timeout: float, client_factory: Callable[[], Any] = default_client
    ) -> None:
        self.topic_path = f"projects/{project}/topics/{topic}"
        self._timeout = timeout
        self._client = Lazy(client_factory)

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish and wait for the acknowledgement; return the Pub/Sub message id."""
        from google.api_core.exceptions import GoogleAPIError
        from google.api_core.retry import Retry

        if len(data) > MAX_DATA_BYTES:
            raise ValueError(f"{len(data)} bytes is over the {MAX_DATA_BYTES} byte publish limit")
        try:
            future = self._client.get().publish(
                self.topic_path,
                data,
                retry=Retry(initial=0.1, maximum=2.0, timeout=self._timeout),
                timeout=self._timeout,
                **attributes,
            )
            return str(future.result(timeout=self._timeout + 1.0))
        except (concurrent.futures.TimeoutError, TimeoutError):
            raise BusUnavailable(f"no acknowledgement from Pub/Sub within {self._timeout:g}s") from None
        except GoogleAPIError as exc:
            raise BusUnavailable(f"Pub/Sub publish failed ({type(exc).__name__})") from None
