"""The local stack for integration tests: real emulators and real function processes.

One stack per test session (the emulators take seconds to start); tests keep
apart by using their own Message-IDs and recipients. Every process is started
by the stack and stopped by its pid when the session ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagrelay_tools import mailgun_posts
from tagrelay_tools.localstack import Stack, missing_prerequisites
from tagrelay_tools.standin import FaultPlan

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


def post(
    stack: Stack,
    raw: bytes,
    recipient: str,
    *,
    form: mailgun_posts.Form = "mime",
    key: str | None = None,
    url: str | None = None,
    sender: str = "sender@bank.example",
    timestamp: int | None = None,
    token: str | None = None,
    route_key: str | None = None,
) -> requests.Response:
    """Sign ``raw`` as Mailgun would and post it to the stack's ingest (or ``url``), with the stack's
    route key unless ``route_key`` says otherwise ("" for none: a sender who does not know it)."""
    made = mailgun_posts.build(raw, recipient, sender, key or stack.signing_key, form, timestamp, token)
    key_in_url = stack.route_key if route_key is None else route_key
    return mailgun_posts.deliver(url or stack.ingest_url, made, route_key=key_in_url)


def message(message_id: str, subject: str = "integration", extra_headers: str = "", body: bytes = b"") -> bytes:
    head = (
        f"From: Alice Example <alice@bank.example>\r\nTo: someone@example.org\r\nSubject: {subject}\r\n"
        f"Date: Mon, 13 Nov 2023 22:13:19 +0000\r\nMessage-ID: <{message_id}>\r\n{extra_headers}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return head.encode("utf-8") + (body or f"body of {message_id}\r\n".encode())


def accepted(stack: Stack) -> list[dict[str, Any]]:
    """What the stand-in accepted (plain dicts, for the tests that index them freely)."""
    return [dict(record) for record in stack.standin.accepted()]


def arrivals(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    return [r for r in accepted(stack) if r["message_id"] == f"<{message_id}>"]


def wait_for_arrival(stack: Stack, message_id: str, seconds: float = ARRIVAL_SECONDS) -> dict[str, Any]:
    found = stack.standin.wait_for(lambda r: r["message_id"] == f"<{message_id}>", seconds)
    if found is None:
        raise AssertionError(f"<{message_id}> did not arrive at the stand-in within {seconds:g}s")
    return dict(found)


def set_faults(stack: Stack, plan: FaultPlan) -> None:
    stack.standin.set_faults(plan)


def pull(stack: Stack, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
    """Pull and acknowledge what a subscription holds: (data bytes, attributes) dicts."""
    return stack.pull(subscription, max_messages)


def pull_until(stack: Stack, subscription: str, predicate: Any, seconds: float = ARRIVAL_SECONDS) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for item in pull(stack, subscription):
            if predicate(item):
                return item
        time.sleep(0.3)
    raise AssertionError(f"nothing matching arrived on {subscription} within {seconds:g}s")
