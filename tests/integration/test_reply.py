"""Reply as the alias, end to end on the local stack (issue 13).

A message to github@example.org arrives with a reverse Reply-To; the owner's Gmail
reply, posted as Mailgun posts it (Mailgun's verdicts on top), reaches the original
sender from github@example.org in the same thread with nothing of the owner's; forged
replies reach the owner, marked, and never the correspondent.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tagrelay.adapters.contacts import FirestoreContacts, MemoryContacts
from tagrelay.core import reverse
from tagrelay.core.headers import body_offset
from tagrelay.core.ports import Contact
from tagrelay_tools import cli
from tagrelay_tools.contacts import gmail_reply
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import message, post, wait_for_arrival
from tests.unit.test_reply import GONE

pytestmark = pytest.mark.integration
ALICE = "alice@bank.example"
OWNER = "owner@gmail.com"  # tests/data/routes.toml: {tag}@example.org → owner+{tag}@gmail.com
OWNER_HEADERS = GONE  # the identifying headers the reply rewrite drops (tests/unit/test_reply.py)


def parsed(record: dict[str, Any]) -> tuple[bytes, EmailMessage]:
    raw = Path(record["path"]).read_bytes()
    parsed_message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed_message, EmailMessage)
    return raw, parsed_message


def forward(stack: Stack, alias: str, sender: str = ALICE) -> tuple[str, str]:
    """Post a message from ``sender`` to ``alias``; return its Message-ID and the copy's reverse Reply-To."""
    mid = f"{uuid.uuid4().hex}@bank.example"
    raw = message(mid, subject="Your order").replace(b"alice@bank.example", sender.encode())
    assert post(stack, raw, alias, sender=sender).status_code == 200
    _, copy = parsed(wait_for_arrival(stack, mid))
    name, reply_to = email.utils.parseaddr(str(copy["Reply-To"]))
    assert name == "Alice Example"
    return f"<{mid}>", reply_to


def owner_reply(reverse_address: str, in_reply_to: str, owner: str = OWNER, **kwargs: str) -> tuple[str, bytes]:
    mid = f"<CAJ{uuid.uuid4().hex}@mail.gmail.com>"
    raw = gmail_reply(
        reverse_address=reverse_address,
        owner=owner,
        correspondent_name="Alice Example",
        subject="Your order",
        in_reply_to=in_reply_to,
        references=in_reply_to,
        message_id=mid,
        **kwargs,
    )
    return mid.strip("<>"), raw


def test_the_owners_reply_reaches_the_correspondent_as_the_alias(stack: Stack) -> None:
    original_id, reply_to = forward(stack, "github@example.org")
    assert reply_to.startswith("r--github.") and reply_to.endswith("@example.org")

    mid, raw = owner_reply(reply_to, original_id)
    assert post(stack, raw, reply_to, sender=OWNER).status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == [ALICE]
    sent, reply = parsed(record)
    assert email.utils.getaddresses(reply.get_all("From", [])) == [("", "github@example.org")]
    assert email.utils.getaddresses(reply.get_all("To", [])) == [("", ALICE)]
    assert reply["In-Reply-To"] == original_id
    assert reply["References"] == original_id
    assert reply["Subject"] == "Re: Your order"
    for name in OWNER_HEADERS:
        assert reply.get_all(name) is None, name
    block = sent[: body_offset(sent)].lower()
    assert b"owner" not in block and b"198.51.100.23" not in block and b"r--" not in block
    assert sent[body_offset(sent) :] == raw[body_offset(raw) :]


def test_the_owners_reply_in_mailguns_parsed_form_is_relayed_too(stack: Stack) -> None:
    original_id, reply_to = forward(stack, "github@example.org")
    mid, raw = owner_reply(reply_to, original_id)
    assert post(stack, raw, reply_to, sender=OWNER, form="parsed").status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == [ALICE]
    _, reply = parsed(record)
    assert reply["In-Reply-To"] == original_id
    assert reply.get_all("X-Mailgun-Spf") is None and reply.get_all("Received") is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong sender", "envelope sender is not the alias's owner"),
        ("failed SPF", "SPF verdict is fail"),
        ("failed DKIM", "DKIM verdict is fail"),
        ("altered reverse address", "not valid"),
        ("another alias's reverse address", "envelope sender is not the alias's owner"),
    ],
)
def test_a_forged_reply_reaches_the_owner_marked_never_the_correspondent(
    stack: Stack, case: str, reason: str
) -> None:
    original_id, reply_to = forward(stack, "github@example.org")
    owner, sender, kwargs, owner_copy = OWNER, OWNER, {}, "owner+github@gmail.com"
    if case == "wrong sender":
        owner = sender = "mallory@evil.example"
    elif case == "failed SPF":
        kwargs = {"spf": "Fail"}
    elif case == "failed DKIM":
        kwargs = {"dkim": "Fail"}
    elif case == "altered reverse address":
        local, _, domain = reply_to.rpartition("@")
        reply_to = f"{local[:-1]}{'b' if local[-1] == 'a' else 'a'}@{domain}"
    else:  # github's owner writes to a reverse address of Alice's own alias (another owner)
        original_id, reply_to = forward(stack, "news.alice@example.org", sender="carol@bank.example")
        owner_copy = "alice+news@gmail.com"
    mid, raw = owner_reply(reply_to, original_id, owner=owner, **kwargs)
    assert post(stack, raw, reply_to, sender=sender).status_code == 200
    record = wait_for_arrival(stack, mid)
    assert record["to"] == [owner_copy]
    _, copy = parsed(record)
    assert str(copy["Subject"]).startswith("[to your reply address] ")
    assert reason in str(copy["X-Tagrelay-Reply-Address"])


def test_a_reverse_address_naming_no_alias_and_failing_its_mac_is_refused(stack: Stack) -> None:
    made_up = "r--" + "a" * 32 + "@example.org"
    _, raw = owner_reply(made_up, "<x@bank.example>")
    response = post(stack, raw, made_up, sender=OWNER)
    assert (response.status_code, response.text.strip()) == (
        406,
        "reply address: the reply address is not valid (altered or made up)",
    )


# -- the contact store: one contract for Firestore (emulator) and its in-memory twin -------------


@pytest.fixture(params=["memory", "firestore"])
def contacts(request: pytest.FixtureRequest, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Any:
    clock = iter(range(1000, 2000)).__next__
    if request.param == "memory":
        return MemoryContacts(clock=lambda: float(clock()))
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{stack.children['firestore'].port}")
    return FirestoreContacts(lambda: firestore.Client(project=stack.project), clock=lambda: float(clock()))


def test_contact_records_behave_the_same_in_firestore_and_in_memory(contacts: Any) -> None:
    alias, correspondent = f"c{uuid.uuid4().hex[:8]}@example.org", "dora@corp.example"
    key = reverse.contact_id(alias, correspondent)
    assert contacts.lookup(key) is None
    contacts.remember(key, alias, correspondent)
    contacts.count(key, "received")
    contacts.remember(key, alias, "someone-else@corp.example")  # never overwrites
    contacts.count(key, "received")
    contacts.count(key, "replied")
    contacts.count("no-such-contact", "replied")  # nothing to count on, no error
    found = contacts.lookup(key)
    assert found == Contact(key, alias, correspondent, False, 2, 1, 1000.0, found.last_seen)
    assert found.last_seen > found.first_seen
    contacts.block(key)
    assert contacts.lookup(key).blocked
    assert [c.key for c in contacts.list_alias(alias.upper(), 10)] == [key]


# -- the newcomer's commands on a running stack ------------------------------------------------


@pytest.fixture
def local_state(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory where `tagrelay` finds this stack, as after `tagrelay run`."""
    (tmp_path / ".tagrelay").mkdir()
    (tmp_path / ".tagrelay" / "local.json").write_text((stack.workdir / "local.json").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAGRELAY_REPLY_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "")  # restored after the test: `contact` sets it
    return tmp_path


def test_tagrelay_reply_answers_the_last_copy_as_its_owner(
    stack: Stack, local_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forward(stack, "github@example.org")
    assert cli.main(["reply", "--text", "Sounds good."]) == 0
    out = capsys.readouterr().out
    assert "ingest answered 200" in out
    assert f"sent to {ALICE}:" in out


def test_tagrelay_contact_prints_an_address_that_reaches_a_new_correspondent(
    stack: Stack, local_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["contact", "GitHub@example.org", "Dave@Corp.Example"]) == 0
    address = capsys.readouterr().out.strip()
    assert address == reverse.make("github@example.org", "dave@corp.example", stack.reply_key)
    mid, raw = owner_reply(address, "")
    assert post(stack, raw, address, sender=OWNER).status_code == 200
    assert wait_for_arrival(stack, mid)["to"] == ["dave@corp.example"]
    capsys.readouterr()
    deadline = time.monotonic() + 10  # the count is written just after the send
    while time.monotonic() < deadline:
        assert cli.main(["contacts", "github@example.org"]) == 0
        listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dave@corp.example")]
        if listed and "out    1" in listed[0]:
            break
        time.sleep(0.3)
    assert listed and "in    0  out    1" in listed[0], listed

    assert cli.main(["contact", "github@example.org", "dave@corp.example", "--block"]) == 0
    _, again = owner_reply(address, "")
    response = post(stack, again, address, sender=OWNER)
    assert (response.status_code, response.text.strip()) == (406, "reply address: the contact is blocked")
