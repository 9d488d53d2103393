"""Class: unsigned traffic writing the log. Before the signature nothing the sender chose reaches a log line.

Each refusal before authentication is one INFO line with tagrelay's own reason
(escaped and cut) and no alias; a WARNING line counts them at most once a minute.
Read from the JSON lines tagrelay.core.log writes to stdout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tagrelay_tools import mailgun_posts
from tests.hostile.perimeter_support import MESSAGE, NOW, SIGNING_KEY, LogLines, RecordingPublisher, make_ingest

ATTACKER_ALIAS = "ceo-wire-money-now@example.org"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def log() -> Iterator[LogLines]:
    with LogLines() as lines:
        yield lines


def test_unsigned_posts_log_info_without_the_alias_and_one_warning_a_minute(
    log: LogLines,
) -> None:
    clock = Clock()
    service = make_ingest(RecordingPublisher(), clock=clock)
    unsigned = mailgun_posts.mime_post(MESSAGE, ATTACKER_ALIAS, "a@b.example", "not-the-key", int(NOW), "t" * 50)
    log.take()
    for _ in range(500):  # 500 posts in 50 seconds
        assert service.handle(unsigned.content_type, unsigned.body).status == 401
        clock.now += 0.1
    logged = log.take()
    assert not any(ATTACKER_ALIAS in json.dumps(line) for line in logged)
    info = [line for line in logged if line["severity"] == "INFO"]
    warnings = [line for line in logged if line["severity"] == "WARNING"]
    assert len(info) == 500
    assert {line["message"] for line in info} == {"refused before authentication: signature does not match"}
    assert [w["message"] for w in warnings] == [
        "1 unauthenticated post(s) refused (1 × 401); next summary in 60s at most"
    ]
    clock.now += 11  # a minute after the first summary (0.1 s steps do not add up exactly)
    service.handle("text/plain", b"x")
    warnings = [line for line in log.take() if line["severity"] == "WARNING"]
    assert [w["message"] for w in warnings] == [
        "500 unauthenticated post(s) refused (1 × 400, 499 × 401); next summary in 60s at most"
    ]


def test_an_attacker_chosen_reason_is_escaped_and_cut(log: LogLines) -> None:
    service = make_ingest(RecordingPublisher())
    log.take()
    content_type = "text/\x1b[31mred\u202e" + "x" * 500
    assert service.handle(content_type, b"hello").status == 400
    [info, _summary] = log.take()
    assert info["severity"] == "INFO"
    message = info["message"]
    assert "\x1b" not in message and "\u202e" not in message
    assert "\\x1b[31mred\\u202e" in message
    assert len(message) < 200


def test_refusals_of_signed_mail_still_warn_with_the_alias(log: LogLines) -> None:
    service = make_ingest(RecordingPublisher())
    signed = mailgun_posts.mime_post(MESSAGE, "nobody@elsewhere.example", "a@b.example", SIGNING_KEY, int(NOW))
    log.take()
    assert service.handle(signed.content_type, signed.body).status == 406
    [warning] = [line for line in log.take() if line["severity"] == "WARNING"]
    assert warning["alias"] == "nobody@elsewhere.example"
