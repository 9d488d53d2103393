"""(7) What one message costs, counted: network round trips, Firestore reads and writes, per stage.

Counted, not estimated: ingest and relay run in this process with their real
adapters and real Google clients, pointed at the stack's emulators and stand-ins.
Every gRPC call to Pub/Sub and Firestore passes a counting interceptor on the
client's channel, and every HTTP request to Mailgun or Cloud Storage a counting
``requests`` session, so a call the code makes is a call counted, whatever path
made it (retries included).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import grpc
import requests

# Firestore RPCs by what they are billed as (a batch get or a query is billed per document returned;
# here one document per call, which the ledger's single-document operations are).
FIRESTORE_READS = frozenset({"BatchGetDocuments", "GetDocument", "RunQuery", "RunAggregationQuery", "ListDocuments"})
FIRESTORE_WRITES = frozenset({"Commit", "CreateDocument", "UpdateDocument", "Write", "BatchWrite"})
FIRESTORE_OTHER = frozenset({"BeginTransaction", "Rollback", "DeleteDocument"})


class CallCounter(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Counts every gRPC call on the channels it intercepts, by method name (``Publish``, ``Commit``…)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, details: Any) -> None:
        with self._lock:
            self.calls[str(details.method).rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        self._count(details)
        return continuation(details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        self._count(details)
        return continuation(details, requests)

    def take(self) -> dict[str, int]:
        """The counts so far, and start again from zero."""
        with self._lock:
            found = dict(self.calls)
            self.calls.clear()
            return found


class CountingSession(requests.Session):
    """A requests session that counts the requests it sends, by method and host."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        with self._lock:
            self.calls[f"{request.method} {urlparse(request.url or '').netloc}"] += 1
        return super().send(request, **kwargs)

    def take(self) -> dict[str, int]:
        with self._lock:
            found = dict(self.calls)
            self.calls.clear()
            return found


def firestore_factory(project: str, counter: CallCounter) -> Callable[[], Any]:
    """A Firestore client on the emulator (FIRESTORE_EMULATOR_HOST) whose channel counts every call."""

    def create() -> Any:
        from google.cloud import firestore

        class Counting(firestore.Client):
            def _emulator_channel(self, transport: Any) -> Any:
                return grpc.intercept_channel(super()._emulator_channel(transport), counter)  # type: ignore[no-untyped-call]

        return Counting(project=project)

    return create


def publisher_factory(counter: CallCounter, client_factory: Callable[..., Any]) -> Callable[[], Any]:
    """The production publisher client (same batch settings) on a counted channel to the emulator."""

    def create() -> Any:
        from google.pubsub_v1.services.publisher.transports.grpc import PublisherGrpcTransport

        host = os.environ["PUBSUB_EMULATOR_HOST"]
        channel = grpc.intercept_channel(grpc.insecure_channel(host), counter)
        return client_factory(transport=PublisherGrpcTransport(channel=channel))

    return create


def storage_factory(session: CountingSession) -> Callable[[], Any]:
    """A Cloud Storage client on the emulator (STORAGE_EMULATOR_HOST) that sends through ``session``."""

    def create() -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

        return storage.Client(
            project="tagrelay-local",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            _http=session,
        )

    return create


def firestore_ops(calls: dict[str, int]) -> dict[str, int]:
    """Reads, writes and other round trips among Firestore calls."""
    return {
        "reads": sum(n for m, n in calls.items() if m in FIRESTORE_READS),
        "writes": sum(n for m, n in calls.items() if m in FIRESTORE_WRITES),
        "other": sum(n for m, n in calls.items() if m not in FIRESTORE_READS | FIRESTORE_WRITES),
    }
