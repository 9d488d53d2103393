"""Our post simulator (tagrelay_tools.mailgun_posts) against the posts written from Mailgun's documentation.

The fixtures in tests/data/posts/ are the reference (see make_posts.py for the pages
they follow). The simulator builds the same post from the same message, envelope and
token; where it is used (the CLI, the local stack, the integration tests) it must
produce what Mailgun sends: the same fields with the same values, and the same
message once ingest has read the form.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tagrelay.core.inbound import Form, parse_form, to_inbound
from tagrelay_tools import mailgun_posts
from tests.unit.support import POST_TIMESTAMP, POSTS, SIGNING_KEY, contents, corpus, parse


def meta(name: str) -> dict[str, Any]:
    data = json.loads((POSTS / f"{name}.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def fixture(name: str) -> Form:
    return parse_form(meta(name)["content_type"], (POSTS / f"{name}.body").read_bytes())


def simulated(name: str) -> Form:
    """The simulator's post of the fixture's message, with the fixture's envelope and token."""
    info, documented = meta(name), fixture(name)
    raw = corpus(info["source"]) if "source" in info else (POSTS / info["message"]).read_bytes()
    build = mailgun_posts.parsed_post if info["form"] == "parsed" else mailgun_posts.mime_post
    post = build(
        raw,
        documented.text("recipient"),
        documented.text("sender"),
        SIGNING_KEY,
        POST_TIMESTAMP,
        documented.text("token"),
    )
    return parse_form(post.content_type, post.body)


def names(form: str) -> list[Any]:
    return [pytest.param(p.stem, id=p.stem) for p in sorted(POSTS.glob("*.body")) if meta(p.stem)["form"] == form]


def with_source(form: str) -> list[Any]:
    return [p for p in names(form) if {"source", "message"} & set(meta(p.values[0]))]


@pytest.mark.parametrize("name", with_source("mime"))
def test_simulated_mime_post_has_the_documented_fields_and_values(name: str) -> None:
    # Field order differs (the simulator sends body-mime last); a form's order carries no meaning.
    documented, simulated_ = fixture(name), simulated(name)
    assert sorted(simulated_.fields) == sorted(documented.fields)
    for field, value in documented.fields.items():
        assert simulated_.fields[field] == value, field


@pytest.mark.parametrize("name", with_source("mime"))
def test_simulated_mime_post_gives_ingest_the_same_message(name: str) -> None:
    assert to_inbound(simulated(name), POST_TIMESTAMP) == to_inbound(fixture(name), POST_TIMESTAMP)


def test_the_parsed_sample_has_a_source_message() -> None:
    assert [p.values[0] for p in with_source("parsed")] == ["parsed-sample"]


def test_simulated_parsed_post_has_every_documented_field() -> None:
    assert set(fixture("parsed-sample").fields) - set(simulated("parsed-sample").fields) == set()


def test_simulated_parsed_post_sends_the_same_attachments_and_headers() -> None:
    documented, simulated_ = fixture("parsed-sample"), simulated("parsed-sample")
    assert sorted(simulated_.files) == sorted(documented.files) == ["attachment-1", "attachment-2"]
    for key, upload in documented.files.items():
        twin = simulated_.files[key]
        assert (twin.filename, twin.content_type, twin.data) == (upload.filename, upload.content_type, upload.data)
    for field in ("message-headers", "content-id-map", "attachment-count", "body-plain", "body-html"):
        assert json_or_text(simulated_.fields[field]) == json_or_text(documented.fields[field]), field


def test_simulated_parsed_post_gives_ingest_an_equivalent_message() -> None:
    """Ingest rebuilds a message from either; only the rebuilt multipart boundaries may differ."""
    mine, theirs = (
        to_inbound(simulated("parsed-sample"), POST_TIMESTAMP),
        to_inbound(fixture("parsed-sample"), POST_TIMESTAMP),
    )
    assert (mine.recipient, mine.sender, mine.token) == (theirs.recipient, theirs.sender, theirs.token)
    assert contents(mine.mime) == contents(theirs.mime)
    ours, documented = parse(mine.mime), parse(theirs.mime)
    assert [(k, str(v)) for k, v in ours.items() if k != "Content-Type"] == [
        (k, str(v)) for k, v in documented.items() if k != "Content-Type"
    ]


def json_or_text(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value.decode("utf-8").replace("\r\n", "\n")
