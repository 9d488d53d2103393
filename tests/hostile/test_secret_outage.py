"""Class: a Secret Manager outage turning valid mail into 503s.

Ingest keeps verifying signed mail with the last good signing key while Secret
Manager fails, and asks it again only after a capped exponential backoff.
The Secret Manager client is a small fake passed as client_factory; time is injected.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from google.api_core.exceptions import ServiceUnavailable

from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay_tools import mailgun_posts
from tests.hostile.perimeter_support import MESSAGE, NOW, SIGNING_KEY, RecordingPublisher, make_ingest


class FlakySecretManager:
    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def access_secret_version(self, request: dict[str, Any], timeout: float | None = None) -> Any:
        self.calls += 1
        if self.down:
            raise ServiceUnavailable("secretmanager unavailable")  # type: ignore[no-untyped-call]
        return SimpleNamespace(payload=SimpleNamespace(data=SIGNING_KEY.encode()))


def test_signed_mail_keeps_flowing_through_a_secret_manager_outage() -> None:
    wall = [NOW]
    manager = FlakySecretManager()
    ref = SecretRef(variable="MAILGUN_WEBHOOK_SIGNING_KEY", version_name="projects/p/secrets/s/versions/latest")
    key = Secret(ref, client_factory=lambda: manager, ttl=300, clock=lambda: wall[0])
    publisher = RecordingPublisher()
    service = make_ingest(publisher, signing_key=key, clock=lambda: wall[0])
    statuses = []
    for n in range(600):  # one post a second for ten minutes; Secret Manager down after the first
        post = mailgun_posts.mime_post(
            MESSAGE, "shop@example.org", "a@b.example", SIGNING_KEY, int(wall[0]), f"{n:050d}"
        )
        statuses.append(service.handle(post.content_type, post.body).status)
        manager.down = True
        wall[0] += 1
    assert statuses == [200] * 600
    assert len(publisher.published) == 600
    assert manager.calls < 20  # backoff: not one Secret Manager call per post


def test_without_a_good_key_yet_an_outage_is_503() -> None:
    manager = FlakySecretManager()
    manager.down = True
    ref = SecretRef(variable="MAILGUN_WEBHOOK_SIGNING_KEY", version_name="projects/p/secrets/s/versions/latest")
    service = make_ingest(RecordingPublisher(), signing_key=Secret(ref, client_factory=lambda: manager))
    post = mailgun_posts.mime_post(MESSAGE, "shop@example.org", "a@b.example", SIGNING_KEY, int(NOW))
    assert service.handle(post.content_type, post.body).status == 503
