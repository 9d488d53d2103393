"""``tagrelay mailgun ensure-webhooks`` / ``delete-webhooks`` against the in-process Mailgun stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tagrelay_tools import cli
from tagrelay_tools.mailgun_api import MailgunApi, MailgunApiError, TargetError, api_base
from tagrelay_tools.mailgun_setup import EU_API_BASE, US_API_BASE, InvalidRoute, WebhooksClient
from tagrelay_tools.standin import Standin
from tests.unit.inprocess_standin import API_KEY, DOMAIN, serving
from tests.unit.test_mailgun_routes import RecordingRedirect

URL = "https://tagrelay-events-abc123-ew.a.run.app"
OLD = "https://europe-west1-proj.cloudfunctions.net/tagrelay-events"
OURS = ("delivered", "permanent_fail", "temporary_fail", "complained")


class Recording(requests.Session):
    """A session that remembers the method and path of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.seen.append((str(method), str(url).split("/v3/", 1)[-1]))
        return super().request(method, url, *args, **kwargs)

    def writes(self) -> list[tuple[str, str]]:
        return [seen for seen in self.seen if seen[0] != "GET"]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    with serving(tmp_path / "outbox") as state:
        yield state


@pytest.fixture
def session() -> Iterator[Recording]:
    with Recording() as s:
        yield s


def client(standin: Standin, session: requests.Session, key: str = API_KEY) -> WebhooksClient:
    return WebhooksClient(MailgunApi(session, standin.url, key, timeout=10), DOMAIN)


def test_first_ensure_creates_the_four_event_webhooks_and_leaves_the_others(
    standin: Standin, session: Recording
) -> None:
    standin.mailbox.set_webhook("opened", ["https://analytics.example/open"])
    changes = client(standin, session).ensure(URL)
    assert [(c.webhook, c.outcome) for c in changes] == [(name, "created") for name in OURS]
    assert standin.mailbox.webhooks == {
        "opened": ["https://analytics.example/open"],
        **{name: [URL] for name in OURS},
    }
    assert session.writes() == [("POST", f"domains/{DOMAIN}/webhooks")] * 4


def test_second_ensure_writes_nothing(standin: Standin, session: Recording) -> None:
    hooks = client(standin, session)
    hooks.ensure(URL)
    session.seen.clear()
    assert [c.outcome for c in hooks.ensure(URL)] == ["unchanged"] * 4
    assert session.writes() == []
    assert session.seen == [("GET", f"domains/{DOMAIN}/webhooks")]


def test_a_moved_function_replaces_the_old_url_and_says_so(standin: Standin, session: Recording) -> None:
    standin.mailbox.set_webhook("delivered", [OLD])
    standin.mailbox.set_webhook("complained", [URL])
    standin.mailbox.set_webhook("clicked", [OLD])
    changes = {c.webhook: c for c in client(standin, session).ensure(URL)}
    assert changes["delivered"].outcome == "updated" and changes["delivered"].before == (OLD,)
    assert changes["complained"].outcome == "unchanged"
    assert changes["permanent_fail"].outcome == "created"
    assert standin.mailbox.webhooks["delivered"] == [URL]
    assert standin.mailbox.webhooks["clicked"] == [OLD]  # not one of ours: never touched
    assert ("PUT", f"domains/{DOMAIN}/webhooks/delivered") in session.writes()


def test_dry_run_reads_and_changes_nothing(standin: Standin, session: Recording) -> None:
    standin.mailbox.set_webhook("delivered", [OLD])
    changes = client(standin, session).ensure(URL, dry_run=True)
    assert [(c.webhook, c.outcome) for c in changes] == [
        ("delivered", "updated"),
        ("permanent_fail", "created"),
        ("temporary_fail", "created"),
        ("complained", "created"),
    ]
    assert session.writes() == []
    assert standin.mailbox.webhooks == {"delivered": [OLD]}


def test_remove_takes_only_our_url_off(standin: Standin, session: Recording) -> None:
    hooks = client(standin, session)
    hooks.ensure(URL)
    standin.mailbox.set_webhook("delivered", [URL, "https://someone.example/hook"])
    standin.mailbox.set_webhook("opened", [URL])  # not one of ours: left
    changes = {c.webhook: c.outcome for c in hooks.remove(URL)}
    assert changes == {"delivered": "updated", "permanent_fail": "deleted", "temporary_fail": "deleted",
                       "complained": "deleted"}  # fmt: skip
    assert standin.mailbox.webhooks == {"delivered": ["https://someone.example/hook"], "opened": [URL]}
    assert [c.outcome for c in hooks.remove(URL)] == ["absent"] * 4


def test_a_wrong_key_is_a_clear_error_and_changes_nothing(standin: Standin, session: Recording) -> None:
    with pytest.raises(MailgunApiError) as caught:
        client(standin, session, key="wrong-key").ensure(URL)
    assert caught.value.status == 401
    assert EU_API_BASE in caught.value.reason and "wrong-key" not in caught.value.reason
    assert standin.mailbox.webhooks == {}


@pytest.mark.parametrize("url", ["ftp://x.example/hook", "not a url", 'https://x.example/"hook'])
def test_a_bad_url_is_refused_before_any_request(standin: Standin, session: Recording, url: str) -> None:
    with pytest.raises(InvalidRoute):
        client(standin, session).ensure(url)
    assert session.seen == []


@pytest.mark.parametrize(("eu", "expected"), [(False, US_API_BASE), (True, EU_API_BASE)])
def test_us_and_eu_bases_are_addressed_as_chosen(standin: Standin, eu: bool, expected: str) -> None:
    base = api_base(None, {}, eu)
    assert base == expected
    adapter = RecordingRedirect(standin.url)
    with requests.Session() as s:
        s.mount("https://", adapter)
        hooks = WebhooksClient(MailgunApi(s, base, API_KEY), DOMAIN)
        hooks.ensure(URL)
        assert [c.outcome for c in hooks.ensure(URL)] == ["unchanged"] * 4
    assert adapter.seen and all(u.startswith(f"{expected}/v3/domains/{DOMAIN}/webhooks") for u in adapter.seen)
    assert all(timeout is not None for timeout in adapter.timeouts)


def test_a_base_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(TargetError, match="not a URL"):
        api_base("api.mailgun.net", {})


def test_command_creates_then_reports_unchanged(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    argv = ["mailgun", "ensure-webhooks", URL, "--domain", DOMAIN, "--api-base", standin.url]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"mailgun webhook {name} for {DOMAIN}: created" for name in OURS] + [
        f"mailgun webhook {name} for {DOMAIN}: unchanged" for name in OURS
    ]


def test_command_dry_run_and_delete(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    monkeypatch.setenv("MAILGUN_DOMAIN", DOMAIN)
    monkeypatch.setenv("MAILGUN_API_BASE", standin.url)
    standin.mailbox.set_webhook("delivered", [OLD])
    assert cli.main(["mailgun", "ensure-webhooks", URL, "--dry-run"]) == 0
    assert f"mailgun webhook delivered for {DOMAIN}: would be updated (was {OLD})" in capsys.readouterr().out
    assert standin.mailbox.webhooks == {"delivered": [OLD]}
    assert cli.main(["mailgun", "ensure-webhooks", URL]) == 0
    assert cli.main(["mailgun", "delete-webhooks", URL]) == 0
    assert f"mailgun webhook complained for {DOMAIN}: deleted (was {URL})" in capsys.readouterr().out
    assert standin.mailbox.webhooks == {}


def test_command_without_key_or_domain_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILGUN_API_KEY", raising=False)
    monkeypatch.delenv("MAILGUN_DOMAIN", raising=False)
    assert cli.main(["mailgun", "ensure-webhooks", URL, "--domain", DOMAIN]) == 2
    assert "MAILGUN_API_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    assert cli.main(["mailgun", "ensure-webhooks", URL]) == 2
    assert "no domain: pass --domain" in capsys.readouterr().err


def test_command_with_a_wrong_key_exits_1_without_printing_it(
    standin: Standin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", "sekrit-wrong-KEY")
    code = cli.main(["mailgun", "ensure-webhooks", URL, "--domain", DOMAIN, "--api-base", standin.url])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: Mailgun refused the API key (401)" in captured.err
    assert "sekrit-wrong-KEY" not in captured.out + captured.err
