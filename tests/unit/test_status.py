"""``tagrelay status``: the 24-hour counts (pure) and the suppression check against the in-process stand-in."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tagrelay_tools.ops import count_deliveries, show_counts, suppression_check
from tagrelay_tools.standin import Standin
from tests.unit.inprocess_standin import API_KEY, DOMAIN, serving

ROUTES = """
fallback = "owner@gmail.com"
[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]
[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""


def record(state: str, **extra: Any) -> dict[str, Any]:
    return {"state": state, "alias": "a@example.org", **extra}


def test_counts_by_state_with_suppressed_as_part_of_failed() -> None:
    records = [
        record("delivered"),
        record("delivered"),
        record("failed", reason="suppress-bounce"),
        record("failed", reason="bounce"),
        record("failed", recipients={"x@gmail.com": {"state": "failed", "reason": "suppress-complaint"}}),
        record("complained"),
        record(
            "complained",
            recipients={
                "x@gmail.com": {"state": "failed", "reason": "suppress-bounce"},
                "y@gmail.com": {"state": "complained"},
            },
        ),
        record("delivered", recipients={"z@gmail.com": {"state": "sent", "reason": "suppress-bounce"}}),
        record("sent"),
        record("sent", severity="temporary", reason="greylisted"),
        record("sent", recipients={"y@gmail.com": {"state": "sent", "severity": "temporary"}}),
        record("dead"),
        record("sending"),
        record("retry"),
        record("something-new"),
    ]
    assert count_deliveries(records) == {
        "delivered": 3,
        "failed": 3,
        "suppressed": 3,
        "complained": 2,
        "sent": 1,
        "temporary": 2,
        "dead": 1,
        "in flight": 2,
    }


def test_counts_are_printed_and_a_suppression_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    show_counts(count_deliveries([record("delivered"), record("failed", reason="suppress-unsubscribe")]))
    assert capsys.readouterr().out.splitlines() == [
        "  last 24 hours (2 deliveries):",
        "    delivered 1   failed 1 (suppressed 1)   complained 0",
        "    sent, no event yet 0   temporary failures 0   dead-lettered 0   in flight 0",
        "    ERROR: Mailgun dropped mail to suppressed addresses; see the suppression check below",
    ]
    show_counts(count_deliveries([]), capped=True)
    assert capsys.readouterr().out.splitlines()[0] == "  last 24 hours (at least 0 deliveries):"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    with serving(tmp_path / "outbox") as state:
        yield state


@pytest.fixture
def routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES)
    return path


def args(routes: Path | None, standin: Standin | None = None) -> argparse.Namespace:
    base = standin.url if standin else None
    return argparse.Namespace(routes=routes, local=False, domain=DOMAIN, api_base=base, eu=False)


def test_no_suppressed_target_exits_0(
    standin: Standin, routes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    standin.mailbox.suppress("bounces", "stranger@gmail.com")
    assert suppression_check(args(routes, standin)) == 0
    assert capsys.readouterr().out == (
        "  suppression check: none of the 4 route targets is on example.org's suppression lists\n"
    )


def test_a_suppressed_literal_and_templated_target_exit_1_with_the_fix(
    standin: Standin, routes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    standin.mailbox._suppress("bounces", "bob@gmail.com", code=550, error="5.1.1 gone")
    standin.mailbox.suppress("complaints", "owner+git$(x)hub@gmail.com")
    assert suppression_check(args(routes, standin)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  suppression check: 2 route target(s) suppressed by Mailgun (templated ones by shape):"
    assert lines[1].startswith("  ERROR: bob@gmail.com is on Mailgun's bounces list (bounce since ")
    assert lines[1].endswith(": 550 5.1.1 gone): every message to it is accepted by Mailgun and dropped")
    assert lines[2:5] == [
        "    route #1 (team@example.org) forward: bob@gmail.com",
        "    fix: tagrelay suppressions clear bob@gmail.com",
        "         tagrelay deadletters replay",
    ]
    assert lines[5].startswith("  ERROR: owner+git$(x)hub@gmail.com is on Mailgun's complaints list")
    assert lines[6:] == [
        "    route #2 ({tag}@example.org) forward: owner+{tag}@gmail.com",
        "    fix: tagrelay suppressions clear 'owner+git$(x)hub@gmail.com'",  # quoted for the shell
        "         tagrelay deadletters replay",
    ]


def test_without_a_key_the_check_is_skipped_loudly(
    routes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILGUN_API_KEY", raising=False)
    assert suppression_check(args(routes)) == 0
    assert "warning: suppression check skipped: MAILGUN_API_KEY is not set" in capsys.readouterr().err


def test_without_a_routes_file_the_check_is_skipped_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAGRELAY_ROUTES", raising=False)
    assert suppression_check(args(None)) == 0
    assert "suppression check skipped: no routes file" in capsys.readouterr().err


def test_a_mailgun_failure_fails_the_check(
    standin: Standin, routes: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", "wrong")
    assert suppression_check(args(routes, standin)) == 1
    assert "error: suppression check failed: Mailgun refused the API key (401)" in capsys.readouterr().err
