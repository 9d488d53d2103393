"""Signed Mailgun posts for the hostile tier, built with the tooling's post simulator."""

from __future__ import annotations

import json

from tagrelay_tools import mailgun_posts
from tests.fuzz.support import KEY, TIMESTAMP, Harness, Part, encode_multipart, harness, multipart_type, resign

ALIAS = "shop@example.org"


def mime(raw: bytes, recipient: str = ALIAS) -> tuple[str, bytes]:
    post = mailgun_posts.mime_post(raw, recipient, "bounce@origin.example", KEY, TIMESTAMP, "h" * 50)
    return post.content_type, post.body


def parsed(headers: list[list[str]], *extra: Part, recipient: str = ALIAS) -> tuple[str, bytes]:
    parts = [
        Part(b"recipient", recipient.encode()),
        Part(b"sender", b"bounce@origin.example"),
        Part(b"timestamp", str(TIMESTAMP).encode()),
        Part(b"token", b"p" * 50),
        Part(b"body-plain", b"hello"),
        Part(b"message-headers", json.dumps(headers).encode()),
        *extra,
    ]
    return multipart_type(), encode_multipart(resign(parts))


def ingest() -> Harness:
    return harness()
