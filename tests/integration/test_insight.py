"""Per-alias insight end to end on the local stack (issue 14): counts and sender domains recorded by the
relay after real sends, a leak flagged (and one notice in the stand-in's outbox) on the first message
from a new organisation and not for a new subdomain of a known one, and ``tagrelay aliases --json``."""

from __future__ import annotations

import email
import email.policy
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tagrelay.adapters.insight import FirestoreInsight
from tagrelay.core.insight import Write
from tagrelay_tools import cli
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import accepted, message, post
from tests.integration.waits import alias, forward_of, wait_for, wait_for_arrival

DAY = 86400.0


def mail(message_id: str, sender: str, subject: str) -> bytes:
    # Mailgun prepends its SPF verdict: the relay trusts only the run at the top of the block.
    raw = message(message_id, subject).replace(b"From: Alice Example <alice@bank.example>", f"From: {sender}".encode())
    return b"X-Mailgun-Spf: Pass\r\n" + raw


@pytest.fixture
def store(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> FirestoreInsight:
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{stack.children['firestore'].port}")
    return FirestoreInsight(lambda: firestore.Client(project=stack.project))


def send(stack: Stack, address: str, message_id: str, sender: str, subject: str) -> None:
    answer = post(stack, mail(message_id, sender, subject), address, sender=sender.split("<")[-1].strip(">"))
    assert answer.status_code == 200, answer.text
    wait_for_arrival(stack, message_id)


def notices(stack: Stack, address: str) -> list[bytes]:
    found = [Path(r["path"]).read_bytes() for r in accepted(stack) if r["to"] == [forward_of(address)]]
    return [raw for raw in found if b"Possible leak" in raw]


def test_counts_domains_and_a_leak_flagged_once_but_not_for_a_subdomain(
    stack: Stack, store: FirestoreInsight, capsys: pytest.CaptureFixture[str]
) -> None:
    address, mid = alias("insight")
    for n in range(2):
        send(stack, address, f"{n}.{mid}", "GitHub <noreply@github.com>", f"build {n}")

    def recorded() -> dict[str, Any] | None:
        found = store.lookup(address)
        return found if found and found.get("messages") == 2 else None

    record = wait_for("two messages counted", recorded, 20)
    assert record["alias"] == address and record["spam"] == 0
    assert list(record["domains"]) == ["github.com"] and record["domains"]["github.com"]["count"] == 2
    # The alias has known github.com for three days (the relay's clock cannot be moved: backdate it).
    store.update(address, Write(sets={("domains", "github.com", "first_seen"): time.time() - 3 * DAY}))

    send(stack, address, f"sub.{mid}", "GitHub <noreply@mail.github.com>", "a new subdomain")
    send(stack, address, f"leak.{mid}", "Deals <offers@marketer.example>", "50% off, just for you")
    send(stack, address, f"again.{mid}", "Deals <more@marketer.example>", "still 50% off")

    def flagged() -> dict[str, Any] | None:
        found = store.lookup(address)
        return found if found and found.get("messages") == 5 and found.get("leaks") else None

    record = wait_for("the leak recorded", flagged, 20)
    assert list(record["leaks"]) == ["marketer.example"]  # not github.com's subdomain
    assert record["leaks"]["marketer.example"]["subject"] == "50% off, just for you"
    assert record["leaks"]["marketer.example"]["known"] == ["github.com"]
    assert record["domains"]["marketer.example"]["count"] == 2
    sent = wait_for("the leak notice", lambda: notices(stack, address), 10)
    assert len(sent) == 1 and b"marketer.example" in sent[0]

    # A refusal for the alias (a loop marker: 406 at ingest), posted with the recipient's case as a sender wrote it.
    looped = mail(f"loop.{mid}", "Deals <offers@marketer.example>", "looped").replace(
        b"MIME-Version", b"X-Tagrelay-Loop: example.org\r\nMIME-Version"
    )
    assert post(stack, looped, address.upper(), sender="offers@marketer.example").status_code == 406

    assert cli.main(["aliases", "--json", "--project", stack.project]) == 0
    rows = {row["alias"]: row for row in json.loads(capsys.readouterr().out)["aliases"]}
    row = rows[address]
    assert (row["messages"], row["last_30_days"], row["senders"], row["state"]) == (5, 5, 2, "active")
    assert (row["leak"], row["leaks"], row["spam_share"], row["refusals"]) == (True, ["marketer.example"], 0.0, 1)

    assert cli.main(["senders", address, "--json", "--project", stack.project]) == 0
    listed = json.loads(capsys.readouterr().out)["senders"]
    assert [(s["domain"], s["count"]) for s in listed] == [("github.com", 3), ("marketer.example", 2)]


def test_a_leak_notice_carries_a_block_link_that_blocks_the_alias_once(
    stack: Stack, store: FirestoreInsight, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route with ``block_link = true``: the relay's leak notice links to ingest's /block (TAGRELAY_PUBLIC_URL),
    the link's POST blocks the alias (the next post is refused 406), a second POST changes nothing,
    and ``tagrelay aliases --links`` shows a link for the alias too."""
    address, mid = alias("leak-link", "link-")
    for n in range(2):
        send(stack, address, f"{n}.{mid}", "GitHub <noreply@github.com>", f"build {n}")
    wait_for("two messages counted", lambda: (store.lookup(address) or {}).get("messages") == 2, 20)
    store.update(address, Write(sets={("domains", "github.com", "first_seen"): time.time() - 3 * DAY}))
    send(stack, address, f"leak.{mid}", "Deals <offers@marketer.example>", "50% off")

    [raw] = wait_for("the leak notice", lambda: notices(stack, address), 20)
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
    [link] = re.findall(r"http://127\.0\.0\.1:\d+/block\?\S+", text)
    assert link.startswith(stack.ingest_url + "/block?")
    fields = {name: values[0] for name, values in parse_qs(urlsplit(link).query).items()}
    assert fields["a"] == address

    page = requests.get(link, timeout=10)  # what a link scanner or a preview does: nothing changes
    assert page.status_code == 200 and "<form" in page.text
    assert post(stack, mail(f"still.{mid}", "GitHub <noreply@github.com>", "still open"), address).status_code == 200
    clicked = requests.post(stack.ingest_url + "/block", data=fields, timeout=10)
    assert clicked.status_code == 200 and "blocked" in clicked.text
    again = requests.post(stack.ingest_url + "/block", data=fields, timeout=10)
    assert again.status_code == 200 and "already blocked" in again.text

    def refused() -> bool:
        answer = post(stack, mail(f"after.{uuid.uuid4().hex}.{mid}", "GitHub <noreply@github.com>", "x"), address)
        return answer.status_code == 406

    wait_for("the alias refused", refused, 10)

    monkeypatch.setenv("TAGRELAY_PUBLIC_URL", stack.ingest_url)
    monkeypatch.setenv("TAGRELAY_REPLY_KEY", stack.reply_key)
    argv = ["aliases", "--json", "--links", "--routes", str(stack.routes), "--project", stack.project]
    assert cli.main(argv) == 0
    rows = {row["alias"]: row for row in json.loads(capsys.readouterr().out)["aliases"]}
    assert rows[address]["state"] == "blocked"
    assert rows[address]["block_link"].startswith(stack.ingest_url + "/block?a=")
