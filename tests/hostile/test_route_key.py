"""Class: a replayed signature with any body. The route key ``k`` is a second factor only the route knows.

The signature covers timestamp + token only, account-wide, for 9 hours. With
``TAGRELAY_ROUTE_KEY`` configured, a post without the route URL's ``k`` (or with a
wrong one) is refused 401 before a byte of its body is read, however well it is
signed; the previous key is accepted during a rotation.
"""

from __future__ import annotations

import pytest

from tagrelay.core.config import load_ingest
from tagrelay.core.errors import ConfigError, SecretUnavailable
from tagrelay_tools import mailgun_posts
from tests.hostile.perimeter_support import (
    MESSAGE,
    NOW,
    PREVIOUS_ROUTE_KEY,
    ROUTE_KEY,
    SIGNING_KEY,
    CountingBody,
    RecordingPublisher,
    fixed,
    make_ingest,
)


def signed(token: str = "t" * 50) -> mailgun_posts.Post:
    return mailgun_posts.mime_post(MESSAGE, "shop@example.org", "a@bank.example", SIGNING_KEY, int(NOW), token)


@pytest.mark.parametrize(
    ("k", "reason"),
    [
        (None, "missing route key (query parameter k)"),
        ("", "missing route key (query parameter k)"),
        ("wrong-key-of-some-length-0000000000", "wrong route key (query parameter k)"),
        (ROUTE_KEY[:-1], "wrong route key (query parameter k)"),
        (ROUTE_KEY + "x", "wrong route key (query parameter k)"),
        (ROUTE_KEY.upper(), "wrong route key (query parameter k)"),
        ("é" * 10, "wrong route key (query parameter k)"),
    ],
    ids=["absent", "empty", "wrong", "prefix", "longer", "upper-case", "non-ascii"],
)
def test_a_well_signed_post_without_the_route_key_is_401_unread(k: str | None, reason: str) -> None:
    publisher = RecordingPublisher()
    service = make_ingest(publisher, route_keys=(fixed(ROUTE_KEY),))
    stream = CountingBody(signed().body)
    response = service.handle(signed().content_type, stream, k)
    assert (response.status, response.text) == (401, reason)
    assert stream.read == 0  # refused before anything else was read
    assert publisher.published == []


def test_the_route_key_lets_signed_mail_through() -> None:
    publisher = RecordingPublisher()
    post = signed()
    response = make_ingest(publisher, route_keys=(fixed(ROUTE_KEY),)).handle(post.content_type, post.body, ROUTE_KEY)
    assert response.status == 200, response.text
    assert [data for data, _ in publisher.published] == [MESSAGE]


def test_the_route_key_does_not_replace_the_signature() -> None:
    post = mailgun_posts.mime_post(MESSAGE, "shop@example.org", "a@b.example", "other-key", int(NOW), "t" * 50)
    response = make_ingest(RecordingPublisher(), route_keys=(fixed(ROUTE_KEY),)).handle(
        post.content_type, post.body, ROUTE_KEY
    )
    assert (response.status, response.text) == (401, "signature does not match")


def test_during_a_rotation_the_previous_key_is_accepted_and_nothing_else() -> None:
    publisher = RecordingPublisher()
    service = make_ingest(publisher, route_keys=(fixed(ROUTE_KEY), fixed(PREVIOUS_ROUTE_KEY)))
    for n, k in enumerate((ROUTE_KEY, PREVIOUS_ROUTE_KEY)):
        post = signed(token=f"{n}" * 50)
        assert service.handle(post.content_type, post.body, k).status == 200
    post = signed(token="9" * 50)
    assert service.handle(post.content_type, post.body, "route-key-older-still-000000000").status == 401
    assert len(publisher.published) == 2


class Unreadable:
    """A key source whose Secret Manager is down."""

    def get(self) -> str:
        raise SecretUnavailable("TAGRELAY_ROUTE_KEY_PREVIOUS: Secret Manager failed (ServiceUnavailable)")


def test_an_unreadable_previous_key_narrows_what_is_accepted_but_never_blocks_the_current() -> None:
    publisher = RecordingPublisher()
    service = make_ingest(publisher, route_keys=(fixed(ROUTE_KEY), Unreadable()))
    post = signed()
    assert service.handle(post.content_type, post.body, ROUTE_KEY).status == 200
    assert service.handle(post.content_type, post.body, PREVIOUS_ROUTE_KEY).status == 401


def test_an_unreadable_current_key_is_503_so_mailgun_retries() -> None:
    post = signed()
    response = make_ingest(RecordingPublisher(), route_keys=(Unreadable(),)).handle(
        post.content_type, post.body, ROUTE_KEY
    )
    assert response.status == 503


def test_configuration_reads_the_route_keys_like_the_other_keys(tmp_path: object) -> None:
    from pathlib import Path

    routes = Path(str(tmp_path)) / "routes.toml"
    routes.write_text('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n')
    base = {"GOOGLE_CLOUD_PROJECT": "demo", "TAGRELAY_ROUTES": str(routes), "MAILGUN_WEBHOOK_SIGNING_KEY": "s"}
    assert load_ingest(base).route_key is None  # optional: ingest runs without one (deploy.sh always sets it)
    version = "projects/demo/secrets/tagrelay-route-key/versions/3"
    previous = "projects/demo/secrets/tagrelay-route-key/versions/2"
    config = load_ingest({**base, "TAGRELAY_ROUTE_KEY_SECRET": version, "TAGRELAY_ROUTE_KEY_PREVIOUS_SECRET": previous})
    assert config.route_key is not None and config.route_key.version_name == version
    assert config.route_key_previous is not None and config.route_key_previous.version_name == previous
    with pytest.raises(ConfigError) as caught:
        load_ingest({**base, "TAGRELAY_ROUTE_KEY": "short", "TAGRELAY_ROUTE_KEY_PREVIOUS_SECRET": "nonsense"})
    assert caught.value.problems == [
        "TAGRELAY_ROUTE_KEY is shorter than 16 characters: put a random key "
        "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
        "TAGRELAY_ROUTE_KEY_PREVIOUS_SECRET must be a version name like projects/P/secrets/NAME/versions/latest",
    ]
    with pytest.raises(ConfigError, match="TAGRELAY_ROUTE_KEY_PREVIOUS is set without TAGRELAY_ROUTE_KEY"):
        load_ingest({**base, "TAGRELAY_ROUTE_KEY_PREVIOUS": "x" * 20})


def test_the_mailgun_route_carries_the_key_as_k() -> None:
    from tagrelay_tools.mailgun_setup import InvalidRoute, route_spec

    url = "https://europe-west1-p.cloudfunctions.net/tagrelay-ingest/mime"
    spec = route_spec("example.org", url, route_key=ROUTE_KEY)
    assert spec.actions == (f'forward("{url}?k={ROUTE_KEY}")', "stop()")
    odd = route_spec("example.org", url, route_key="a+b/c=d&e")  # quoted, so it cannot end the URL or the action
    assert odd.actions[0] == f'forward("{url}?k=a%2Bb%2Fc%3Dd%26e")'
    assert route_spec("example.org", url).actions[0] == f'forward("{url}")'
    with pytest.raises(InvalidRoute, match="already has a query"):
        route_spec("example.org", url + "?x=1", route_key=ROUTE_KEY)
