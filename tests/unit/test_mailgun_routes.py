"""The Routes API client against a real local HTTP stand-in (tests/deploy/routes_standin.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest, Response

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tagrelay_tools import cli  # noqa: E402
from tagrelay_tools.mailgun_setup import (  # noqa: E402
    EU_API_BASE,
    US_API_BASE,
    InvalidRoute,
    RoutesApiError,
    RoutesClient,
    api_base,
    route_spec,
)
from tests.deploy.routes_standin import RoutesStandin  # noqa: E402

KEY = "key-routes-test-0123456789"
DOMAIN = "example.org"
URL = "https://europe-west1-proj.cloudfunctions.net/tagrelay-ingest/mime"


@pytest.fixture
def standin() -> Iterator[RoutesStandin]:
    server = RoutesStandin(KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def client_for(standin: RoutesStandin, session: requests.Session, key: str = KEY) -> RoutesClient:
    return RoutesClient(session, standin.url, key, timeout=10)


def test_first_ensure_creates_the_route(standin: RoutesStandin, session: requests.Session) -> None:
    assert client_for(standin, session).ensure_route(DOMAIN, URL) == "created"
    [route] = standin.routes
    assert route["description"] == "tagrelay: example.org"
    assert route["expression"] == r'match_recipient(".*@example\.org")'
    assert route["actions"] == [f'forward("{URL}")', "stop()"]
    assert route["priority"] == 0


def test_second_ensure_changes_nothing(standin: RoutesStandin, session: requests.Session) -> None:
    client = client_for(standin, session)
    client.ensure_route(DOMAIN, URL)
    writes_before = [r for r in standin.requests if r[0] != "GET"]
    assert client.ensure_route(DOMAIN, URL) == "unchanged"
    assert [r for r in standin.requests if r[0] != "GET"] == writes_before
    assert len(standin.routes) == 1


def test_a_new_url_updates_the_same_route(standin: RoutesStandin, session: requests.Session) -> None:
    client = client_for(standin, session)
    client.ensure_route(DOMAIN, URL)
    first_id = standin.routes[0]["id"]
    new_url = "https://tagrelay-ingest-abc123-ew.a.run.app/mime"
    assert client.ensure_route(DOMAIN, new_url) == "updated"
    assert [r["id"] for r in standin.routes] == [first_id]
    assert standin.routes[0]["actions"] == [f'forward("{new_url}")', "stop()"]
    assert ("PUT", f"/v3/routes/{first_id}") in standin.requests


def test_other_routes_of_the_account_are_left_alone(standin: RoutesStandin, session: requests.Session) -> None:
    other = standin.add_route("support desk", 'match_recipient("help@other.example")', ['forward("a@b.example")'])
    client = client_for(standin, session)
    assert client.ensure_route(DOMAIN, URL) == "created"
    assert client.ensure_route("other.example", URL) == "created"
    assert {r["id"] for r in standin.routes} >= {other}
    kept = next(r for r in standin.routes if r["id"] == other)
    assert kept["actions"] == ['forward("a@b.example")']
    assert len(standin.routes) == 3


def test_duplicates_of_our_route_are_collapsed_into_one(standin: RoutesStandin, session: requests.Session) -> None:
    spec = route_spec(DOMAIN, URL)
    first = standin.add_route(spec.description, spec.expression, list(spec.actions))
    standin.add_route(spec.description, spec.expression, list(spec.actions))
    assert client_for(standin, session).ensure_route(DOMAIN, URL) == "updated"
    assert [r["id"] for r in standin.routes] == [first]


def test_listing_follows_pages(standin: RoutesStandin, session: requests.Session) -> None:
    for n in range(230):
        standin.add_route(f"other {n}", f'match_recipient("n{n}@x.example")', ["stop()"])
    client = client_for(standin, session)
    assert len(client.list_routes()) == 230
    assert client.ensure_route(DOMAIN, URL) == "created"
    assert client.ensure_route(DOMAIN, URL) == "unchanged"  # ours is on the third page now
    pages = [target for method, target in standin.requests if method == "GET"]
    assert any("skip=200" in target for target in pages)


def test_delete_route_removes_only_ours(standin: RoutesStandin, session: requests.Session) -> None:
    other = standin.add_route("someone else", 'match_recipient("x@y.example")', ["stop()"])
    client = client_for(standin, session)
    client.ensure_route(DOMAIN, URL)
    assert client.delete_route(DOMAIN) == "deleted"
    assert client.delete_route(DOMAIN) == "absent"
    assert [r["id"] for r in standin.routes] == [other]


def test_a_wrong_key_is_a_clear_error(standin: RoutesStandin, session: requests.Session) -> None:
    with pytest.raises(RoutesApiError) as caught:
        client_for(standin, session, key="wrong-key").ensure_route(DOMAIN, URL)
    assert caught.value.status == 401
    assert "refused the API key" in caught.value.reason
    assert "MAILGUN_API_KEY" in caught.value.reason
    assert EU_API_BASE in caught.value.reason  # the usual cause: an EU account on the US base
    assert "wrong-key" not in caught.value.reason
    assert standin.routes == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_raise_and_change_nothing(standin: RoutesStandin, session: requests.Session, status: int) -> None:
    standin.fail_next(status)
    with pytest.raises(RoutesApiError) as caught:
        client_for(standin, session).ensure_route(DOMAIN, URL)
    assert caught.value.status == status
    assert f"Mailgun answered {status}" in caught.value.reason
    assert "try again later" in caught.value.reason
    assert standin.routes == []


def test_a_malformed_listing_is_reported(standin: RoutesStandin, session: requests.Session) -> None:
    standin.fail_next(200)  # the listing "succeeds" with a body that is not a route list
    with pytest.raises(RoutesApiError, match="no 'items'"):
        client_for(standin, session).ensure_route(DOMAIN, URL)


def test_a_server_that_does_not_answer_times_out(standin: RoutesStandin, session: requests.Session) -> None:
    standin.hang_next()
    client = RoutesClient(session, standin.url, KEY, timeout=0.2)
    with pytest.raises(RoutesApiError, match="did not answer"):
        client.list_routes()


def test_nothing_listening_is_a_connection_error(session: requests.Session) -> None:
    server = RoutesStandin(KEY)
    url = server.start()
    server.stop()
    with pytest.raises(RoutesApiError, match=r"cannot connect to 127\.0\.0\.1"):
        RoutesClient(session, url, KEY).list_routes()


@pytest.mark.parametrize(
    ("domain", "url"),
    [
        ("not a domain", URL),
        ("example", URL),
        (DOMAIN, "ftp://example.org/mime"),
        (DOMAIN, 'https://x.example/mime")+forward("https://evil.example'),
    ],
)
def test_invalid_input_is_refused_before_any_request(
    standin: RoutesStandin, session: requests.Session, domain: str, url: str
) -> None:
    with pytest.raises(InvalidRoute):
        client_for(standin, session).ensure_route(domain, url)
    assert standin.requests == []


class RecordingRedirect(HTTPAdapter):
    """Delivers every request to the local stand-in, remembering the URL and timeout it was sent with."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = urlsplit(target).netloc
        self.seen: list[str] = []
        self.timeouts: list[object] = []

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        assert request.url is not None
        self.seen.append(request.url)
        self.timeouts.append(timeout)
        parts = urlsplit(request.url)
        request.url = urlunsplit(("http", self.target, parts.path, parts.query, ""))
        return super().send(request, stream, timeout, verify, cert, proxies)


@pytest.mark.parametrize(
    ("explicit", "eu", "env", "expected"),
    [
        (None, False, {}, US_API_BASE),
        (None, True, {}, EU_API_BASE),
        (None, False, {"MAILGUN_API_BASE": EU_API_BASE + "/"}, EU_API_BASE),
        (US_API_BASE, False, {"MAILGUN_API_BASE": EU_API_BASE}, US_API_BASE),
    ],
)
def test_both_bases_are_addressed_as_chosen(
    standin: RoutesStandin, explicit: str | None, eu: bool, env: dict[str, str], expected: str
) -> None:
    base = api_base(explicit, env, eu)
    assert base == expected
    adapter = RecordingRedirect(standin.url)
    with requests.Session() as session:
        session.mount("https://", adapter)
        client = RoutesClient(session, base, KEY)
        assert client.ensure_route(DOMAIN, URL) == "created"
        assert client.ensure_route(DOMAIN, URL) == "unchanged"
    assert adapter.seen, "no request was made"
    assert all(url.startswith(expected + "/v3/routes") for url in adapter.seen)
    assert all(timeout is not None for timeout in adapter.timeouts)
    assert len(standin.routes) == 1


def test_a_base_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(InvalidRoute, match="not a URL"):
        api_base("api.mailgun.net", {}, False)


def test_command_creates_then_reports_unchanged(
    standin: RoutesStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", KEY)
    argv = ["mailgun", "ensure-route", "--domain", DOMAIN, "--url", URL, "--api-base", standin.url]
    assert cli.main(argv) == 0
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "mailgun route for example.org: created" in out
    assert "mailgun route for example.org: unchanged" in out
    assert KEY not in out
    assert len(standin.routes) == 1


def test_command_uses_the_environment_base(
    standin: RoutesStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", KEY)
    monkeypatch.setenv("MAILGUN_API_BASE", standin.url)
    assert cli.main(["mailgun", "ensure-route", "--domain", DOMAIN, "--url", URL]) == 0
    assert "created" in capsys.readouterr().out
    assert len(standin.routes) == 1


def test_command_with_a_wrong_key_exits_nonzero_with_the_reason(
    standin: RoutesStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", "sekrit-wrong-KEY")
    code = cli.main(["mailgun", "ensure-route", "--domain", DOMAIN, "--url", URL, "--api-base", standin.url])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: Mailgun refused the API key (401)" in captured.err
    assert "sekrit-wrong-KEY" not in captured.out + captured.err


def test_command_without_a_key_says_where_to_put_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MAILGUN_API_KEY", raising=False)
    assert cli.main(["mailgun", "ensure-route", "--domain", DOMAIN, "--url", URL]) == 2
    assert "MAILGUN_API_KEY is not set" in capsys.readouterr().err


def test_command_deletes_the_route(
    standin: RoutesStandin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILGUN_API_KEY", KEY)
    base = ["--domain", DOMAIN, "--api-base", standin.url]
    assert cli.main(["mailgun", "ensure-route", "--url", URL, *base]) == 0
    assert cli.main(["mailgun", "delete-route", *base]) == 0
    assert "mailgun route for example.org: deleted" in capsys.readouterr().out
    assert standin.routes == []
