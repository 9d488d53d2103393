"""tagrelay.adapters.mailgun.MailgunClient against a real local HTTP server: the Mailgun stand-in, in-process."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import SecretRef
from tagrelay.core.errors import MailgunRejected, MailgunTransient
from tagrelay_tools.standin import Standin
from tests.unit.inprocess_standin import serving
from tests.unit.support import corpus

DOMAIN = "example.org"
API_KEY = "key-standin-test"


@dataclass
class Server:
    base: str
    standin: Standin
    outbox: Path

    def fail_next(self, *outcomes: str) -> None:
        with self.standin.lock:
            self.standin.queue = list(outcomes)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path / "outbox", DOMAIN, API_KEY) as standin:
        yield Server(standin.url, standin, tmp_path / "outbox")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def direct_key(value: str = API_KEY) -> Secret:
    return Secret(SecretRef(variable="MAILGUN_API_KEY", value=value))


class RotatingKeys:
    """A Secret Manager stand-in answering the given keys in turn; counts the fetches."""

    def __init__(self, *keys: str) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def access_secret_version(self, request: dict[str, Any], timeout: float | None = None) -> Any:
        key = self.keys[min(self.fetches, len(self.keys) - 1)]
        self.fetches += 1
        return SimpleNamespace(payload=SimpleNamespace(data=key.encode()))


def rotatable_key(source: RotatingKeys) -> Secret:
    ref = SecretRef(variable="MAILGUN_API_KEY", version_name="projects/demo/secrets/mg/versions/latest")
    return Secret(ref, client_factory=lambda: source)


def client(server: Server, session: requests.Session, key: Secret | None = None, timeout: float = 10) -> MailgunClient:
    return MailgunClient(session, server.base, DOMAIN, key or direct_key(), timeout=timeout)


def test_accepted_message_returns_the_id_and_arrives_byte_for_byte(server: Server, session: requests.Session) -> None:
    mime = corpus("12-shift-jis.eml")  # 8bit octets that are not UTF-8
    targets = ["owner+shop@gmail.com", "alice@gmail.com", "bob@gmail.com"]
    mailgun_id = client(server, session).send_mime(targets, mime)
    assert mailgun_id.startswith("<1.") and mailgun_id.endswith(f"@standin.{DOMAIN}>")
    assert (server.outbox / "1.eml").read_bytes() == mime
    record = json.loads((server.outbox / "1.json").read_text())
    assert record["to"] == targets
    assert record["id"] == mailgun_id


def test_each_send_is_one_message(server: Server, session: requests.Session) -> None:
    mailgun = client(server, session)
    first = mailgun.send_mime(["a@gmail.com"], corpus("01-plain-ascii.eml"))
    second = mailgun.send_mime(["b@gmail.com"], corpus("22-binary-cte.eml"))
    assert first != second
    assert (server.outbox / "2.eml").read_bytes() == corpus("22-binary-cte.eml")
    assert [r["to"] for r in server.standin.accepted] == [["a@gmail.com"], ["b@gmail.com"]]


def test_wrong_direct_key_is_transient_without_a_refetch(server: Server, session: requests.Session) -> None:
    with pytest.raises(MailgunTransient, match="401"):
        client(server, session, direct_key("key-wrong")).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert server.standin.accepted == []


def test_wrong_rotatable_key_is_refetched_once_then_transient(server: Server, session: requests.Session) -> None:
    keys = RotatingKeys("key-old", "key-still-wrong", "key-never-asked")
    with pytest.raises(MailgunTransient, match="401"):
        client(server, session, rotatable_key(keys)).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert keys.fetches == 2  # the first get, then exactly one refresh
    assert server.standin.accepted == []


def test_rotated_key_is_picked_up_by_the_refresh(server: Server, session: requests.Session) -> None:
    keys = RotatingKeys("key-old", API_KEY)
    mailgun_id = client(server, session, rotatable_key(keys)).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert mailgun_id
    assert keys.fetches == 2
    assert len(server.standin.accepted) == 1


@pytest.mark.parametrize("status", ["500", "502", "503"])
def test_server_errors_are_transient(server: Server, session: requests.Session, status: str) -> None:
    server.fail_next(status)
    with pytest.raises(MailgunTransient, match=status) as caught:
        client(server, session).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert caught.value.retry_after is None
    assert server.standin.accepted == []


def test_rate_limit_is_transient_with_retry_after(server: Server, session: requests.Session) -> None:
    server.fail_next("429")
    with pytest.raises(MailgunTransient) as caught:
        client(server, session).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert caught.value.retry_after == 1


@pytest.mark.parametrize("status", ["400", "413"])
def test_client_errors_are_permanent(server: Server, session: requests.Session, status: str) -> None:
    server.fail_next(status)
    with pytest.raises(MailgunRejected) as caught:
        client(server, session).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert caught.value.status == int(status)
    assert f"injected {status}" in caught.value.reason


def test_a_failure_does_not_stick(server: Server, session: requests.Session) -> None:
    server.fail_next("503")
    mailgun = client(server, session)
    with pytest.raises(MailgunTransient):
        mailgun.send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert mailgun.send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")


def test_connection_refused_is_transient(session: requests.Session) -> None:
    # Bound but not listening: a connection is refused, and no other test (or pytest worker) can take the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        mailgun = MailgunClient(session, f"http://127.0.0.1:{port}", DOMAIN, direct_key(), timeout=2)
        with pytest.raises(MailgunTransient, match="connect"):
            mailgun.send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")


def test_hanging_server_is_transient_after_the_timeout(server: Server, session: requests.Session) -> None:
    server.fail_next("hang")
    with pytest.raises(MailgunTransient, match="in time"):
        client(server, session, timeout=1).send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")


def test_wrong_domain_path_is_rejected(server: Server, session: requests.Session) -> None:
    mailgun = MailgunClient(session, server.base, "other.example", direct_key())
    with pytest.raises(MailgunRejected) as caught:
        mailgun.send_mime(["a@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert caught.value.status == 404
