"""Class: token replay (issue 11 moved the binding from ingest to the relay's delivery write). Against
the real local stack: a replayed (timestamp, token, signature) triple with another body is answered
200 by ingest (one publish, no Firestore) but never delivered, and leaves a refusal record in Firestore
that `tagrelay refusals release` delivers exactly once. Also: a Message-ID predicted by a sender does
not suppress the real message, and ingest works with Firestore unreachable."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tagrelay.adapters.ledger import FirestoreLedger
from tagrelay.core.ports import Record
from tagrelay_tools import cli, mailgun_posts
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import HTTP_TIMEOUT, arrivals, message, post, wait_for_arrival

SETTLE_SECONDS = 6.0  # the push subscription delivers within about a second locally


def _post_with(stack: Stack, raw: bytes, recipient: str, token: str, timestamp: int) -> requests.Response:
    made = mailgun_posts.mime_post(raw, recipient, "sender@bank.example", stack.signing_key, timestamp, token)
    return mailgun_posts.deliver(stack.ingest_url, made, HTTP_TIMEOUT, route_key=stack.route_key)


@pytest.fixture
def emulators(hostile_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """This process talks to the stack's emulators (for reading refusals and releasing one)."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{hostile_stack.children['firestore'].port}")
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", hostile_stack.pubsub_host)
    return hostile_stack


def _ledger(stack: Stack) -> FirestoreLedger:
    from google.cloud import firestore

    return FirestoreLedger(lambda: firestore.Client(project=stack.project))


def _refusals_for(stack: Stack, alias: str, seconds: float = 20.0) -> list[Record]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [r for r in _ledger(stack).recent_refusals(200) if r.data.get("alias") == alias]
        if found:
            return found
        time.sleep(0.3)
    return []


def test_replayed_signature_with_another_body_is_not_delivered(
    emulators: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = emulators
    token, stamp = uuid.uuid4().hex + uuid.uuid4().hex[:18], int(time.time())
    real_id, replay_id = f"real-{uuid.uuid4().hex}@x.example", f"replay-{uuid.uuid4().hex}@x.example"
    alias = f"replay-{uuid.uuid4().hex[:8]}@example.org"
    assert _post_with(stack, message(real_id), alias, token, stamp).status_code == 200
    wait_for_arrival(stack, real_id)
    assert _post_with(stack, message(replay_id, subject="replayed"), alias, token, stamp).status_code == 200
    [refusal] = _refusals_for(stack, alias)
    assert "token reused" in refusal.data["reason"]
    time.sleep(SETTLE_SECONDS)
    assert arrivals(stack, replay_id) == []  # never delivered
    assert len(arrivals(stack, real_id)) == 1

    # A false positive is never a silent loss: the operator lists and releases it, and it arrives once.
    capsys.readouterr()
    assert cli.main(["refusals", "list", "--project", stack.project]) == 0
    listed = capsys.readouterr().out
    assert refusal.key in listed and alias in listed and "token reused" in listed
    assert cli.main(["refusals", "release", refusal.key, "--project", stack.project]) == 0
    assert cli.main(["refusals", "release", refusal.key, "--project", stack.project]) == 1  # once only
    assert "released already" in capsys.readouterr().err
    wait_for_arrival(stack, replay_id)
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, replay_id)) == 1


def test_an_identical_retry_is_delivered_once(hostile_stack: Stack) -> None:
    stack = hostile_stack
    token, stamp = uuid.uuid4().hex + uuid.uuid4().hex[:18], int(time.time())
    mid = f"retry-{uuid.uuid4().hex}@x.example"
    for _ in range(3):
        assert _post_with(stack, message(mid), "retry@example.org", token, stamp).status_code == 200
    wait_for_arrival(stack, mid)
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1


def test_a_predicted_message_id_does_not_suppress_the_real_message(hostile_stack: Stack) -> None:
    stack = hostile_stack
    mid = f"pr-{uuid.uuid4().hex}@github.example"
    assert post(stack, message(mid, subject="forged", body=b"forged\r\n"), "github@example.org").status_code == 200
    wait_for_arrival(stack, mid)
    assert post(stack, message(mid, subject="real", body=b"real\r\n"), "github@example.org").status_code == 200
    deadline = time.monotonic() + 30
    while len(arrivals(stack, mid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(arrivals(stack, mid)) == 2


def test_an_ingest_that_never_read_the_alias_states_answers_503_not_200_or_406(hostile_stack: Stack) -> None:
    """Ingest reads the block/lock states of aliases (issue 14) once per cache period, never per post (one
    publish per post in steady state; a failed refresh serves the last states read). An instance that has
    never read them cannot tell a blocked alias from an active one: it answers 503, so Mailgun retries
    and nothing is lost or forwarded against a block; the retry succeeds once Firestore answers."""
    stack = hostile_stack
    child = stack.start_ingest(name="ingest-no-firestore", extra={"FIRESTORE_EMULATOR_HOST": "127.0.0.1:9"})
    try:
        mid = f"nofs-{uuid.uuid4().hex}@x.example"
        response = post(stack, message(mid), "nofs@example.org", url=child.url)
        assert response.status_code == 503, response.text
        assert response.text == "temporarily unavailable, retry later\n"
        retry = post(stack, message(mid), "nofs@example.org")  # Mailgun's retry, to an instance that has read them
        assert retry.status_code == 200, retry.text
        wait_for_arrival(stack, mid)
    finally:
        stack.children.pop("ingest-no-firestore").stop()
