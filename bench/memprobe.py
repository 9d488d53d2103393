"""Peak memory of forwarding one large message, in a fresh process: ``python -m bench.memprobe ingest|relay``.

Builds the message and what arrives with it (ingest: the signed Mailgun post;
relay: the Pub/Sub CloudEvent data), resets the peak (VmHWM) to the current RSS,
forwards the message once through the real service with in-memory doubles for the
network, and prints one JSON line: RSS before, peak after, message size.

The doubles: ``MemoryLedger``; a publisher that records sizes; a Cloud Storage
client whose download returns a fresh copy of the object (as a real download
allocates one); and, for the relay, the real ``MailgunClient`` over a requests
transport that records the encoded request instead of sending it, so the
multipart encoding of the message is counted.

A message over Pub/Sub's 10 MB cap travels by claim check (the message in the
bucket, its header block in Pub/Sub); the probe forwards it that way when the
services support it, and says which path it took.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from requests.adapters import BaseAdapter
from requests.models import PreparedRequest, Response

from bench.messages import SENDER, sized_message
from tagrelay.adapters.claimcheck import ClaimStore
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core import envelope
from tagrelay.core.config import SecretRef, load_ingest
from tagrelay.core.inbound import InboundMessage
from tagrelay.core.routes import load_file
from tagrelay.services.ingest import Ingest
from tagrelay.services.relay import Relay
from tagrelay_tools import mailgun_posts

ROUTES = Path(__file__).resolve().parent / "routes.toml"
KEY = "bench-signing-key"
RECIPIENT = "bench@example.org"
BUCKET = "bench-claims"


def status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    values: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def settle() -> None:
    """Free what building the input left behind, so the baseline RSS holds only live data.

    glibc keeps freed heap pages resident (and after the first large free it serves
    large blocks from the heap), so without a trim a later allocation could reuse
    pages counted in the baseline and the added peak would read too low.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False when not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RecordingPublisher:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        self.sizes.append(len(data))
        return str(len(self.sizes))


class FakeStorage:
    """A Cloud Storage client double: ``bucket(b).blob(n)`` with upload, download and delete."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.uploaded: list[int] = []

    def bucket(self, name: str) -> _Bucket:
        return _Bucket(self, name)


class _Bucket:
    def __init__(self, storage: FakeStorage, name: str) -> None:
        self._storage = storage
        self._name = name

    def blob(self, name: str) -> _Blob:
        return _Blob(self._storage, f"{self._name}/{name}")


class _Blob:
    def __init__(self, storage: FakeStorage, key: str) -> None:
        self._storage = storage
        self._key = key

    def upload_from_string(self, data: bytes, content_type: str = "", timeout: float = 0.0) -> None:
        self._storage.uploaded.append(len(data))

    def download_as_bytes(self, timeout: float = 0.0) -> bytes:
        return bytes(memoryview(self._storage.objects[self._key]))  # a fresh copy, as a download makes

    def delete(self, timeout: float = 0.0) -> None:
        self._storage.objects.pop(self._key, None)


class RecordingTransport(BaseAdapter):
    """A requests transport that keeps the size of what would be sent and answers like Mailgun."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        body: Any = request.body
        if hasattr(body, "read"):  # a streamed body: read it through, as the socket would
            size = 0
            while block := body.read(1 << 16):
                size += len(block)
            self.sizes.append(size)
        else:
            self.sizes.append(len(body) if isinstance(body, (bytes, str)) else 0)
        response = Response()
        response.status_code = 200
        response._content = b'{"id": "<1@bench>", "message": "Queued. Thank you."}'
        response.headers["Content-Type"] = "application/json"
        response.request = request
        response.url = request.url or ""
        return response

    def close(self) -> None:
        return


class NoDeadLetters:
    def put(self, data: bytes, attributes: dict[str, str], reason: str) -> None:
        raise RuntimeError(f"the probe message was dead-lettered: {reason}")


def ingest_service(storage: FakeStorage, publisher: RecordingPublisher) -> Ingest:
    config = load_ingest(
        {
            "GOOGLE_CLOUD_PROJECT": "bench",
            "TAGRELAY_ROUTES": str(ROUTES),
            "MAILGUN_WEBHOOK_SIGNING_KEY": KEY,
            "TAGRELAY_CLAIM_BUCKET": BUCKET,
        }
    )
    claims = ClaimStore(BUCKET, client_factory=lambda: storage)
    return Ingest(
        config=config, signing_key=Secret(config.signing_key), publisher=publisher, ledger=MemoryLedger(), claims=claims
    )


def relay_event(raw: bytes, storage: FakeStorage) -> dict[str, Any]:
    """The CloudEvent data the relay gets for ``raw``: by claim check, the header block in Pub/Sub."""
    name = f"claims/{hashlib.sha256(raw).hexdigest()}.eml"
    storage.objects[f"{BUCKET}/{name}"] = raw
    now = datetime.now(UTC)
    inbound = InboundMessage(RECIPIENT, SENDER, raw, "probe-token", int(now.timestamp()), "mime")
    data, attributes = envelope.encode(inbound, now, claim=f"gs://{BUCKET}/{name}")
    return {
        "message": {
            "data": envelope_data(data),
            "attributes": attributes,
            "messageId": "1",
            "publishTime": now.isoformat().replace("+00:00", "Z"),
        }
    }


def envelope_data(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Peak memory of forwarding one large message")
    parser.add_argument("service", choices=("ingest", "relay"))
    parser.add_argument("--size", type=int, default=25_000_000)
    args = parser.parse_args(argv)

    storage = FakeStorage()
    raw = sized_message(args.size, message_id="memory@bench.example")
    size = len(raw)
    detail: dict[str, Any]
    if args.service == "ingest":
        publisher = RecordingPublisher()
        service = ingest_service(storage, publisher)
        post = mailgun_posts.mime_post(raw, RECIPIENT, SENDER, KEY)
        content_type, body = post.content_type, post.body
        del raw, post
        settle()
        reset = reset_peak()
        before = status()
        answer = service.handle(content_type, body)
        after = status()
        detail = {
            "status": answer.status,
            "answer": answer.text,
            "uploaded_bytes": sum(storage.uploaded),
            "published_bytes": sum(publisher.sizes),
            "path": "claim check" if storage.uploaded else ("inline" if publisher.sizes else "refused"),
        }
    else:
        transport = RecordingTransport()
        session = requests.Session()
        session.mount("http://", transport)
        mailgun = MailgunClient(
            session, "http://mailgun.invalid", "example.org", Secret(SecretRef("MAILGUN_API_KEY", value="k")), 10.0
        )
        relay = Relay(
            routes=load_file(str(ROUTES)),
            sender=mailgun,
            deadletters=NoDeadLetters(),
            ledger=MemoryLedger(),
            claims=ClaimStore(BUCKET, client_factory=lambda: storage),
        )
        event_data = relay_event(raw, storage)
        del raw
        settle()
        reset = reset_peak()
        before = status()
        outcome = relay.handle_event_data(event_data)
        after = status()
        detail = {"status": outcome.status, "request_bytes": sum(transport.sizes), "path": "claim check"}
    baseline_rss = before["VmRSS"] if reset else before["VmHWM"]
    report = {
        "service": args.service,
        "message_bytes": size,
        "rss_before": before["VmRSS"],
        "peak_after": after["VmHWM"],
        "peak_added": after["VmHWM"] - baseline_rss,
        "peak_reset": reset,
        **detail,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
