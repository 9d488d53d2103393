"""The local stack for integration tests: real emulators and real function processes.

One stack per test session (the emulators take seconds to start); tests keep
apart by using their own Message-IDs and recipients. Every process is started
by the stack and stopped by its pid when the session ends.
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagrelay_tools import mailgun_posts
from tagrelay_tools.localstack import Stack, missing_prerequisites

DATA = Path(__file__).resolve().parent.parent / "data"
ROUTES = DATA / "routes.toml"
TAP = "tagrelay-inbound-tap"
HTTP_TIMEOUT = 30.0
ARRIVAL_SECONDS = 45.0


@contextlib.contextmanager
def running_stack(tmp_path_factory: pytest.TempPathFactory, name: str, relay_env: dict[str, str]) -> Iterator[Stack]:
    """A local stack on the test routes, stopped (every child by its pid) when the block ends."""
    problems = missing_prerequisites()
    if problems:
        pytest.fail("the local stack needs:\n" + "\n".join(problems))
    workdir = tmp_path_factory.mktemp(name)
    with Stack(workdir=workdir, routes=ROUTES, outbox=workdir / "outbox", relay_env=relay_env) as local:
        yield local


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    relay_env = {"MAILGUN_TIMEOUT": "3", "TAGRELAY_MAX_DELIVERY_AGE_SECONDS": "20"}
    with running_stack(tmp_path_factory, "stack", relay_env) as local:
        local.ensure_subscription(TAP, local.topic)
        local.ensure_subscription(f"{local.deadletter_topic}-tap", local.deadletter_topic)
        yield local


def post(
    stack: Stack,
    raw: bytes,
    recipient: str,
    *,
    form: str = "mime",
    key: str | None = None,
    url: str | None = None,
    route_key: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    build = mailgun_posts.mime_post if form == "mime" else mailgun_posts.parsed_post
    made = build(raw, recipient, kwargs.pop("sender", "sender@bank.example"), key or stack.signing_key, **kwargs)
    target = stack.ingest_target("/mime" if form == "mime" else "/", base=url, route_key=route_key)
    return requests.post(target, data=made.body, headers={"Content-Type": made.content_type}, timeout=HTTP_TIMEOUT)


def message(message_id: str, subject: str = "integration", extra_headers: str = "", body: bytes = b"") -> bytes:
    head = (
        f"From: Alice Example <alice@bank.example>\r\nTo: someone@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 13 Nov 2023 22:13:19 +0000\r\nMessage-ID: <{message_id}>\r\n{extra_headers}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head.encode("utf-8") + (body or f"body of {message_id}\r\n".encode())


def accepted(stack: Stack) -> list[dict[str, Any]]:
    response = requests.get(stack.standin_url + "/_standin/messages", timeout=HTTP_TIMEOUT)
    return list(response.json()["accepted"])


def arrivals(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    return [r for r in accepted(stack) if r["message_id"] == f"<{message_id}>"]


def wait_for_arrival(stack: Stack, message_id: str, seconds: float = ARRIVAL_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = arrivals(stack, message_id)
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"<{message_id}> did not arrive at the stand-in within {seconds:g}s")


def set_faults(stack: Stack, plan: dict[str, Any]) -> None:
    requests.post(stack.standin_url + "/_standin/faults", json=plan, timeout=HTTP_TIMEOUT).raise_for_status()


def pull(stack: Stack, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
    """Pull and acknowledge what a subscription holds: (data bytes, attributes) dicts."""
    base = f"{stack.pubsub_url}/v1/projects/{stack.project}/subscriptions/{subscription}"
    response = requests.post(
        f"{base}:pull", json={"maxMessages": max_messages, "returnImmediately": True}, timeout=HTTP_TIMEOUT
    )
    response.raise_for_status()
    received = response.json().get("receivedMessages", [])
    if received:
        ack = {"ackIds": [m["ackId"] for m in received]}
        requests.post(f"{base}:acknowledge", json=ack, timeout=HTTP_TIMEOUT).raise_for_status()
    return [
        {"data": base64.b64decode(m["message"].get("data", "")), "attributes": m["message"].get("attributes", {})}
        for m in received
    ]


def pull_until(stack: Stack, subscription: str, predicate: Any, seconds: float = ARRIVAL_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in pull(stack, subscription):
            if predicate(item):
                return item
        time.sleep(0.3)
    raise AssertionError(f"nothing matching arrived on {subscription} within {seconds:g}s")
