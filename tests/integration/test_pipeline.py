"""End to end over real processes: Mailgun-style post → ingest → Pub/Sub emulator → relay → stand-in."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from email import message_from_bytes
from email.header import decode_header, make_header
from email.policy import compat32
from email.utils import parseaddr
from pathlib import Path

import requests

from tagrelay_tools.localstack import REPO, Stack, free_port
from tests.integration.conftest import DATA, TAP, accepted, message, post
from tests.integration.waits import (
    alias,
    arrived,
    forward_of,
    log_lines,
    private_pipeline,
    pulled_until,
    wait_for,
    wait_for_arrival,
    wait_for_log,
    with_message_id,
)
from tests.unit.support import body_bytes


def relay_log(stack: Stack, name: str = "relay") -> Path:
    return Path(stack.workdir, "logs", f"{name}.log")


def test_signed_post_is_forwarded_once_with_rewritten_headers(stack: Stack) -> None:
    address, mid = alias("hello")
    raw = message(mid, subject="Grüße aus Köln")
    response = post(stack, raw, address, sender="alice@bank.example")
    assert (response.status_code, response.text) == (200, "queued\n")

    record = wait_for_arrival(stack, mid)
    assert record["to"] == [forward_of(address)]
    forwarded = Path(record["path"]).read_bytes()
    assert body_bytes(forwarded) == body_bytes(raw)  # body bytes untouched (the tests' own splitter)
    parsed = message_from_bytes(forwarded, policy=compat32)
    shown = parseaddr(str(make_header(decode_header(parsed["From"]))))
    assert shown == ("Alice Example via example.org", address)
    reply_name, reply_address = parseaddr(str(parsed["Reply-To"]))  # a reply address (issue 13)
    assert reply_name == "Alice Example" and reply_address.startswith("r--")
    assert parsed["X-Original-From"] == "Alice Example <alice@bank.example>"
    assert parsed["X-Original-To"] == address
    assert parsed["X-Tagrelay-Loop"] == "example.org"
    assert parsed["Message-ID"] == f"<{mid}>"
    [sent] = wait_for_log(relay_log(stack), message_id=f"<{mid}>", outcome="sent")
    assert sent["targets"] == [forward_of(address)]
    assert len(arrived(stack, mid)) == 1


def test_real_eml_from_corpus_comes_out_intact(stack: Stack) -> None:
    raw = (DATA / "eml" / "07-nested-related-inline-image.eml").read_bytes()
    address, mid = alias("corpus", local="")
    tag = address.partition("@")[0]
    raw = raw.replace(b"Message-ID: <", f"Message-ID: <{mid}>\r\nX-Old-Message-ID: <".encode(), 1)
    assert post(stack, raw, f"{tag}.Alice@Example.org").status_code == 200  # the {tag}.alice route
    record = wait_for_arrival(stack, mid)
    assert record["to"] == [f"alice+{tag}@gmail.com"]
    assert body_bytes(Path(record["path"]).read_bytes()) == body_bytes(raw)


def test_parsed_form_is_rebuilt_and_forwarded(stack: Stack) -> None:
    _, mid = alias("parsed")
    raw = message(mid, subject="parsed form")
    assert post(stack, raw, "team@example.org", form="parsed").status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == ["alice@gmail.com", "bob@gmail.com"]
    forwarded = message_from_bytes(Path(record["path"]).read_bytes(), policy=compat32)
    assert forwarded["Subject"] == "parsed form"
    payload = forwarded.get_payload(decode=True)
    assert isinstance(payload, bytes)
    assert payload.decode().replace("\r\n", "\n") == f"body of {mid}\n"


def test_unsigned_or_wrongly_signed_post_publishes_nothing(stack: Stack) -> None:
    address, mid = alias("forged")
    raw = message(mid)
    assert post(stack, raw, address, key="not-the-key").status_code == 401
    unsigned = requests.post(
        stack.ingest_target("/mime"),
        data={"recipient": address, "sender": "x@y.example", "body-mime": raw.decode()},
        timeout=30,
    )
    assert unsigned.status_code == 401
    stale = post(stack, raw, address, timestamp=int(time.time()) - 10 * 3600)
    assert stale.status_code == 401
    # A signed post after them is the barrier: once it is in the topic, anything published before is too.
    _, barrier = alias("forged-barrier")
    assert post(stack, message(barrier), address).status_code == 200
    seen = pulled_until(stack, TAP, with_message_id(barrier))
    assert [m for m in seen if with_message_id(mid)(m)] == []
    wait_for_arrival(stack, barrier)
    assert arrived(stack, mid) == []


def test_unroutable_blocked_and_looping_mail_gets_406(stack: Stack) -> None:
    address, mid = alias("refused")
    for recipient, raw, reason in (
        ("someone@elsewhere.example", message(mid), "no route matches"),
        ("leaked+news@example.org", message(mid), "blocked alias"),
        (
            address,
            message(mid, extra_headers="X-Tagrelay-Loop: example.org\r\n"),
            "mail loop: already forwarded for example.org",
        ),
    ):
        response = post(stack, raw, recipient)
        assert (response.status_code, response.text) == (406, reason + "\n"), recipient
    _, barrier = alias("refused-barrier")
    assert post(stack, message(barrier), address).status_code == 200
    seen = pulled_until(stack, TAP, with_message_id(barrier))
    assert [m for m in seen if with_message_id(mid)(m)] == []


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
        address, mid = alias("down")
        raw = message(mid)
        response = post(stack, raw, address, url=down.url)
        assert (response.status_code, response.text) == (503, "temporarily unavailable, retry later\n")
        # Mailgun retries the same post later; by then Pub/Sub is reachable again.
        assert post(stack, raw, address).status_code == 200
        assert wait_for_arrival(stack, mid)["to"] == [forward_of(address)]
    finally:
        down.stop()
        stack.children.pop("ingest-no-pubsub", None)


def test_transient_mailgun_failures_are_retried_until_sent_once(stack: Stack) -> None:
    with private_pipeline(stack, "transient", ["503", "500", "429"]) as own:
        address, mid = alias("transient")
        assert post(stack, message(mid), address, url=own.ingest.url).status_code == 200
        [record] = wait_for("the message at the stand-in", lambda: own.arrivals(mid))
        assert record["to"] == [forward_of(address)]
        assert own.calls() == 4  # three forced failures, then the send
        retries = log_lines(relay_log(stack, own.relay.name), message_id=f"<{mid}>", outcome="retry")
        assert len(retries) == 3
        assert len(own.accepted()) == 1


def test_permanent_mailgun_refusal_is_dead_lettered_with_reason(stack: Stack) -> None:
    with private_pipeline(stack, "permanent", ["400"]) as own:
        address, mid = alias("permanent")
        assert post(stack, message(mid), address, url=own.ingest.url).status_code == 200
        seen = pulled_until(stack, own.deadletter_tap, with_message_id(mid))
        [dead] = [m for m in seen if with_message_id(mid)(m)]
        assert dead["attributes"]["deadletter_reason"] == "Mailgun answered 400: injected 400"
        assert dead["attributes"]["recipient"] == address
        assert dead["data"] == message(mid)  # the original, as received
        assert (own.calls(), own.accepted()) == (1, [])


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
    address, mid = alias("well-formed")
    assert post(stack, message(mid), address).status_code == 200
    wait_for_arrival(stack, mid)
    for record in accepted(stack):  # this test's message and every earlier one
        assert record["to"], record
        assert Path(record["path"]).read_bytes().startswith(b"From: ")


def test_owner_is_notified_with_the_original_when_a_route_asks_for_it(stack: Stack) -> None:
    with private_pipeline(stack, "notify", ["400"]) as own:
        address, mid = alias("shop", local="notify-")  # the notify-{tag} route: notify = "owner@gmail.com"
        raw = message(mid, subject="will bounce")
        assert post(stack, raw, address, url=own.ingest.url).status_code == 200
        [notice_record] = wait_for("the owner's notice", own.accepted)
        assert notice_record["to"] == ["owner@gmail.com"]
        notice = message_from_bytes(Path(str(notice_record["path"])).read_bytes(), policy=compat32)
        assert notice["Subject"] == "Undeliverable: will bounce"
        attached = [part for part in notice.walk() if part.get_content_type() == "message/rfc822"]
        assert len(attached) == 1
        assert mid.encode() in Path(str(notice_record["path"])).read_bytes()
        assert own.arrivals(mid) == []  # the original was not forwarded
        assert own.calls() == 2  # the refused send, then the notice
