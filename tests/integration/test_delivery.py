"""Exactly once through the ledger: Mailgun retries, concurrent posts, Pub/Sub redelivery."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

from tagrelay.core import envelope
from tagrelay.core.inbound import InboundMessage
from tagrelay_tools import mailgun_posts
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import TAP, arrivals, message, post, pull, set_faults, wait_for_arrival

SETTLE_SECONDS = 2.0


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex}@test.example"


def send(stack: Stack, made: mailgun_posts.Post) -> int:
    return mailgun_posts.deliver(stack.ingest_url, made, route_key=stack.route_key).status_code


def tapped(stack: Stack, message_id: str) -> int:
    return sum(1 for m in pull(stack, TAP) if m["attributes"].get("message_id") == f"<{message_id}>")


def test_mailgun_retry_of_the_same_post_is_sent_once(stack: Stack) -> None:
    """Ingest keeps no state (issue 11): the retry is published again, and the relay's delivery
    record (the same digest) makes it a duplicate."""
    mid = unique("retry")
    made = mailgun_posts.mime_post(message(mid), "github@example.org", "a@bank.example", stack.signing_key)
    assert send(stack, made) == 200
    assert send(stack, made) == 200
    wait_for_arrival(stack, mid)
    time.sleep(SETTLE_SECONDS)
    assert tapped(stack, mid) == 2
    assert len(arrivals(stack, mid)) == 1


def test_a_token_reused_for_another_message_is_refused(stack: Stack) -> None:
    first, second = unique("token-a"), unique("token-b")
    stamp, token = int(time.time()), uuid.uuid4().hex
    made = mailgun_posts.mime_post(
        message(first), "github@example.org", "a@bank.example", stack.signing_key, stamp, token
    )
    other = mailgun_posts.mime_post(
        message(second), "github@example.org", "a@bank.example", stack.signing_key, stamp, token
    )
    assert send(stack, made) == 200
    wait_for_arrival(stack, first)
    assert send(stack, other) == 200  # the relay binds the token to the first message's digest
    time.sleep(SETTLE_SECONDS)
    assert arrivals(stack, second) == []


def test_concurrent_identical_posts_are_sent_once(stack: Stack) -> None:
    mid = unique("concurrent")
    made = mailgun_posts.mime_post(message(mid), "github@example.org", "a@bank.example", stack.signing_key)
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda _: send(stack, made), range(8)))
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    assert all(send(stack, made) == 200 for status in statuses if status == 503)  # Mailgun's retries
    wait_for_arrival(stack, mid)
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1


def test_a_message_published_twice_is_sent_once(stack: Stack) -> None:
    """Pub/Sub is at-least-once, and ingest can publish twice when its ack is lost."""
    mid = unique("redelivered")
    inbound = InboundMessage("github@example.org", "a@bank.example", message(mid), uuid.uuid4().hex, 0, "mime")
    data, attributes = envelope.encode(inbound, datetime.now(UTC))
    body = {"messages": [{"data": base64.b64encode(data).decode(), "attributes": attributes}] * 2}
    url = f"{stack.pubsub_url}/v1/projects/{stack.project}/topics/{stack.topic}:publish"
    assert len(requests.post(url, json=body, timeout=30).json()["messageIds"]) == 2
    wait_for_arrival(stack, mid)
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1


def test_secret_values_never_reach_the_logs(stack: Stack) -> None:
    mid = unique("secrets")
    assert post(stack, message(mid), "github@example.org").status_code == 200
    assert post(stack, message(mid), "github@example.org", key="wrong").status_code == 401
    wait_for_arrival(stack, mid)
    logs = b"".join(path.read_bytes() for path in Path(stack.workdir, "logs").glob("*.log"))
    assert b"published" in logs and b"sent" in logs  # the logs are really there
    for secret in (stack.signing_key, stack.api_key):
        assert secret.encode() not in logs


def tagrelay_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": stack.pubsub_host,
        "GOOGLE_CLOUD_PROJECT": stack.project,
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{stack.children['firestore'].port}",
    }
    return subprocess.run(
        [sys.executable, "-m", "tagrelay_tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dead_letters_are_listed_and_replayed_once_the_cause_is_fixed(stack: Stack) -> None:
    set_faults(stack, {"queue": ["400"]})
    mid = unique("replay")
    assert post(stack, message(mid), "github@example.org").status_code == 200
    deadline = time.monotonic() + 45
    listing = tagrelay_cli(stack, "deadletters", "list")
    while mid not in listing.stdout and time.monotonic() < deadline:
        time.sleep(0.5)
        listing = tagrelay_cli(stack, "deadletters", "list")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if mid in line)
    assert "github@example.org" in line and "Mailgun answered 400" in line
    assert arrivals(stack, mid) == []

    replayed = tagrelay_cli(stack, "deadletters", "replay", "--message-id", mid)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 message" in replayed.stdout
    assert wait_for_arrival(stack, mid)["to"] == ["owner+github@gmail.com"]
    assert mid not in tagrelay_cli(stack, "deadletters", "list").stdout
    status = tagrelay_cli(stack, "status")
    assert status.returncode == 0, status.stderr
    assert "dead letters in tagrelay-deadletter:" in status.stdout
    assert f"<{mid}>" in status.stdout  # among the last deliveries in the ledger
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1
