"""Ingest in-process for the perimeter classes: a recording publisher, a body that counts what was read.

Shared by tests/hostile/test_unsigned_cost.py, test_route_key.py, test_unauthenticated_logging.py,
test_event_webhook.py and test_secret_outage.py; the posts are built by tagrelay_tools.mailgun_posts,
as Mailgun sends them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import IngestConfig, SecretRef
from tagrelay.core.log import JsonFormatter, logger
from tagrelay.core.ports import KeySource
from tagrelay.core.routes import load
from tagrelay.services.ingest import Ingest
from tests.unit.support import RecordingPublisher as RecordingPublisher
from tests.unit.support import ingest_config

SIGNING_KEY = "hostile-signing-key-0123456789"
ROUTE_KEY = "route-key-current-Zx8Qm2Lr7Vb3Nc9Kd1Jf"
PREVIOUS_ROUTE_KEY = "route-key-previous-Pq4Ws6Ed8Rf0Tg2Yh5U"
NOW = 1_800_000_000.0
ROUTES = load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n')
MESSAGE = (
    b"From: Alice <alice@bank.example>\r\nTo: shop@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <perimeter@bank.example>\r\nDate: Mon, 13 Nov 2023 22:13:19 +0000\r\n\r\nHello.\r\n"
)


def config(max_body_bytes: int = 26 * 1024 * 1024, route_key: bool = False) -> IngestConfig:
    return ingest_config(ROUTES, SIGNING_KEY, max_body_bytes, ROUTE_KEY if route_key else "")


def make_ingest(
    publisher: RecordingPublisher,
    *,
    route_keys: tuple[KeySource, ...] = (),
    signing_key: KeySource | None = None,
    clock: Callable[[], float] = lambda: NOW,
    max_body_bytes: int = 26 * 1024 * 1024,
) -> Ingest:
    settings = config(max_body_bytes, route_key=bool(route_keys))
    key = signing_key or Secret(settings.signing_key)
    return Ingest(settings, key, publisher, MemoryLedger(clock=clock), clock=clock, route_keys=route_keys)


def fixed(value: str) -> KeySource:
    return Secret(SecretRef(variable="TAGRELAY_ROUTE_KEY", value=value))


class CountingBody:
    """A request stream in 1 MiB chunks that records how many bytes ingest pulled from it."""

    def __init__(self, body: bytes, chunk: int = 1 << 20) -> None:
        self.body = body
        self.chunk = chunk
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.body), self.chunk):
            piece = self.body[start : start + self.chunk]
            self.read += len(piece)
            yield piece


class LogLines:
    """The JSON lines tagrelay logs while in use: tagrelay.core.log's formatter on a handler of our own."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())

    def __enter__(self) -> LogLines:
        logger().addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logger().removeHandler(self.handler)

    def take(self) -> list[dict[str, Any]]:
        """The lines logged since the last call, parsed."""
        text, self.stream = self.stream.getvalue(), io.StringIO()
        self.handler.setStream(self.stream)
        return [json.loads(line) for line in text.splitlines()]
