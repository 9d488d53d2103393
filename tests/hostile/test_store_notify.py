"""Class: a store(notify=...) route posts a notification (parsed fields, `attachments` as a JSON list of
storage URLs, `message-url`, no files). Forwarded as it is, every attachment would be lost. Ingest
recognises it and logs an ERROR that names the fix; the relay fetches the stored message from Mailgun
(here the stand-in, over real HTTP) and sends that, never the bare notification. The API key goes
only to Mailgun's hosts."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay_tools import mailgun_posts
from tagrelay_tools.standin import Standin, make_handler
from tests.hostile.support import STAMP, mailgun_signature, parse, pipeline

API_KEY = "key-hostile"
DOMAIN = "example.org"
STORED = (
    b"From: Alice <alice@bank.example>\r\nTo: docs@example.org\r\nSubject: the report\r\n"
    b"Message-ID: <stored-1@bank.example>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
    b'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="report.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
)


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Standin(tmp_path / "outbox", DOMAIN, API_KEY)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def notification(message_url: str, token: str) -> mailgun_posts.Post:
    """The urlencoded notification Mailgun posts for store(notify=...) (no files, no body-mime)."""
    fields = {
        "domain": DOMAIN,
        "recipient": "docs@example.org",
        "sender": "alice@bank.example",
        "from": "Alice <alice@bank.example>",
        "subject": "the report",
        "body-plain": "see attached",
        "message-headers": json.dumps([["From", "Alice <alice@bank.example>"], ["Subject", "the report"]]),
        "attachments": json.dumps([{"url": message_url + "/attachments/0", "name": "report.pdf", "size": 9}]),
        "message-url": message_url,
        "timestamp": str(STAMP),
        "token": token,
        "signature": mailgun_signature(str(STAMP), token),
    }
    return mailgun_posts.Post("application/x-www-form-urlencoded", urlencode(fields).encode(), token)


def client(base: str) -> MailgunClient:
    return MailgunClient(requests.Session(), base, DOMAIN, Secret(SecretRef("MAILGUN_API_KEY", value=API_KEY)), 10)


def test_the_stored_message_is_fetched_and_forwarded_whole(standin: str, logged: list[logging.LogRecord]) -> None:
    requests.post(f"{standin}/_standin/stored/key1", data=STORED, timeout=10)
    p = pipeline(stored=client(standin))
    url = f"{standin}/v3/domains/{DOMAIN}/messages/key1"
    assert p.post(notification(url, "s" * 50)).status == 200
    errors = [r.getMessage() for r in logged if r.levelno == logging.ERROR]
    assert any("store(notify" in m and "forward(" in m for m in errors)
    [published] = p.out.published
    assert published.attributes["stored"] == url
    assert [o.status for o in p.deliver()] == ["sent"]
    [(to, mime)] = p.out.sent
    parsed = parse(mime)
    assert to == ("owner+docs@gmail.com",)
    assert [part.get_filename() for part in parsed.iter_attachments()] == ["report.pdf"]  # not lost


def test_a_stored_message_that_is_gone_is_dead_lettered_not_the_notification_sent(standin: str) -> None:
    p = pipeline(stored=client(standin))
    assert p.post(notification(f"{standin}/v3/domains/{DOMAIN}/messages/nope", "t" * 50)).status == 200
    assert [o.status for o in p.deliver()] == ["dead-lettered"]
    assert p.out.sent == [] and "404" in p.out.letters[0][2]


@pytest.mark.parametrize(
    "url",
    [
        "https://attacker.example/v3/domains/example.org/messages/k",
        "http://storage.api.mailgun.net/v3/domains/example.org/messages/k",
        "https://api.mailgun.net.attacker.example/v3/x",
        "https://user:pw@attacker.example@api.mailgun.net/v3/x",
    ],
)
def test_the_api_key_never_goes_to_another_host(standin: str, url: str) -> None:
    p = pipeline(stored=client(standin))
    assert p.post(notification(url, "u" * 50)).status == 200
    assert [o.status for o in p.deliver()] == ["dead-lettered"]
    assert p.out.sent == [] and "not a Mailgun storage URL" in p.out.letters[0][2]
