"""Class 3: headers that would steer our own send through Mailgun, or leak, never leave; our sending
options go as API parameters; the spam verdict is read only from what Mailgun itself prepended.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay.core.rewrite import rewrite
from tagrelay_tools.standin import Standin, make_handler
from tests.hostile import oracle
from tests.hostile.posts import ingest, mime, parsed

STEERING = [
    b"X-Mailgun-Drop-Message: yes",
    b"X-Mailgun-Deliver-By: Fri, 01 Jan 2100 00:00:00 +0000",
    b"X-Mailgun-Track: yes",
    b"X-Mailgun-Track-Clicks: yes",
    b"X-Mailgun-Track-Opens: yes",
    b'X-Mailgun-Variables: {"a": 1}',
    b"X-Mailgun-Sending-Ip-Pool: evil",
    b"X-Mailgun-Dkim: no",
    b"X-Mailgun-Sflag: No",
    b"x-mailgun-tag: lower-case",
    b"X-Tagrelay-Spam: flag=no",
    b"X-Tagrelay-Anything: x",
    b"Disposition-Notification-To: spy@evil.example",
    b"Return-Receipt-To: spy@evil.example",
    b"X-Confirm-Reading-To: spy@evil.example",
]


def test_steering_and_read_receipt_headers_are_dropped_and_the_rest_kept() -> None:
    raw = b"\r\n".join([b"From: a@b.example", *STEERING, b"X-Tagrelay-Loop: other.example", b"Subject: s", b""])
    out = rewrite(raw + b"\r\nbody", "shop@example.org").mime
    names = oracle.field_names(out, "compat32")
    assert names == [
        "from",
        "reply-to",
        "x-original-from",
        "x-original-to",
        "x-tagrelay-loop",
        "x-tagrelay-loop",
        "subject",
    ]
    # Another tagrelay hop's loop marker stays: markers must accumulate for every hop's loop check.
    assert oracle.parsed(out, "compat32").get_all("X-Tagrelay-Loop") == ["example.org", "other.example"]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, Standin]]:
    state = Standin(tmp_path / "outbox", "example.org", "key-hostile")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_sending_options_go_as_api_parameters(standin: tuple[str, Standin]) -> None:
    base, state = standin
    key = Secret(SecretRef("MAILGUN_API_KEY", value="key-hostile"))
    with requests.Session() as session:
        MailgunClient(session, base, "example.org", key, timeout=10).send_mime(["o@gmail.com"], b"Subject: x\r\n\r\nx")
    [record] = state.accepted
    assert record["options"] == {
        "o:tracking": ["no"],
        "o:tracking-clicks": ["no"],
        "o:tracking-opens": ["no"],
        "o:dkim": ["yes"],
    }


VERDICT_ON_TOP = b"X-Mailgun-Incoming: Yes\r\nX-Mailgun-Sflag: Yes\r\nX-Mailgun-Sscore: 12.5\r\n"
SENDERS_OWN = b"X-Mailgun-Sflag: No\r\nX-Mailgun-Sscore: -10\r\n"
MESSAGE = b"Received: from a by b\r\nFrom: a@b.example\r\nSubject: s\r\n"


@pytest.mark.parametrize(
    ("mime_bytes", "verdict"),
    [
        pytest.param(VERDICT_ON_TOP + MESSAGE + SENDERS_OWN + b"\r\nx", ("Yes", "12.5"), id="mailgun-and-sender"),
        pytest.param(b"X-Mailgun-Incoming: Yes\r\n" + MESSAGE + SENDERS_OWN + b"\r\nx", ("", ""), id="sender-only"),
        pytest.param(SENDERS_OWN + VERDICT_ON_TOP + MESSAGE + b"\r\nx", ("No", "-10"), id="the-first-of-the-top-run"),
    ],
)
def test_the_spam_verdict_is_read_only_from_what_mailgun_prepended(mime_bytes: bytes, verdict: tuple[str, str]) -> None:
    h = ingest()
    response, [published] = h.post(*mime(mime_bytes))
    assert response.status == 200
    assert (published.attributes.get("spam_flag", ""), published.attributes.get("spam_score", "")) == verdict


def test_the_parsed_form_verdict_comes_from_the_top_of_message_headers_not_form_fields() -> None:
    headers = [["X-Mailgun-Incoming", "Yes"], ["X-Mailgun-Sflag", "Yes"], ["From", "a@b.example"]]
    h = ingest()
    response, [published] = h.post(*parsed([*headers, ["X-Mailgun-Sflag", "No"]]))
    assert response.status == 200
    assert published.attributes.get("spam_flag") == "Yes"
    response, [published] = ingest().post(*parsed([["From", "a@b.example"], ["X-Mailgun-Sflag", "Yes"]]))
    assert "spam_flag" not in published.attributes  # the sender wrote it below a field Mailgun did not add
