"""The Mailgun stand-in's events, webhooks and suppressions (issue 12), in process, over real HTTP.

The sends go through the production client (tagrelay.adapters.mailgun); the webhook
receiver checks each signature with the stdlib's hmac, independently of the stand-in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay_tools.standin import Standin, StandinClient
from tests.unit.inprocess_standin import serving, serving_handler

DOMAIN = "example.org"
API_KEY = "key-standin-events"
WEBHOOK_KEY = "webhook-signing-key"
MESSAGE = b"From: Shop <news@shop.example>\r\nSubject: Hello\r\nMessage-ID: <m1@shop.example>\r\n\r\nbody\r\n"


@dataclass
class Receiver:
    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    answer: int = 200

    def wait(self, count: int, seconds: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.posts)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            signed = body["signature"]
            expected = hmac.new(
                WEBHOOK_KEY.encode(), (signed["timestamp"] + signed["token"]).encode(), hashlib.sha256
            ).hexdigest()
            body["verified"] = hmac.compare_digest(expected, signed["signature"])
            body["path"] = self.path
            box.posts.append(body)
            self.send_response(box.answer)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving_handler(Handler) as url:
        box.url = url
        yield box


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, Standin]]:
    with serving(tmp_path / "outbox", DOMAIN, API_KEY, WEBHOOK_KEY) as state:
        yield state.url, state


def api(base: str) -> requests.Session:
    session = requests.Session()
    session.auth = ("api", API_KEY)
    return session


def register(base: str, receiver: Receiver, *names: str) -> None:
    with api(base) as session:
        for name in names:
            response = session.post(
                f"{base}/v3/domains/{DOMAIN}/webhooks", data={"id": name, "url": f"{receiver.url}/{name}"}, timeout=5
            )
            assert response.status_code == 200, response.text


def send(base: str, to: str, delivery: str = "d-1") -> str:
    with requests.Session() as session:
        mailgun = MailgunClient(session, base, DOMAIN, Secret(SecretRef(variable="K", value=API_KEY)), timeout=5)
        return mailgun.send_mime([to], MESSAGE, {"tagrelay-delivery": delivery})


def test_a_send_is_accepted_then_delivered_with_its_user_variables(
    standin: tuple[str, Standin], receiver: Receiver
) -> None:
    base, _ = standin
    register(base, receiver, "delivered", "accepted")
    mailgun_id = send(base, "Owner@Gmail.com", "key-123")
    posts = receiver.wait(2)
    assert [p["event-data"]["event"] for p in posts] == ["accepted", "delivered"]
    assert all(p["verified"] for p in posts)
    assert [p["path"] for p in posts] == ["/accepted", "/delivered"]
    delivered = posts[1]["event-data"]
    assert delivered["recipient"] == "owner@gmail.com"
    assert delivered["user-variables"] == {"tagrelay-delivery": "key-123"}
    assert delivered["message"]["headers"]["message-id"] == mailgun_id.strip("<>")
    assert delivered["message"]["headers"]["subject"] == "Hello"
    assert delivered["delivery-status"]["code"] == 250


def test_a_permanent_bounce_suppresses_the_address_until_it_is_cleared(
    standin: tuple[str, Standin], receiver: Receiver
) -> None:
    base, _ = standin
    register(base, receiver, "permanent_fail", "delivered")
    StandinClient(base).script_outcome("owner@gmail.com", event="failed", severity="permanent", times=1)
    send(base, "owner@gmail.com", "first")
    send(base, "owner@gmail.com", "second")
    posts = receiver.wait(2)
    assert [(p["path"], p["event-data"]["reason"]) for p in posts] == [
        ("/permanent_fail", "bounce"),
        ("/permanent_fail", "suppress-bounce"),
    ]
    assert posts[1]["event-data"]["delivery-status"]["message"] == "Not delivering to previously bounced address"
    with api(base) as session:
        listed = session.get(f"{base}/v3/{DOMAIN}/bounces", timeout=5).json()["items"]
        assert [item["address"] for item in listed] == ["owner@gmail.com"]
        assert session.get(f"{base}/v3/{DOMAIN}/bounces/owner@gmail.com", timeout=5).status_code == 200
        assert session.delete(f"{base}/v3/{DOMAIN}/bounces/owner@gmail.com", timeout=5).status_code == 200
        assert session.get(f"{base}/v3/{DOMAIN}/bounces/owner@gmail.com", timeout=5).status_code == 404
        assert session.delete(f"{base}/v3/{DOMAIN}/bounces/owner@gmail.com", timeout=5).status_code == 404
    send(base, "owner@gmail.com", "third")
    assert receiver.wait(3)[2]["event-data"]["event"] == "delivered"


def test_complaints_and_unsubscribes_are_suppressions_too(standin: tuple[str, Standin], receiver: Receiver) -> None:
    base, _ = standin
    register(base, receiver, "permanent_fail", "complained")
    client = StandinClient(base)
    client.script_outcome("a@gmail.com", event="complained", times=1)
    client.suppress("b@gmail.com", "unsubscribes")
    send(base, "a@gmail.com")
    send(base, "a@gmail.com")
    send(base, "b@gmail.com")
    reasons = sorted(
        (p["event-data"]["recipient"], p["event-data"]["event"], p["event-data"].get("reason", ""))
        for p in receiver.wait(3)
    )
    assert reasons == [
        ("a@gmail.com", "complained", ""),
        ("a@gmail.com", "failed", "suppress-complaint"),
        ("b@gmail.com", "failed", "suppress-unsubscribe"),
    ]


def test_the_events_api_filters_and_pages(standin: tuple[str, Standin]) -> None:
    base, _ = standin
    start = time.time() - 1
    ids = [send(base, "owner@gmail.com", f"d-{n}") for n in range(5)]
    send(base, "other@gmail.com", "elsewhere")
    seen: list[str] = []
    with api(base) as session:
        url = f"{base}/v3/{DOMAIN}/events"
        params: dict[str, str] | None = {
            "event": "accepted",
            "recipient": "owner@gmail.com",
            "begin": str(start),
            "ascending": "yes",
            "limit": "2",
        }
        for _ in range(10):
            page = session.get(url, params=params, timeout=5).json()
            if not page["items"]:
                break
            seen += [item["user-variables"]["tagrelay-delivery"] for item in page["items"]]
            assert all(
                item["message"]["headers"]["message-id"] in {i.strip("<>") for i in ids} for item in page["items"]
            )
            url, params = page["paging"]["next"], None
        assert seen == [f"d-{n}" for n in range(5)]
        later = session.get(f"{base}/v3/{DOMAIN}/events", params={"begin": str(time.time() + 60)}, timeout=5).json()
        assert later["items"] == []
        assert session.get(f"{base}/v3/{DOMAIN}/events", params={"limit": "301"}, timeout=5).status_code == 400
        assert requests.get(f"{base}/v3/{DOMAIN}/events", timeout=5).status_code == 401


def test_hold_records_the_message_before_it_answers(standin: tuple[str, Standin]) -> None:
    base, state = standin
    StandinClient(base).set_faults({"queue": ["hold:1.5"]})
    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(send(base, "owner@gmail.com", "held")))
    thread.start()
    deadline = time.monotonic() + 5
    while not state.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(state.accepted) == 1 and not done  # Mailgun has it; the sender has not heard yet
    thread.join(timeout=10)
    assert done == [state.accepted[0]["id"]]


def test_webhooks_api_create_update_list_delete(standin: tuple[str, Standin], receiver: Receiver) -> None:
    base, _ = standin
    hooks = f"{base}/v3/domains/{DOMAIN}/webhooks"
    with api(base) as session:
        assert session.post(hooks, data={"id": "delivered", "url": "http://a/"}, timeout=5).status_code == 200
        assert session.post(hooks, data={"id": "delivered", "url": "http://b/"}, timeout=5).status_code == 400
        assert session.post(hooks, data={"id": "failed", "url": "http://b/"}, timeout=5).status_code == 400
        assert session.put(f"{hooks}/delivered", data={"url": "http://c/"}, timeout=5).status_code == 200
        assert session.get(hooks, timeout=5).json() == {"webhooks": {"delivered": {"urls": ["http://c/"]}}}
        assert session.delete(f"{hooks}/delivered", timeout=5).status_code == 200
        assert session.put(f"{hooks}/delivered", data={"url": "http://c/"}, timeout=5).status_code == 404
        assert session.get(hooks, timeout=5).json() == {"webhooks": {}}


def test_an_event_can_be_posted_again_and_each_post_is_recorded(
    standin: tuple[str, Standin], receiver: Receiver
) -> None:
    base, _ = standin
    register(base, receiver, "delivered")
    receiver.answer = 500
    send(base, "owner@gmail.com")
    first = receiver.wait(3)  # retried: 3 attempts, each answered 500
    assert len(first) == 3
    client = StandinClient(base)
    deadline = time.monotonic() + 5
    while not client.webhook_posts() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(p["event"], p["status"]) for p in client.webhook_posts()] == [("delivered", 500)]
    receiver.answer = 200
    again = client.repost(first[0]["event-data"]["id"])
    assert again["id"] == first[0]["event-data"]["id"]
    posts = receiver.wait(4)
    assert posts[3]["event-data"] == first[0]["event-data"]
    assert posts[3]["signature"]["token"] != first[0]["signature"]["token"]  # signed afresh, like Mailgun's retries
