"""MailgunClient (issue 12): which failed sends may have reached Mailgun, and finding an earlier send in
Mailgun's Events API. Real HTTP: the Mailgun stand-in in process, or a raw socket server that breaks
the connection the way a network does."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from tagrelay.adapters import mailgun as mailgun_module
from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import MailgunTransient, MailgunUnsure
from tagrelay.core.ports import DELIVERY_VARIABLE
from tests.unit.inprocess_standin import serving, serving_handler
from tests.unit.test_mailgun import RotatingKeys, Server, rotatable_key

DOMAIN = "example.org"
API_KEY = "key-events-test"
KEY = "ab12" * 16
MESSAGE = b"From: a@bank.example\r\nSubject: x\r\nMessage-ID: <m@bank.example>\r\n\r\nbody\r\n"
TARGET = "owner+shop@gmail.com"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path / "outbox", DOMAIN, API_KEY) as standin:
        yield Server(standin.url, standin, tmp_path / "outbox")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def key(value: str = API_KEY) -> Secret:
    return Secret(SecretRef(variable="MAILGUN_API_KEY", value=value))


def client(base: str, session: requests.Session, secret: Secret | None = None, timeout: float = 10) -> MailgunClient:
    return MailgunClient(session, base, DOMAIN, secret or key(), timeout=timeout)


def send(mailgun: MailgunClient, delivery: str = KEY, to: str = TARGET) -> str:
    return mailgun.send_mime([to], MESSAGE, {DELIVERY_VARIABLE: delivery})


# -- which failures may have reached Mailgun ----------------------------------------------------


def test_a_refused_connection_never_reached_mailgun(session: requests.Session) -> None:
    # Bound but not listening: a connection is refused, and no other test (or pytest worker) can take the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(MailgunTransient) as caught:
            send(client(f"http://127.0.0.1:{port}", session, timeout=2))
    assert type(caught.value) is MailgunTransient


@pytest.mark.parametrize("status", ["429", "500", "503"])
def test_an_answer_says_for_sure_mailgun_did_not_take_it(
    server: Server, session: requests.Session, status: str
) -> None:
    server.fail_next(status)
    with pytest.raises(MailgunTransient) as caught:
        send(client(server.base, session))
    assert type(caught.value) is MailgunTransient


def test_an_answer_held_past_the_timeout_is_unsure_and_mailgun_did_accept_it(
    server: Server, session: requests.Session
) -> None:
    """The crash window itself: Mailgun has the message, the relay only sees a timeout."""
    server.fail_next("hold:3")
    with pytest.raises(MailgunUnsure, match="may have accepted"):
        send(client(server.base, session, timeout=1))
    assert [record["to"] for record in server.standin.accepted] == [[TARGET]]


def test_no_answer_at_all_is_unsure(server: Server, session: requests.Session) -> None:
    server.fail_next("hang")
    with pytest.raises(MailgunUnsure):
        send(client(server.base, session, timeout=1))


@pytest.mark.parametrize("answer", [b"", b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"id"'])
def test_a_connection_closed_after_the_request_is_unsure(session: requests.Session, answer: bytes) -> None:
    """The server reads the whole request, then the connection ends without (or in the middle of) an answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(5)
            data = b""
            while b"--\r\n" not in data[-200:]:  # the multipart body's closing boundary
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
            connection.sendall(answer)

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    try:
        with pytest.raises(MailgunUnsure, match="broke"):
            send(client(f"http://127.0.0.1:{listener.getsockname()[1]}", session, timeout=5))
    finally:
        thread.join(timeout=5)
        listener.close()


# -- the Events API ---------------------------------------------------------------------------------


def test_an_accepted_send_is_found_by_its_delivery_key_with_the_id_the_send_returned(
    server: Server, session: requests.Session
) -> None:
    mailgun = client(server.base, session)
    before = time.time()
    send(mailgun, delivery="0" * 64)  # another delivery to the same target
    mailgun_id = send(mailgun)
    assert mailgun_id.startswith("<") and mailgun_id.endswith(">")
    assert mailgun.find_accepted(TARGET, KEY, before - 60) == mailgun_id


@pytest.mark.parametrize(
    ("recipient", "delivery", "since_offset"),
    [("owner+other@gmail.com", KEY, -60), (TARGET, "9" * 64, -60), (TARGET, KEY, +60)],
    ids=["other-recipient", "other-key", "before-the-range"],
)
def test_nothing_is_found_outside_the_query(
    server: Server, session: requests.Session, recipient: str, delivery: str, since_offset: float
) -> None:
    mailgun = client(server.base, session)
    send(mailgun)
    assert mailgun.find_accepted(recipient, delivery, time.time() + since_offset) is None


def test_the_walk_follows_the_next_page_until_it_finds_the_send(server: Server, session: requests.Session) -> None:
    since = time.time() - 60
    for n in range(305):  # more than one page of 300 accepted events to the same target
        server.standin.mailbox.accepted([TARGET], f"<{n}@standin>", {}, {DELIVERY_VARIABLE: f"{n:064d}"})
    server.standin.mailbox.accepted([TARGET], "<mine@standin>", {}, {DELIVERY_VARIABLE: KEY})
    assert client(server.base, session).find_accepted(TARGET, KEY, since) == "<mine@standin>"


def test_a_walk_past_its_page_bound_cannot_tell(
    server: Server, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = time.time() - 60
    for n in range(301):
        server.standin.mailbox.accepted([TARGET], f"<{n}@standin>", {}, {DELIVERY_VARIABLE: f"{n:064d}"})
    monkeypatch.setattr(mailgun_module, "EVENTS_MAX_PAGES", 1)
    with pytest.raises(MailgunTransient, match="after 1 pages"):
        client(server.base, session).find_accepted(TARGET, KEY, since)


def test_a_rotated_key_is_refetched_once_for_the_events_api(server: Server, session: requests.Session) -> None:
    send(client(server.base, session))
    keys = RotatingKeys("key-old", API_KEY)
    assert client(server.base, session, rotatable_key(keys)).find_accepted(TARGET, KEY, time.time() - 60)
    assert keys.fetches == 2


@dataclass
class Scripted:
    """A server answering GETs with the given (status, JSON body) in turn; records each request."""

    answers: list[tuple[int, Any]]
    requests: list[tuple[str, str]] = field(default_factory=list)
    base: str = ""


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    box = Scripted([])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            box.requests.append((self.path, self.headers.get("Authorization", "")))
            status, body = box.answers.pop(0) if box.answers else (200, {"items": [], "paging": {}})
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving_handler(Handler) as url:
        box.base = url
        yield box


def test_the_query_asks_for_accepted_events_to_the_recipient_ascending_from_since(
    scripted: Scripted, session: requests.Session
) -> None:
    assert client(scripted.base, session).find_accepted(TARGET, KEY, 1_700_000_000.5) is None
    [(path, auth)] = scripted.requests
    assert path == (
        f"/v3/{DOMAIN}/events?event=accepted&recipient=owner%2Bshop%40gmail.com"
        "&begin=1700000000.500&ascending=yes&limit=300"
    )
    assert auth == "Basic " + base64.b64encode(f"api:{API_KEY}".encode()).decode()


@pytest.mark.parametrize(
    "answer",
    [(500, {"message": "internal"}), (401, {"message": "Invalid private key"}), (200, b"<html>"), (200, {"x": 1})],
    ids=["500", "401", "not-json", "no-items"],
)
def test_an_events_api_that_does_not_answer_a_page_cannot_tell(
    scripted: Scripted, session: requests.Session, answer: tuple[int, Any]
) -> None:
    scripted.answers = [answer]
    with pytest.raises(MailgunTransient, match="Events API"):
        client(scripted.base, session).find_accepted(TARGET, KEY, 0.0)


def test_a_next_page_on_another_host_is_not_followed_with_the_key(
    scripted: Scripted, session: requests.Session
) -> None:
    other = {"event": "accepted", "user-variables": {DELIVERY_VARIABLE: "0" * 64}}
    scripted.answers = [(200, {"items": [other], "paging": {"next": "https://attacker.example/v3/x/events/p2"}})]
    with pytest.raises(MailgunTransient, match="unusable next page URL"):
        client(scripted.base, session).find_accepted(TARGET, KEY, 0.0)
    assert len(scripted.requests) == 1


def test_the_next_page_url_is_followed_as_given(scripted: Scripted, session: requests.Session) -> None:
    other = {"event": "accepted", "user-variables": {DELIVERY_VARIABLE: "0" * 64}}
    mine = {
        "event": "accepted",
        "user-variables": {DELIVERY_VARIABLE: KEY},
        "message": {"headers": {"message-id": "m"}},
    }
    scripted.answers = [
        (200, {"items": [other], "paging": {"next": f"{scripted.base}/v3/{DOMAIN}/events/page-two"}}),
        (200, {"items": [mine], "paging": {"next": f"{scripted.base}/v3/{DOMAIN}/events/page-three"}}),
    ]
    assert client(scripted.base, session).find_accepted(TARGET, KEY, 0.0) == "<m>"
    assert [path for path, _ in scripted.requests][1] == f"/v3/{DOMAIN}/events/page-two"
