"""Claim check for messages too large for one Pub/Sub message (10 MB cap; Mailgun takes 25 MB).

Ingest stores the raw message in a Cloud Storage bucket under a fresh random name
per post (``gs://bucket/claims/<random>.eml``) and publishes only the header block
with a ``claim`` attribute and the message's SHA-256 as ``digest``. One object is
never shared: one large message to two aliases, or a Mailgun retry racing a send,
each has its own, so a delivery deleting its object never takes another's data.
The relay fetches the object only once the ledger says the delivery is still to
do, checks it against the digest, and deletes it once the message is sent (or
found already sent); a dead-lettered message keeps its object for ``replay``, and
the bucket's lifecycle rule removes leftovers (deploy.sh sets 7 days). Refused
messages too large for a Firestore document live under ``refusals/``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from typing import Any

from tagrelay.adapters.lazy import Lazy
from tagrelay.core.errors import ClaimMissing, ClaimUnavailable

TIMEOUT_SECONDS = 60.0
PREFIX = "claims/"
PREFIXES = (PREFIX, "refusals/")
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024  # a multiple of 256 KiB, as Cloud Storage requires


def default_client() -> Any:
    from google.cloud import storage  # type: ignore[attr-defined,unused-ignore]

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="tagrelay-local", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    return storage.Client()


def parse_ref(ref: str) -> tuple[str, str]:
    bucket, slash, name = ref.removeprefix("gs://").partition("/")
    if not ref.startswith("gs://") or not bucket or not slash or not name.startswith(PREFIXES):
        raise ClaimMissing(f"not a claim-check reference: {ref[:100]!r}")
    return bucket, name


class ClaimStore:
    def __init__(self, bucket: str, client_factory: Callable[[], Any] = default_client) -> None:
        self.bucket = bucket
        self._client = Lazy(client_factory)

    def _blob(self, bucket: str, name: str) -> Any:
        return self._client.get().bucket(bucket).blob(name)

    def put(self, data: bytes, prefix: str = PREFIX) -> str:
        if prefix not in PREFIXES:
            raise ValueError(f"unknown claim-check prefix {prefix!r}")
        name = f"{prefix}{secrets.token_hex(16)}.eml"  # never shared by two posts

        def upload() -> None:
            blob = self._blob(self.bucket, name)
            blob.chunk_size = UPLOAD_CHUNK_BYTES  # a resumable upload in pieces, not one more copy of it all
            blob.upload_from_string(data, content_type="message/rfc822", timeout=TIMEOUT_SECONDS)

        self._call(upload)
        return f"gs://{self.bucket}/{name}"

    def get(self, ref: str) -> bytes:
        bucket, name = parse_ref(ref)
        data = self._call(lambda: self._blob(bucket, name).download_as_bytes(timeout=TIMEOUT_SECONDS))
        return bytes(data)

    def delete(self, ref: str) -> None:
        bucket, name = parse_ref(ref)
        self._call(lambda: self._blob(bucket, name).delete(timeout=TIMEOUT_SECONDS))

    def _call(self, operation: Callable[[], Any]) -> Any:
        from google.api_core.exceptions import GoogleAPIError, NotFound
        from google.auth.exceptions import GoogleAuthError
        from requests import RequestException

        try:
            return operation()
        except NotFound:
            raise ClaimMissing("the claim-check object is gone") from None
        except (GoogleAPIError, GoogleAuthError, RequestException) as exc:  # credentials refresh included
            raise ClaimUnavailable(f"Cloud Storage failed ({type(exc).__name__})") from None
