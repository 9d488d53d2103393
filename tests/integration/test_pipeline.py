"""End to end over real processes: Mailgun-style post → ingest → Pub/Sub emulator → relay → stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import parseaddr
from pathlib import Path

import requests

from tagrelay.core.headers import split_message
from tagrelay_tools.localstack import REPO, Stack, free_port
from tests.integration.conftest import (
    DATA,
    TAP,
    accepted,
    arrivals,
    message,
    post,
    pull,
    pull_until,
    set_faults,
    wait_for_arrival,
)

SETTLE_SECONDS = 2.0  # time given to a duplicate to show up before counting


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex}@test.example"


def tapped(stack: Stack, message_id: str) -> list[dict[str, object]]:
    return [m for m in pull(stack, TAP) if m["attributes"].get("message_id") == f"<{message_id}>"]


def test_signed_post_is_forwarded_once_with_rewritten_headers(stack: Stack) -> None:
    mid = unique("hello")
    raw = message(mid, subject="Grüße aus Köln")
    response = post(stack, raw, "github@example.org", sender="alice@bank.example")
    assert response.status_code == 200, response.text

    record = wait_for_arrival(stack, mid)
    assert record["to"] == ["owner+github@gmail.com"]
    forwarded = Path(record["path"]).read_bytes()
    assert split_message(forwarded)[1] == split_message(raw)[1]  # body bytes untouched
    parsed = message_from_bytes(forwarded, policy=compat32)
    shown = parseaddr(str(make_header(decode_header(parsed["From"]))))
    assert shown == ("Alice Example via example.org", "github@example.org")
    reply_name, reply_address = parseaddr(str(parsed["Reply-To"]))  # a reply address (issue 13)
    assert reply_name == "Alice Example" and reply_address.startswith("r--github.")
    assert parsed["X-Original-From"] == "Alice Example <alice@bank.example>"
    assert parsed["X-Original-To"] == "github@example.org"
    assert parsed["X-Tagrelay-Loop"] == "example.org"
    assert parsed["Message-ID"] == f"<{mid}>"
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1


def test_real_eml_from_corpus_comes_out_intact(stack: Stack) -> None:
    raw = (DATA / "eml" / "07-nested-related-inline-image.eml").read_bytes()
    mid = unique("corpus")
    raw = raw.replace(b"Message-ID: <", f"Message-ID: <{mid}>\r\nX-Old-Message-ID: <".encode(), 1)
    assert post(stack, raw, "Foo.Alice@Example.org").status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == ["alice+foo@gmail.com"]
    assert split_message(Path(record["path"]).read_bytes())[1] == split_message(raw)[1]


def test_parsed_form_is_rebuilt_and_forwarded(stack: Stack) -> None:
    mid = unique("parsed")
    raw = message(mid, subject="parsed form")
    assert post(stack, raw, "team@example.org", form="parsed").status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == ["alice@gmail.com", "bob@gmail.com"]
    forwarded = message_from_bytes(Path(record["path"]).read_bytes(), policy=compat32)
    assert forwarded["Subject"] == "parsed form"
    payload = forwarded.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert f"body of {mid}" in payload.decode()


def test_unsigned_or_wrongly_signed_post_publishes_nothing(stack: Stack) -> None:
    mid = unique("forged")
    raw = message(mid)
    assert post(stack, raw, "github@example.org", key="not-the-key").status_code == 401
    unsigned = requests.post(
        stack.ingest_target("/mime"),
        data={"recipient": "github@example.org", "sender": "x@y.example", "body-mime": raw.decode()},
        timeout=30,
    )
    assert unsigned.status_code == 401
    stale = post(stack, raw, "github@example.org", timestamp=int(time.time()) - 10 * 3600)
    assert stale.status_code == 401
    time.sleep(SETTLE_SECONDS)
    assert tapped(stack, mid) == []
    assert arrivals(stack, mid) == []


def test_unroutable_blocked_and_looping_mail_gets_406(stack: Stack) -> None:
    mid = unique("refused")
    assert post(stack, message(mid), "someone@elsewhere.example").status_code == 406
    assert post(stack, message(mid), "leaked+news@example.org").status_code == 406
    looped = message(mid, extra_headers="X-Tagrelay-Loop: example.org\r\n")
    assert post(stack, looped, "github@example.org").status_code == 406
    time.sleep(SETTLE_SECONDS)
    assert tapped(stack, mid) == []


def test_not_a_mailgun_form_gets_400(stack: Stack) -> None:
    for body, content_type in (
        (b'{"a": 1}', "application/json"),
        (b"", "text/plain"),
        (b"a=b", "application/x-www-form-urlencoded"),
    ):
        response = requests.post(
            stack.ingest_target("/"), data=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 400, (content_type, response.text)


def test_pubsub_down_gives_503_and_mailgun_retry_then_succeeds(stack: Stack) -> None:
    closed = free_port()
    down = stack.start_ingest(
        name="ingest-no-pubsub",
        extra={"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{closed}", "TAGRELAY_PUBLISH_TIMEOUT": "2"},
    )
    try:
        mid = unique("down")
        raw = message(mid)
        response = post(stack, raw, "github@example.org", url=down.url)
        assert response.status_code == 503, response.text
        # Mailgun retries the same post later; by then Pub/Sub is reachable again.
        assert post(stack, raw, "github@example.org").status_code == 200
        assert wait_for_arrival(stack, mid)["to"] == ["owner+github@gmail.com"]
    finally:
        down.stop()
        stack.children.pop("ingest-no-pubsub", None)


def test_transient_mailgun_failures_are_retried_until_sent_once(stack: Stack) -> None:
    set_faults(stack, {"queue": ["503", "500", "429"]})
    mid = unique("transient")
    assert post(stack, message(mid), "github@example.org").status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == ["owner+github@gmail.com"]
    time.sleep(SETTLE_SECONDS)
    assert len(arrivals(stack, mid)) == 1


def test_permanent_mailgun_refusal_is_dead_lettered_with_reason(stack: Stack) -> None:
    set_faults(stack, {"queue": ["400"]})
    mid = unique("permanent")
    assert post(stack, message(mid), "github@example.org").status_code == 200
    dead = pull_until(
        stack,
        f"{stack.deadletter_topic}-tap",
        lambda m: m["attributes"].get("message_id") == f"<{mid}>",
    )
    assert "Mailgun answered 400" in dead["attributes"]["deadletter_reason"]
    assert dead["attributes"]["recipient"] == "github@example.org"
    assert f"body of {mid}".encode() in dead["data"]
    assert arrivals(stack, mid) == []


def test_a_misconfigured_function_refuses_to_start_with_one_line_per_problem(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILGUN_", "TAGRELAY_", "GOOGLE_CLOUD"))}
    argv = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        "relay",
        "--signature-type",
        "cloudevent",
        "--source",
        str(REPO / "functions" / "relay" / "main.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
    ]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("tagrelay configuration:")]
    named = " ".join(lines)
    for variable in ("GOOGLE_CLOUD_PROJECT", "TAGRELAY_ROUTES", "MAILGUN_DOMAIN", "MAILGUN_API_KEY"):
        assert variable in named
    assert len(lines) == 4
    assert "Traceback" not in result.stderr


def test_stand_in_saw_only_well_formed_sends(stack: Stack) -> None:
    mid = unique("well-formed")
    assert post(stack, message(mid), "github@example.org").status_code == 200
    wait_for_arrival(stack, mid)
    for record in accepted(stack):  # this test's message and every earlier one
        assert record["to"], record
        assert Path(record["path"]).read_bytes().startswith(b"From: ")


def test_owner_is_notified_with_the_original_when_a_route_asks_for_it(stack: Stack) -> None:
    set_faults(stack, {"queue": ["400"]})
    mid = unique("notify")
    raw = message(mid, subject="will bounce")
    assert post(stack, raw, "notify-shop@example.org").status_code == 200
    deadline = time.monotonic() + 45
    notices: list[dict[str, object]] = []
    while not notices and time.monotonic() < deadline:
        notices = [
            r
            for r in accepted(stack)
            if r["to"] == ["owner@gmail.com"] and mid.encode() in Path(r["path"]).read_bytes()
        ]
        time.sleep(0.3)
    assert len(notices) == 1
    notice = message_from_bytes(Path(str(notices[0]["path"])).read_bytes(), policy=compat32)
    assert notice["Subject"] == "Undeliverable: will bounce"
    attached = [part for part in notice.walk() if part.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert arrivals(stack, mid) == []  # the original was not forwarded
