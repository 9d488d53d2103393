"""``tagrelay suppressions list|clear`` against the in-process Mailgun stand-in, and the target matching."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tagrelay.core.routes import load
from tagrelay_tools import cli, mailgun_api
from tagrelay_tools.mailgun_api import MailgunApi, MailgunApiError
from tagrelay_tools.standin import Standin
from tagrelay_tools.suppressions import Suppression, SuppressionsClient, Watched, suppressed_targets, watched_targets
from tests.unit.inprocess_standin import API_KEY, DOMAIN, serving


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[Standin]:
    with serving(tmp_path / "outbox") as state:
        yield state


@pytest.fixture
def env(standin: Standin, monkeypatch: pytest.MonkeyPatch) -> Standin:
    monkeypatch.setenv("MAILGUN_API_KEY", API_KEY)
    monkeypatch.setenv("MAILGUN_DOMAIN", DOMAIN)
    monkeypatch.setenv("MAILGUN_API_BASE", standin.url)
    return standin


def test_list_shows_all_three_lists(env: Standin, capsys: pytest.CaptureFixture[str]) -> None:
    env.mailbox._suppress("bounces", "owner@gmail.com", code=550, error="5.1.1 no such user")
    env.mailbox.suppress("complaints", "bob@gmail.com")
    env.mailbox.suppress("unsubscribes", "carol@gmail.com")
    assert cli.main(["suppressions", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"3 suppressed address(es) for {DOMAIN}; mail to them is accepted by Mailgun and dropped:"
    assert lines[1].split()[:6] == ["owner@gmail.com", "bounce", "since", *lines[1].split()[3:6]]
    assert lines[1].endswith(": 550 5.1.1 no such user")
    assert lines[2].split()[:2] == ["bob@gmail.com", "complaint"]
    assert lines[3].split()[:2] == ["carol@gmail.com", "unsubscribe"]
    assert lines[4] == "clear one with: tagrelay suppressions clear ADDRESS"


def test_list_json(env: Standin, capsys: pytest.CaptureFixture[str]) -> None:
    env.mailbox._suppress("bounces", "owner@gmail.com", code=550, error="gone")
    assert cli.main(["suppressions", "list", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"bounces", "complaints", "unsubscribes"}
    [bounce] = document["bounces"]
    assert (bounce["address"], bounce["code"], bounce["error"], bounce["list"]) == (
        "owner@gmail.com",
        "550",
        "gone",
        "bounces",
    )
    assert document["complaints"] == document["unsubscribes"] == []


def test_an_empty_domain_says_so(env: Standin, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["suppressions", "list"]) == 0
    assert capsys.readouterr().out == f"no suppressed addresses for {DOMAIN}\n"


def test_clear_removes_from_every_list_and_prints_the_replay(env: Standin, capsys: pytest.CaptureFixture[str]) -> None:
    env.mailbox.suppress("bounces", "owner@gmail.com")
    env.mailbox.suppress("complaints", "owner@gmail.com")
    env.mailbox.suppress("bounces", "other@gmail.com")
    assert cli.main(["suppressions", "clear", "Owner@Gmail.com"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Owner@Gmail.com: removed from bounces, complaints; Mailgun delivers to it again",
        "next: send again what was dead-lettered while it was suppressed (see them: tagrelay deadletters list):",
        "  tagrelay deadletters replay",
        "  (add --recipient ALIAS to replay one alias only)",
    ]
    assert list(env.mailbox.suppressions["bounces"]) == ["other@gmail.com"]
    assert env.mailbox.suppressions["complaints"] == {}
    assert cli.main(["suppressions", "clear", "owner@gmail.com"]) == 0
    assert "is on none of example.org's suppression lists" in capsys.readouterr().out


def test_an_address_cannot_reach_another_path(env: Standin) -> None:
    env.mailbox.suppress("bounces", "owner@gmail.com")
    seen: list[str] = []

    class Recording(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
            seen.append(str(url))
            return super().request(method, url, *args, **kwargs)

    with Recording() as session:
        client = SuppressionsClient(MailgunApi(session, env.url, API_KEY), DOMAIN)
        assert client.clear("../bounces/owner@gmail.com?x#y") == []
    assert all("/../" not in url and "?" not in url and "#" not in url for url in seen)
    assert list(env.mailbox.suppressions["bounces"]) == ["owner@gmail.com"]


def test_sender_text_in_an_entry_is_escaped(env: Standin, capsys: pytest.CaptureFixture[str]) -> None:
    env.mailbox._suppress("bounces", "x\x1b[2j\u202e@evil.example", code=550, error="bad\r\nline")
    assert cli.main(["suppressions", "list"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
    assert "x\\x1b[2j\\u202e@evil.example" in out and "bad\\r\\nline" in out


def test_local_uses_the_running_stack(
    standin: Standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILGUN_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    state = {"standin_url": standin.url, "api_key": API_KEY, "domain": DOMAIN}
    (tmp_path / ".tagrelay").mkdir()
    (tmp_path / ".tagrelay" / "local.json").write_text(json.dumps(state))
    standin.mailbox.suppress("bounces", "owner@gmail.com")
    assert cli.main(["suppressions", "clear", "owner@gmail.com", "--local"]) == 0
    assert "  tagrelay deadletters replay --local" in capsys.readouterr().out.splitlines()
    assert standin.mailbox.suppressions["bounces"] == {}


def test_local_without_a_stack_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["suppressions", "list", "--local"]) == 2
    assert "no running local stack" in capsys.readouterr().err


def test_without_a_key_the_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILGUN_API_KEY", raising=False)
    assert cli.main(["suppressions", "list", "--domain", DOMAIN]) == 2
    assert "MAILGUN_API_KEY is not set" in capsys.readouterr().err


def test_a_wrong_key_exits_1(env: Standin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", "sekrit-wrong")
    assert cli.main(["suppressions", "clear", "a@b.example"]) == 1
    err = capsys.readouterr().err
    assert "refused the API key (401)" in err and "sekrit-wrong" not in err


# -- paging (a list server that pages as Mailgun documents it) ------------------------


class Pager:
    def __init__(self, pages: int, size: int = 2, next_host: str = "", endless: bool = False) -> None:
        self.pages, self.size, self.next_host, self.endless = pages, size, next_host, endless
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        pager = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                pager.requests.append(self.path)
                parts = urlsplit(self.path)
                page = int(parse_qs(parts.query).get("p", ["0"])[0])
                items = [] if page >= pager.pages else [
                    {"address": f"u{page}-{n}@gmail.com", "created_at": "Mon, 1 Dec 2026 10:00:00 UTC"}
                    for n in range(pager.size)
                ]  # fmt: skip
                host = pager.next_host or pager.url
                following = page if pager.endless else page + 1
                body = {"items": items, "paging": {"next": f"{host}{parts.path}?p={following}&limit=2"}}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> Pager:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def test_list_follows_next_to_the_empty_page() -> None:
    with Pager(pages=3) as pager, requests.Session() as session:
        entries = SuppressionsClient(MailgunApi(session, pager.url, API_KEY), DOMAIN).entries("bounces")
    assert [e.address for e in entries] == [f"u{p}-{n}@gmail.com" for p in range(3) for n in range(2)]
    assert len(pager.requests) == 4  # three pages and the empty one that ends the list
    assert pager.requests[0] == f"/v3/{DOMAIN}/bounces?limit=1000"


def test_a_next_page_elsewhere_is_not_followed() -> None:
    with (
        Pager(pages=3, next_host="http://127.0.0.2:9") as pager,
        requests.Session() as session,
        pytest.raises(MailgunApiError, match="pointed its next page elsewhere"),
    ):
        SuppressionsClient(MailgunApi(session, pager.url, API_KEY), DOMAIN).entries("bounces")
    assert len(pager.requests) == 1


def test_a_list_that_repeats_its_page_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    with Pager(pages=99, endless=True) as pager, requests.Session() as session:
        entries = SuppressionsClient(MailgunApi(session, pager.url, API_KEY), DOMAIN).entries("bounces")
    assert len(entries) == 4 and len(pager.requests) == 2  # the first page, then page 0 again: stop


def test_a_list_that_never_ends_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailgun_api, "MAX_PAGES", 5)
    with (
        Pager(pages=10**6) as pager,
        requests.Session() as session,
        pytest.raises(MailgunApiError, match="did not end after 5 pages"),
    ):
        SuppressionsClient(MailgunApi(session, pager.url, API_KEY), DOMAIN).entries("bounces")
    assert len(pager.requests) == 5


# -- which suppressed addresses are forward targets (pure) -----------------------------

ROUTES = """
fallback = "owner@gmail.com"
[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]
[[route]]
match = "{tag}.alice@example.org"
forward = "alice+{tag}@gmail.com"
fallback = "alice@gmail.com"
notify = "alerts@alice.example"
[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""


def entry(address: str, name: str = "bounces") -> Suppression:
    return Suppression(name, address)


def test_watched_targets_are_every_forward_fallback_and_notify() -> None:
    watched = watched_targets(load(ROUTES))
    assert [(w.template, w.templated) for w in watched] == [
        ("alice@gmail.com", False),
        ("bob@gmail.com", False),
        ("owner@gmail.com", False),
        ("alice+{tag}@gmail.com", True),
        ("alerts@alice.example", False),
        ("owner+{tag}@gmail.com", True),
    ]
    assert watched[2].why == "route #1 (team@example.org) fallback"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bob@gmail.com", ["bob@gmail.com"]),
        ("BOB@gmail.com", ["bob@gmail.com"]),
        ("owner+github@gmail.com", ["owner+{tag}@gmail.com"]),
        ("alice+shop@gmail.com", ["alice+{tag}@gmail.com"]),
        ("owner@gmail.com", ["owner@gmail.com"]),
        ("alerts@alice.example", ["alerts@alice.example"]),
        ("owner+@gmail.com", []),  # a placeholder is never empty
        ("owner+a@b@gmail.com", []),
        ("someone@gmail.com", []),
        ("owner+github@gmail.com.evil", []),
    ],
)
def test_suppressed_targets_match_literal_and_templated(address: str, expected: list[str]) -> None:
    hits = suppressed_targets(watched_targets(load(ROUTES)), {"bounces": [entry(address)]})
    assert [w.template for _, why in hits for w in why] == expected


def test_detail_may_be_empty() -> None:
    target = Watched("owner+{detail}@gmail.com", "route #1 forward")
    assert target.matches("owner+promo@gmail.com")
    assert target.matches("owner@gmail.com")
    assert not target.matches("owner2@gmail.com")
