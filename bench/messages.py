"""Test messages and the requests that carry them: Mailgun posts and Pub/Sub push bodies.

Messages are generated, deterministic for a seed, and look like real mail: a header
block with trace and signature headers (which the rewrite drops), a text part and
base64 attachment lines of 76 characters with CRLF endings.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import time
from datetime import UTC, datetime

from tagrelay.core import envelope
from tagrelay.core.inbound import InboundMessage, sign
from tagrelay_tools import mailgun_posts

BOUNDARY = "bench-boundary-5f1c2a"
SENDER = "alice@bank.example"


def headers(message_id: str, subject: str = "benchmark") -> bytes:
    return (
        "Return-Path: <alice@bank.example>\r\n"
        "Received: from mail.bank.example (mail.bank.example [192.0.2.10])\r\n"
        "\tby mxa.mailgun.org with ESMTPS id 4a1b2c3d; Mon, 13 Nov 2023 22:13:20 +0000\r\n"
        "Received: from [10.0.0.7] (host.bank.example [192.0.2.11])\r\n"
        "\tby mail.bank.example with ESMTPSA id 9f8e7d; Mon, 13 Nov 2023 22:13:19 +0000\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bank.example; s=s1;\r\n"
        "\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        "\tb=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR\r\n"
        "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=bank.example\r\n"
        "From: Alice Example <alice@bank.example>\r\n"
        "To: someone@example.org\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 13 Nov 2023 22:13:19 +0000\r\n"
        f"Message-ID: <{message_id}>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode("ascii")


def small_message(message_id: str) -> bytes:
    """About 2 KB: headers and a short text body."""
    text = "Hello,\r\n\r\n" + "This is a benchmark message with an ordinary short body.\r\n" * 20 + "-- \r\nAlice\r\n"
    return headers(message_id) + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode("ascii")


def sized_message(size: int, message_id: str = "sized@bench.example", seed: int = 7) -> bytes:
    """A multipart/mixed message of about ``size`` bytes: a text part and one base64 attachment."""
    head = headers(message_id, f"attachment of {size} bytes") + (
        f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"\r\n\r\n'
        f"--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n"
        f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="data.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    ).encode("ascii")
    tail = f"\r\n--{BOUNDARY}--\r\n".encode("ascii")
    room = max(0, size - len(head) - len(tail))
    raw_bytes = room * 76 // 78 * 3 // 4  # 76 base64 characters and CRLF per line
    encoded = base64.encodebytes(random.Random(seed).randbytes(raw_bytes)).replace(b"\n", b"\r\n")
    return head + encoded.rstrip(b"\r\n") + tail


def mime_path(route_key: str) -> str:
    """The path Mailgun's route posts to: ``/mime`` and the route key (``?k=``) when the stack has one."""
    return mailgun_posts.target("", "/mime", route_key)


class PostFactory:
    """Signed Mailgun ``body-mime`` posts of one message, each with a fresh token.

    The multipart body is built once; each post only swaps the token and its
    signature (both of fixed length), so load generation costs the client little.
    """

    def __init__(self, raw: bytes, recipient: str, key: str) -> None:
        self._key = key.encode("utf-8")
        self._timestamp = str(int(time.time()))
        token = secrets.token_hex(25)
        post = mailgun_posts.mime_post(raw, recipient, SENDER, key, timestamp=int(self._timestamp), token=token)
        signature = sign(self._key, self._timestamp, token).encode("ascii")
        self.content_type = post.content_type
        before, rest = post.body.split(token.encode("ascii"), 1)
        middle, after = rest.split(signature, 1)
        self._parts = (before, middle, after)

    def next(self) -> bytes:
        token = secrets.token_hex(25)
        signature = sign(self._key, self._timestamp, token).encode("ascii")
        before, middle, after = self._parts
        return before + token.encode("ascii") + middle + signature + after


def unique_post(raw: bytes, recipient: str, key: str) -> mailgun_posts.Post:
    return mailgun_posts.mime_post(raw, recipient, SENDER, key)


def push_body(raw: bytes, recipient: str, number: int) -> bytes:
    """What a Pub/Sub push subscription posts to the relay for one tagrelay.v1 message."""
    now = datetime.now(UTC)
    message = InboundMessage(
        recipient=recipient,
        sender=SENDER,
        mime=raw,
        token=secrets.token_hex(25),
        timestamp=int(now.timestamp()),
        form_kind="mime",
    )
    data, attributes = envelope.encode(message, now)
    body = {
        "message": {
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": attributes,
            "messageId": str(number),
            "publishTime": now.isoformat().replace("+00:00", "Z"),
        },
        "subscription": "projects/tagrelay-local/subscriptions/bench-direct",
    }
    return json.dumps(body).encode("utf-8")
