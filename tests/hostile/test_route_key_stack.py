"""Class: a replayed signature with any body, through the real local stack.

The stack configures a route key like deploy.sh does. A correctly signed post
without ``k``, or with a wrong one, is refused 401 by the ingest process and
nothing reaches the topic; the same post with the route's ``k`` is delivered.
Real Pub/Sub and Firestore emulators, ingest and relay under functions-framework.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tagrelay_tools.localstack import REPO, Stack
from tests.integration.conftest import arrivals, message, post, pull, wait_for_arrival

TAP = "route-key-tap"
SETTLE_SECONDS = 3.0


@pytest.fixture(scope="module", autouse=True)
def tap(stack: Stack) -> str:
    """A subscription of this module's own on the shared stack's topic."""
    stack.ensure_subscription(TAP, stack.topic)
    return TAP


def published(stack: Stack, message_id: str) -> list[dict[str, object]]:
    return [m for m in pull(stack, TAP) if m["attributes"].get("message_id") == f"<{message_id}>"]


def test_signed_post_without_or_with_a_wrong_route_key_is_401_and_publishes_nothing(stack: Stack) -> None:
    assert len(stack.route_key) == 43
    mid = f"route-key-{uuid.uuid4().hex}@test.example"
    raw = message(mid)
    for wrong in ("", "wrong-" + stack.route_key[6:], stack.route_key[:-1]):
        response = post(stack, raw, "github@example.org", route_key=wrong)
        assert response.status_code == 401, response.text
        assert "route key" in response.text
    time.sleep(SETTLE_SECONDS)
    assert published(stack, mid) == []
    assert arrivals(stack, mid) == []


def test_the_same_post_with_the_route_key_is_delivered(stack: Stack) -> None:
    mid = f"route-key-ok-{uuid.uuid4().hex}@test.example"
    response = post(stack, message(mid), "github@example.org")
    assert response.status_code == 200, response.text
    assert wait_for_arrival(stack, mid)["to"]


def test_tagrelay_send_posts_with_the_stacks_route_key(stack: Stack, tmp_path: Path) -> None:
    """``tagrelay send`` finds the route key in the running stack's state file (never on its command line)."""
    (tmp_path / ".tagrelay").mkdir()
    shutil.copy(stack.write_state(), tmp_path / ".tagrelay" / "local.json")
    mid = f"route-key-send-{uuid.uuid4().hex}@test.example"
    (tmp_path / "m.eml").write_bytes(message(mid))
    env = {k: v for k, v in os.environ.items() if k != "TAGRELAY_ROUTE_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "tagrelay_tools.cli", "send", "m.eml", "--to", "github@example.org"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ingest answered 200: queued"
    assert stack.route_key not in done.stdout + done.stderr
    assert wait_for_arrival(stack, mid)["to"]
