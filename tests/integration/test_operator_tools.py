"""Issue 12's operator tools on the local stack: ``tagrelay trace`` reads what the real relay recorded,
and ``tagrelay suppressions`` lists and clears on the stack's Mailgun stand-in (a real process)."""

from __future__ import annotations

import pytest

from tagrelay_tools import cli
from tagrelay_tools.localstack import Stack
from tests.integration.conftest import message, post, wait_for_arrival
from tests.integration.waits import alias, forward_of, wait_for


@pytest.fixture
def on_stack(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{stack.children['firestore'].port}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", stack.project)
    monkeypatch.setenv("MAILGUN_API_KEY", stack.api_key)
    monkeypatch.setenv("MAILGUN_API_BASE", stack.standin_url)
    monkeypatch.setenv("MAILGUN_DOMAIN", stack.domain)
    return stack


def test_trace_follows_a_message_the_relay_sent(on_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    address, mid = alias("trace")
    assert post(on_stack, message(mid), address).status_code == 200
    arrival = wait_for_arrival(on_stack, mid)

    def traced() -> str | None:
        code = cli.main(["trace", f"<{mid}>"])
        out = capsys.readouterr().out
        return out if code == 0 and f"Mailgun id {arrival['id']}" in out else None

    out = wait_for("the sent record in trace", traced, seconds=15)
    assert f"  alias {address} → {forward_of(address)}" in out
    assert f"  Message-ID <{mid}>" in out
    assert "received and verified" in out
    [key] = [line.split()[1] for line in out.splitlines() if line.startswith("delivery ")]
    assert cli.main(["trace", key]) == 0  # the delivery key finds the same record
    assert f"Mailgun id {arrival['id']}" in capsys.readouterr().out


def test_suppressions_list_and_clear_on_the_stand_in(on_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    address, _ = alias("suppressed")
    target = forward_of(address)
    on_stack.standin.suppress(target, "bounces")
    on_stack.standin.suppress(target, "complaints")
    assert cli.main(["suppressions", "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if target in line]
    assert [line.split()[1] for line in listed] == ["bounce", "complaint"]
    assert cli.main(["suppressions", "clear", target]) == 0
    assert f"{target}: removed from bounces, complaints" in capsys.readouterr().out
    assert cli.main(["suppressions", "list"]) == 0
    assert target not in capsys.readouterr().out
