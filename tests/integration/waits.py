"""Waiting on events, per-test aliases, and a Mailgun stand-in of a test's own.

Integration tests share one stack (the emulators take seconds to start) but not their
state: each test writes to aliases of its own (:func:`alias`), waits for an event with
a deadline (an arrival, a dead letter, a log line) instead of sleeping, and a test that
needs Mailgun to fail gets its own stand-in, relay, ingest and topics
(:func:`private_pipeline`), so its forced answers are consumed by its messages only.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import requests

from tagrelay_tools.localstack import Child, Stack
from tagrelay_tools.standin import Standin, make_handler
from tests.integration.conftest import HTTP_TIMEOUT, accepted, pull

T = TypeVar("T")
DEADLINE_SECONDS = 45.0
POLL_SECONDS = 0.2


def alias(test: str, local: str = "") -> tuple[str, str]:
    """(an address of the test's own on the test routes, its message-id) : ``<test>-<hex>@example.org``.

    The route ``{tag}@example.org`` forwards it to ``owner+<test>-<hex>@gmail.com``.
    """
    tag = f"{re.sub(r'[^a-z0-9]+', '-', test.lower()).strip('-')[:30]}-{uuid.uuid4().hex[:10]}"
    return f"{local}{tag}@example.org", f"{tag}@test.example"


def forward_of(address: str) -> str:
    """Where the test routes send ``<tag>@example.org``."""
    return f"owner+{address.partition('@')[0]}@gmail.com"


def wait_for(what: str, probe: Callable[[], T | None], seconds: float = DEADLINE_SECONDS) -> T:
    """Poll ``probe`` until it returns something other than None or an empty collection; fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        time.sleep(POLL_SECONDS)


def arrived(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    return [r for r in accepted(stack) if r["message_id"] == f"<{message_id}>"]


def wait_for_arrival(stack: Stack, message_id: str, seconds: float = DEADLINE_SECONDS) -> dict[str, Any]:
    return wait_for(f"<{message_id}> at the stand-in", lambda: arrived(stack, message_id), seconds)[0]


def log_lines(path: Path, **fields: str) -> list[dict[str, Any]]:
    """The JSON log lines of a function's log file whose fields have the given values."""
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if all(record.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


def wait_for_log(path: Path, seconds: float = DEADLINE_SECONDS, count: int = 1, **fields: str) -> list[dict[str, Any]]:
    """Wait until ``count`` log lines with these fields were written; return them."""
    return wait_for(
        f"{count} log line(s) {fields} in {path.name}",
        lambda: lines if len(lines := log_lines(path, **fields)) >= count else None,
        seconds,
    )


def pulled_until(stack: Stack, subscription: str, last: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Everything pulled from ``subscription`` up to and including the first message ``last`` accepts.

    Publishing waits for Pub/Sub's acknowledgement, so a message published before the
    ``last`` one (a barrier) is in the subscription by the time the barrier is: what was
    not pulled by then was never published. Absence shown by an event, not by a sleep.
    """
    seen: list[dict[str, Any]] = []

    def probe() -> bool:
        for item in pull(stack, subscription):
            seen.append(item)
            if last(item):
                return True
        return False

    wait_for(f"the barrier on {subscription}", probe)
    return seen


def with_message_id(message_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda item: item["attributes"].get("message_id") == f"<{message_id}>"


@dataclass
class Private:
    """A pipeline of a test's own on the shared emulators: ingest → topic → relay → stand-in."""

    stack: Stack
    name: str
    standin: Standin
    standin_url: str
    ingest: Child
    relay: Child

    @property
    def topic(self) -> str:
        return f"{self.name}-in"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.name}-dead"

    @property
    def deadletter_hold(self) -> str:
        return f"{self.name}-dead-hold"

    @property
    def deadletter_tap(self) -> str:
        return f"{self.name}-dead-tap"

    def accepted(self) -> list[dict[str, Any]]:
        with self.standin.lock:
            return list(self.standin.accepted)

    def calls(self) -> int:
        with self.standin.lock:
            return self.standin.calls

    def arrivals(self, message_id: str) -> list[dict[str, Any]]:
        return [r for r in self.accepted() if r["message_id"] == f"<{message_id}>"]


@contextlib.contextmanager
def private_pipeline(stack: Stack, name: str, faults: list[str]) -> Iterator[Private]:
    """Ingest, relay, topics and a Mailgun stand-in of the test's own; the stand-in answers ``faults`` first.

    The stand-in runs in this process (its fault queue is a plain list here); ingest and
    relay are function processes of the stack, stopped by their pid when the block ends.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower())[:40].strip("-")
    standin = Standin(stack.workdir / f"outbox-{name}", stack.domain, stack.api_key)
    standin.queue = list(faults)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(standin))
    thread = threading.Thread(target=server.serve_forever, name=f"standin-{name}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    started: list[str] = []
    subscriptions = [f"{name}-dead-hold", f"{name}-dead-tap"]
    try:
        stack.ensure_topic(f"{name}-in")
        stack.ensure_topic(f"{name}-dead")
        for subscription in subscriptions:
            stack.ensure_subscription(subscription, f"{name}-dead")
        relay = stack.start_relay(
            name=f"relay-{name}", extra={"MAILGUN_API_BASE": url, "TAGRELAY_DEADLETTER_TOPIC": f"{name}-dead"}
        )
        started.append(relay.name)
        stack.ensure_subscription(f"{name}-push", f"{name}-in", push_endpoint=relay.url + "/")
        subscriptions.append(f"{name}-push")
        ingest = stack.start_ingest(name=f"ingest-{name}", extra={"TAGRELAY_TOPIC": f"{name}-in"})
        started.append(ingest.name)
        yield Private(stack, name, standin, url, ingest, relay)
    finally:
        base = f"{stack.pubsub_url}/v1/projects/{stack.project}"
        for subscription in subscriptions:  # first, so the emulator stops pushing to the relay
            requests.delete(f"{base}/subscriptions/{subscription}", timeout=HTTP_TIMEOUT)
        for child_name in reversed(started):
            child = stack.children.pop(child_name, None)
            if child is not None:
                child.stop()
        for topic in (f"{name}-in", f"{name}-dead"):
            requests.delete(f"{base}/topics/{topic}", timeout=HTTP_TIMEOUT)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
