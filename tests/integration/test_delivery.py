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
from tests.integration.conftest import TAP, message, post
from tests.integration.waits import (
    alias,
    arrived,
    forward_of,
    private_pipeline,
    pulled_until,
    wait_for,
    wait_for_arrival,
    wait_for_log,
    with_message_id,
)


def send(stack: Stack, made: mailgun_posts.Post, url: str | None = None) -> tuple[int, str]:
    response = mailgun_posts.deliver(url or stack.ingest_url, made, route_key=stack.route_key)
    return response.status_code, response.text


def relay_log(stack: Stack, name: str = "relay") -> Path:
    return Path(stack.workdir, "logs", f"{name}.log")


def test_mailgun_retry_of_the_same_post_is_sent_once(stack: Stack) -> None:
    """Ingest keeps no state (issue 11): the retry is published again, and the relay's delivery
    record (the same digest) makes it a duplicate."""
    address, mid = alias("retry")
    made = mailgun_posts.mime_post(message(mid), address, "a@bank.example", stack.signing_key)
    assert send(stack, made) == (200, "queued\n")
    assert send(stack, made) == (200, "queued\n")
    wait_for_arrival(stack, mid)
    _, barrier = alias("retry-barrier")
    assert post(stack, message(barrier), address).status_code == 200
    assert len([m for m in pulled_until(stack, TAP, with_message_id(barrier)) if with_message_id(mid)(m)]) == 2
    wait_for_log(relay_log(stack), message_id=f"<{mid}>", outcome="duplicate")
    assert len(arrived(stack, mid)) == 1


def test_a_token_reused_for_another_message_is_refused(stack: Stack) -> None:
    address, first = alias("token-a")
    _, second = alias("token-b")
    stamp, token = int(time.time()), uuid.uuid4().hex
    made = mailgun_posts.mime_post(message(first), address, "a@bank.example", stack.signing_key, stamp, token)
    other = mailgun_posts.mime_post(message(second), address, "a@bank.example", stack.signing_key, stamp, token)
    assert send(stack, made) == (200, "queued\n")
    wait_for_arrival(stack, first)
    assert send(stack, other) == (200, "queued\n")  # ingest keeps no state: the relay binds the token (issue 11)
    wait_for_log(relay_log(stack), message_id=f"<{second}>", outcome="refused")
    assert arrived(stack, second) == []


def test_concurrent_identical_posts_are_sent_once(stack: Stack) -> None:
    address, mid = alias("concurrent")
    made = mailgun_posts.mime_post(message(mid), address, "a@bank.example", stack.signing_key)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: send(stack, made), range(8)))
    assert answers == [(200, "queued\n")] * 8  # each one published: the relay's delivery record dedupes
    [record] = wait_for("the message at the stand-in", lambda: arrived(stack, mid))
    assert record["to"] == [forward_of(address)]
    wait_for_log(relay_log(stack), count=7, message_id=f"<{mid}>", outcome="duplicate")
    assert len(arrived(stack, mid)) == 1


def test_a_message_published_twice_is_sent_once(stack: Stack) -> None:
    """Pub/Sub is at-least-once, and ingest can publish twice when its ack is lost."""
    address, mid = alias("redelivered")
    inbound = InboundMessage(address, "a@bank.example", message(mid), uuid.uuid4().hex, 0, "mime")
    data, attributes = envelope.encode(inbound, datetime.now(UTC))
    body = {"messages": [{"data": base64.b64encode(data).decode(), "attributes": attributes}] * 2}
    url = f"{stack.pubsub_url}/v1/projects/{stack.project}/topics/{stack.topic}:publish"
    assert len(requests.post(url, json=body, timeout=30).json()["messageIds"]) == 2
    # Both deliveries reach the relay: one sends, the other finds the delivery record and does not.
    wait_for_log(relay_log(stack), message_id=f"<{mid}>", outcome="sent")
    wait_for_log(relay_log(stack), message_id=f"<{mid}>", outcome="duplicate")
    assert len(arrived(stack, mid)) == 1


def test_secret_values_never_reach_the_logs(stack: Stack) -> None:
    address, mid = alias("secrets")
    assert post(stack, message(mid), address).status_code == 200
    assert post(stack, message(mid), address, key="wrong").status_code == 401
    wait_for_arrival(stack, mid)
    wait_for_log(relay_log(stack), message_id=f"<{mid}>", outcome="sent")
    logs = b"".join(path.read_bytes() for path in Path(stack.workdir, "logs").glob("*.log"))
    for secret in (stack.signing_key, stack.api_key):
        assert secret.encode() not in logs


def tagrelay_cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": stack.pubsub_host,
        "GOOGLE_CLOUD_PROJECT": stack.project,
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{stack.children['firestore'].port}",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "tagrelay_tools.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dead_letters_are_listed_and_replayed_once_the_cause_is_fixed(stack: Stack) -> None:
    with private_pipeline(stack, "replay", ["400"]) as own:
        topics = {
            "TAGRELAY_TOPIC": own.topic,
            "TAGRELAY_DEADLETTER_TOPIC": own.deadletter_topic,
            "TAGRELAY_DEADLETTER_SUBSCRIPTION": own.deadletter_hold,
        }
        address, mid = alias("replay")
        assert post(stack, message(mid), address, url=own.ingest.url).status_code == 200
        # Dead-lettered: the event is the relay's own log line, then the listing shows it.
        wait_for_log(relay_log(stack, own.relay.name), message_id=f"<{mid}>", outcome="dead-lettered")
        listing = tagrelay_cli(stack, "deadletters", "list", env=topics)
        assert listing.returncode == 0, listing.stderr
        [line] = [line for line in listing.stdout.splitlines() if mid in line]
        assert address in line and "Mailgun answered 400: injected 400" in line
        assert own.arrivals(mid) == []

        replayed = tagrelay_cli(stack, "deadletters", "replay", "--message-id", mid, env=topics)
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1 message" in replayed.stdout
        [record] = wait_for("the replayed message at the stand-in", lambda: own.arrivals(mid))
        assert record["to"] == [forward_of(address)]
        assert mid not in tagrelay_cli(stack, "deadletters", "list", env=topics).stdout
        status = tagrelay_cli(stack, "status", env=topics)
        assert status.returncode == 0, status.stderr
        assert f"dead letters in {own.deadletter_topic}: 0" in status.stdout
        assert f"<{mid}>" in status.stdout  # among the last deliveries in the ledger
        assert own.calls() == 2  # the refused send and the replayed one
