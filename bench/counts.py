"""(7) What one message costs, counted: network round trips, Firestore reads and writes, per stage.

Counted, not estimated: ingest and relay run in this process with their real
adapters and real Google clients, pointed at the stack's emulators and stand-ins.
Every gRPC call to Pub/Sub and Firestore passes a counting interceptor on the
client's channel, and every HTTP request to Mailgun or Cloud Storage a counting
``requests`` session, so a call the code makes is a call counted, whatever path
made it (retries included).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import grpc
import requests

from bench.results import Result, at_most
from tagrelay_tools import mailgun_posts
from tagrelay_tools.localstack import Stack


class CallCounter(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Counts every gRPC call on the channels it intercepts, by method name (``Publish``, ``Commit``…)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.documents: collections.Counter[str] = collections.Counter()  # Firestore's billing units
        self._lock = threading.Lock()

    def _count(self, details: Any, request: Any = None) -> None:
        method = str(details.method).rsplit("/", 1)[-1]
        with self._lock:
            self.calls[method] += 1
            # Firestore bills per document: a commit of two writes is two writes, a batch get of
            # two documents two reads (found or not).
            if method == "Commit":
                for write in getattr(request, "writes", ()):
                    self.documents["deletes" if getattr(write, "delete", "") else "writes"] += 1
            elif method == "BatchGetDocuments":
                self.documents["reads"] += len(getattr(request, "documents", ()))
            elif method in ("GetDocument", "RunQuery", "RunAggregationQuery"):
                self.documents["reads"] += 1  # at least one; queries are the CLI's, not a message's

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details, request)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details, request)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        self._count(details)
        return continuation(details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        self._count(details)
        return continuation(details, requests)

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        """(calls by method, Firestore documents read/written/deleted) so far, and start again from zero."""
        with self._lock:
            found = (dict(self.calls), dict(self.documents))
            self.calls.clear()
            self.documents.clear()
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


COUNT_TOPIC = "bench-counts"
COUNT_HOLD = "bench-counts-hold"
RECIPIENT = "bench@example.org"


@dataclass
class Stage:
    """What one stage did for the messages it handled, per message."""

    messages: int
    grpc: dict[str, float]  # gRPC method -> calls per message (Pub/Sub and Firestore)
    documents: dict[str, float]  # Firestore documents "reads", "writes", "deletes" per message
    http: dict[str, float]  # "METHOD host" -> requests per message (Mailgun, Cloud Storage)
    cpu_ms: float  # CPU of the handler in this process, per message
    wall_ms: float  # wall time of the handler, per message
    pubsub_bytes: float  # data and attributes published (ingest) or delivered (relay), per message

    def round_trips(self) -> float:
        return sum(self.grpc.values()) + sum(self.http.values())


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """The functions read their settings (and the Google clients their emulator hosts) from os.environ."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _per(counter: dict[str, int], messages: int) -> dict[str, float]:
    return {name: count / messages for name, count in sorted(counter.items())}


def measure(
    stack: Stack, messages: int, raw_for: Callable[[int], bytes], replace: dict[str, Any] | None = None
) -> dict[str, Stage]:
    """Post ``messages`` signed messages through ingest, then hand each published message to the relay,
    both in this process with counted clients; what each stage did, per message. ``replace``: StandIns
    fields to set (e.g. ``insight``, to count the relay without a collaborator)."""
    from tagrelay import app
    from tagrelay.adapters import bus

    grpc_calls, http = CallCounter(), CountingSession()
    stand_ins = app.StandIns(
        firestore_client=firestore_factory(stack.project, grpc_calls),
        publisher_client=publisher_factory(grpc_calls, bus.default_client),
        storage_client=storage_factory(http),
        http_session=lambda: http,
    )
    if replace:
        stand_ins = dataclasses.replace(stand_ins, **replace)
    stack.ensure_topic(COUNT_TOPIC)
    stack.ensure_subscription(COUNT_HOLD, COUNT_TOPIC)
    stages: dict[str, Stage] = {}
    # The alias control cache at its production period (the local stack's is 1 s, for the tests):
    # its one query is counted when the warm-up post makes it, and once more per 30 s after that.
    ingest_env = {"TAGRELAY_TOPIC": COUNT_TOPIC, "TAGRELAY_ALIAS_CACHE_SECONDS": "30"}
    with environment(stack.ingest_environment(ingest_env)), app.stand_ins(stand_ins):
        ingest = app.build_ingest()
        cpu, wall = 0.0, 0.0
        # Message 0 warms the instance (imports, clients, channels: the cold start, measured apart);
        # the counts and times are of the messages after it.
        for number in range(messages + 1):
            if number == 1:
                grpc_calls.take(), http.take()
                cpu, wall = 0.0, 0.0
            post = mailgun_posts.build(raw_for(number), RECIPIENT, "alice@bank.example", stack.signing_key)
            cpu_begin, wall_begin = time.process_time(), time.perf_counter()
            answer = ingest.handle(post.content_type, post.body, stack.route_key)
            cpu += time.process_time() - cpu_begin
            wall += time.perf_counter() - wall_begin
            if answer.status != 200:
                raise RuntimeError(f"ingest answered {answer.status}: {answer.text}")
        stages["ingest"] = _stage(messages, grpc_calls, http, cpu, wall, 0)
    published = _pull_all(stack, messages + 1)
    stages["ingest"].pubsub_bytes = sum(_pubsub_size(item) for item in published[1:]) / messages
    with environment(stack.relay_environment()), app.stand_ins(stand_ins):
        relay = app.build_relay()
        cpu, wall = 0.0, 0.0
        for number, item in enumerate(published):
            if number == 1:
                grpc_calls.take(), http.take()
                cpu, wall = 0.0, 0.0
            data = {
                "message": {
                    "data": base64.b64encode(item["data"]).decode("ascii"),
                    "attributes": item["attributes"],
                    "messageId": f"count-{number}",
                    "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                }
            }
            cpu_begin, wall_begin = time.process_time(), time.perf_counter()
            outcome = relay.handle_event_data(data)
            cpu += time.process_time() - cpu_begin
            wall += time.perf_counter() - wall_begin
            if outcome.status != "sent":
                raise RuntimeError(f"the relay did not send message {number}: {outcome}")
        stages["relay"] = _stage(messages, grpc_calls, http, cpu, wall, stages["ingest"].pubsub_bytes)
    return stages


def _stage(
    messages: int, grpc_calls: CallCounter, http: CountingSession, cpu: float, wall: float, size: float
) -> Stage:
    calls, documents = grpc_calls.take()
    return Stage(
        messages,
        _per(calls, messages),
        _per(documents, messages),
        _per(http.take(), messages),
        cpu / messages * 1000,
        wall / messages * 1000,
        size,
    )


def _pubsub_size(item: dict[str, Any]) -> int:
    """What Pub/Sub bills for a message: its data, attribute names and values."""
    attributes = item["attributes"]
    return len(item["data"]) + sum(len(k.encode()) + len(str(v).encode()) for k, v in attributes.items())


def _pull_all(stack: Stack, messages: int, seconds: float = 30.0) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(found) < messages and time.monotonic() < deadline:
        found.extend(stack.pull(COUNT_HOLD))
    if len(found) < messages:
        raise RuntimeError(f"only {len(found)} of {messages} published messages could be pulled")
    return found


def results(stages: dict[str, Stage]) -> list[Result]:
    """The counted figure with a target: ingest's network round trips per post, beside the floor's one publish."""
    ingest, relay = stages["ingest"], stages["relay"]
    return [
        at_most(
            "ingest.round_trips",
            ingest.round_trips(),
            1.0,
            "calls",
            1.0,
            note=(
                f"counted on the wire, {ingest.messages} signed posts in process with counted clients; baseline: the "
                f"bare publish's one call. Ingest: {describe(ingest)}. Relay, per message: {describe(relay)}"
            ),
            extra={name: asdict(stage) for name, stage in stages.items()},
        )
    ]


def describe(stage: Stage) -> str:
    calls = ", ".join(f"{n:g} {m}" for m, n in {**stage.grpc, **stage.http}.items()) or "none"
    documents = ", ".join(f"{n:g} {kind}" for kind, n in stage.documents.items()) or "none"
    return (
        f"{stage.round_trips():g} round trips ({calls}); Firestore documents: {documents}; "
        f"handler CPU {stage.cpu_ms:.2f} ms, wall {stage.wall_ms:.1f} ms"
    )
