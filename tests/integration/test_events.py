"""Mailgun's events close the loop (issue 12), on the shared stack: the stand-in posts signed event webhooks
to the events function, which moves the delivery record, dead-letters permanent failures with the
original and sends the route's owner notice. Each test uses aliases of its own; the records are read
from the Firestore emulator's REST API, the dead letters pulled from a tap on the dead-letter topic."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import requests

from tagrelay_tools.localstack import Stack
from tests.integration.conftest import HTTP_TIMEOUT, message, post, pull_until
from tests.integration.test_delivery import tagrelay_cli
from tests.integration.waits import alias, forward_of, wait_for, wait_for_arrival, wait_for_log

VARIABLE = "v:tagrelay-delivery"


def tap(stack: Stack) -> str:
    return f"{stack.deadletter_topic}-tap"


def key_of(arrived: dict[str, Any]) -> str:
    return str(arrived["options"][VARIABLE][-1])


def state_becomes(stack: Stack, key: str, state: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        record = stack.delivery_record(key)
        return record if record is not None and record.get("state") == state else None

    return wait_for(f"delivery record {key[:12]} {state}", probe, seconds=20)


def events_log(stack: Stack) -> Path:
    return stack.children["events"].log


def signed(stack: Stack, event_data: dict[str, Any], key: str | None = None) -> bytes:
    """A webhook post as Mailgun signs it (HMAC-SHA256 of timestamp + token, computed here)."""
    stamp, token = str(int(time.time())), secrets.token_hex(25)
    digest = hmac.new((key or stack.signing_key).encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": stamp, "token": token, "signature": digest}, "event-data": event_data}
    ).encode()


def post_event(stack: Stack, body: bytes) -> requests.Response:
    url = stack.children["events"].url + "/"
    return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=HTTP_TIMEOUT)


def event_for(arrived: dict[str, Any], kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": secrets.token_hex(8),
        "event": kind,
        "timestamp": time.time(),
        "recipient": arrived["to"][0],
        "user-variables": {"tagrelay-delivery": key_of(arrived)},
        "message": {"headers": {"message-id": str(arrived["id"]).strip("<>")}},
        **extra,
    }


def test_a_forward_is_recorded_delivered(stack: Stack) -> None:
    address, mid = alias("ev-delivered")
    assert post(stack, message(mid), address).status_code == 200
    arrived = wait_for_arrival(stack, mid)
    record = state_becomes(stack, key_of(arrived), "delivered")
    assert record["mailgun_id"] == arrived["id"] and record["alias"] == address
    assert record["recipients"][forward_of(address)]["state"] == "delivered"
    assert record["sent_at"] >= record["received_at"] > 0 and record["pubsub_id"]
    assert "message" not in record  # the copy kept for a bounce is dropped once delivered


def test_a_permanent_failure_is_dead_lettered_with_the_original_and_the_owner_notified(stack: Stack) -> None:
    address, mid = alias("ev-bounce", "notify-")
    target = forward_of(address.removeprefix("notify-"))  # the route notify-{tag}: owner+{tag}, notices to owner@
    stack.standin.script_outcome(target, event="failed", severity="permanent", reason="bounce", code=550, times=1)
    raw = message(mid)
    assert post(stack, raw, address).status_code == 200
    arrived = wait_for_arrival(stack, mid)
    state_becomes(stack, key_of(arrived), "failed")
    letter = pull_until(stack, tap(stack), lambda m: m["attributes"].get("message_id") == f"<{mid}>")
    assert letter["data"] == raw  # the original bytes, as ingest published them
    assert letter["attributes"]["deadletter_reason"].startswith(f"Mailgun: permanent failure for {target}: bounce 550")
    assert letter["attributes"]["recipient"] == address and letter["attributes"]["schema"] == "tagrelay.v1"

    def notice() -> list[dict[str, Any]]:
        notices = [r for r in stack.standin.accepted() if r["to"] == ["owner@gmail.com"]]
        return [dict(r) for r in notices if f"<{mid}>".encode() in Path(r["path"]).read_bytes()]

    [sent_notice] = wait_for("the owner notice", notice)
    assert b"Undeliverable" in Path(sent_notice["path"]).read_bytes()

    # Listed with Mailgun's reason, then replayed: the relay retakes the failed record and sends again.
    listing = tagrelay_cli(stack, "deadletters", "list")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if mid in line]
    assert "permanent failure" in line and "bounce 550" in line
    # Mailgun put the bounced address on its bounces list: clear it first (tagrelay suppressions clear).
    cleared = requests.delete(
        f"{stack.standin_url}/v3/{stack.domain}/bounces/{target}", auth=("api", stack.api_key), timeout=HTTP_TIMEOUT
    )
    assert cleared.status_code == 200
    replayed = tagrelay_cli(stack, "deadletters", "replay", "--message-id", f"<{mid}>")
    assert "replayed 1 message" in replayed.stdout, replayed.stdout + replayed.stderr
    wait_for(
        "the replayed copy", lambda: len([r for r in stack.standin.accepted() if r["message_id"] == f"<{mid}>"]) == 2
    )
    state_becomes(stack, key_of(arrived), "delivered")


def test_a_suppressed_target_is_noticed_within_one_message_and_fixed_with_two_commands(stack: Stack) -> None:
    """Issue 12's "done when": Mailgun accepts the forward and drops it (the target is on its bounces
    list). The first such message is an ERROR naming the fix, a dead letter, and `tagrelay status`
    reports the target; `tagrelay suppressions clear` and `tagrelay deadletters replay` deliver it."""
    address, mid = alias("ev-suppressed")
    target = forward_of(address)
    stack.standin.suppress(target, "bounces")
    assert post(stack, message(mid), address).status_code == 200
    arrived = wait_for_arrival(stack, mid)
    [line] = wait_for_log(events_log(stack), outcome="suppressed", alias=address)
    assert line["severity"] == "ERROR"
    assert f"tagrelay suppressions clear {target}" in line["message"] and "suppress-bounce" in line["message"]
    state_becomes(stack, key_of(arrived), "failed")
    letter = pull_until(stack, tap(stack), lambda m: m["attributes"].get("message_id") == f"<{mid}>")
    assert "suppress-bounce 605" in letter["attributes"]["deadletter_reason"]

    mailgun = {
        "MAILGUN_API_KEY": stack.api_key,
        "MAILGUN_API_BASE": stack.standin_url,
        "MAILGUN_DOMAIN": stack.domain,
        "TAGRELAY_ROUTES": str(stack.routes),
    }
    status = tagrelay_cli(stack, "status", env=mailgun)
    assert status.returncode == 1, status.stdout + status.stderr  # a suppressed target fails the check
    assert target in status.stdout + status.stderr
    assert f"tagrelay suppressions clear {target}" in status.stdout + status.stderr

    cleared = tagrelay_cli(stack, "suppressions", "clear", target, env=mailgun)
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert f"{target}: removed from bounces" in cleared.stdout
    replayed = tagrelay_cli(stack, "deadletters", "replay", "--message-id", f"<{mid}>")
    assert "replayed 1 message" in replayed.stdout, replayed.stdout + replayed.stderr
    wait_for(
        "the replayed copy", lambda: len([r for r in stack.standin.accepted() if r["message_id"] == f"<{mid}>"]) == 2
    )
    record = state_becomes(stack, key_of(arrived), "delivered")
    assert record["recipients"][target]["state"] == "delivered"
    assert tagrelay_cli(stack, "status", env=mailgun).returncode == 0  # nothing suppressed any more


def test_duplicate_and_out_of_order_events_leave_the_right_state(stack: Stack) -> None:
    address, mid = alias("ev-order")
    assert post(stack, message(mid), address).status_code == 200
    arrived = wait_for_arrival(stack, mid)
    key = key_of(arrived)
    state_becomes(stack, key, "delivered")
    found = requests.get(
        f"{stack.standin_url}/v3/{stack.domain}/events",
        params={"event": "delivered", "recipient": arrived["to"][0]},
        auth=("api", stack.api_key),
        timeout=HTTP_TIMEOUT,
    ).json()["items"]
    [original] = [e for e in found if e["user-variables"].get("tagrelay-delivery") == key]
    delivered = stack.standin.repost(original["id"])
    assert delivered["event"] == "delivered"  # posted again, signed afresh: a duplicate
    late_failure = event_for(arrived, "failed", severity="permanent", reason="bounce")
    stack.standin.repost(event_data=late_failure)  # a failure after the delivery: out of order
    stack.standin.repost(event_data=event_for(arrived, "failed", severity="temporary", reason="greylisted"))
    statuses = {p["id"]: p["status"] for p in stack.standin.webhook_posts()}
    assert statuses[late_failure["id"]] == 200
    record = stack.delivery_record(key)
    assert record is not None and record["state"] == "delivered"
    assert record["recipients"][arrived["to"][0]]["state"] == "delivered"
    complained = event_for(arrived, "complained")
    stack.standin.repost(event_data=complained)
    state_becomes(stack, key, "complained")
    stack.standin.repost(event_data=event_for(arrived, "delivered"))  # an older event, late: never back
    assert (stack.delivery_record(key) or {})["state"] == "complained"


def test_a_forged_or_replayed_event_post_is_401_and_changes_nothing(stack: Stack) -> None:
    address, mid = alias("ev-forged")
    target = forward_of(address)
    stack.standin.script_outcome(target, event="failed", severity="temporary", reason="greylisted", times=1)
    assert post(stack, message(mid), address).status_code == 200
    arrived = wait_for_arrival(stack, mid)
    key = key_of(arrived)
    wait_for_log(events_log(stack), outcome="temporary failure", alias=address)
    assert (stack.delivery_record(key) or {})["state"] == "sent"

    forged = signed(stack, event_for(arrived, "failed", severity="permanent", reason="bounce"), key="not-the-key")
    assert post_event(stack, forged).status_code == 401
    body = signed(stack, event_for(arrived, "delivered"))
    assert post_event(stack, body).status_code == 200
    assert (stack.delivery_record(key) or {})["state"] == "delivered"
    assert post_event(stack, body).status_code == 401  # the same post again: its token is spent
    assert (stack.delivery_record(key) or {})["state"] == "delivered"
    assert len([r for r in stack.standin.accepted() if r["message_id"] == f"<{mid}>"]) == 1
