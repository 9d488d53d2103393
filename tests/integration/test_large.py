"""A 25 MB message (Mailgun's limit) through the claim check, end to end."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import requests

from tagrelay_tools.localstack import Stack
from tests.integration.conftest import TAP, post
from tests.integration.waits import alias, forward_of, pulled_until, wait_for, wait_for_arrival, with_message_id
from tests.unit.support import body_bytes

MESSAGE_BYTES = 25 * 1000 * 1000


def large_message(message_id: str, size: int) -> bytes:
    """A multipart message of about ``size`` bytes with a deterministic binary attachment."""
    blob = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size * 3 // 4 // 32))
    encoded = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    head = (
        f"From: Big Sender <big@bank.example>\r\nTo: big@example.org\r\nSubject: large\r\n"
        f"Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        '--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="big.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + encoded + b"--b1--\r\n"


def test_a_25_mb_message_is_forwarded_intact_through_the_claim_check(stack: Stack) -> None:
    address, mid = alias("large")
    raw = large_message(mid, MESSAGE_BYTES)
    assert len(raw) > 20_000_000
    assert post(stack, raw, address).status_code == 200

    published = pulled_until(stack, TAP, with_message_id(mid))[-1]
    assert published["attributes"]["claim"].startswith(f"gs://{stack.claim_bucket}/claims/")
    assert len(published["data"]) < 10_000  # only the header block went through Pub/Sub

    record = wait_for_arrival(stack, mid, seconds=120)
    assert record["to"] == [forward_of(address)]
    forwarded = Path(record["path"]).read_bytes()
    assert body_bytes(forwarded) == body_bytes(raw)

    claim = published["attributes"]["claim"].removeprefix(f"gs://{stack.claim_bucket}/")
    objects = f"{stack.children['storage'].url}/storage/v1/b/{stack.claim_bucket}/o"

    def deleted() -> bool:
        names = [item["name"] for item in requests.get(objects, timeout=30).json().get("items", [])]
        return claim not in names

    wait_for("the claim-check object deleted after delivery", deleted, seconds=30)
