"""tagrelay.core.config.load_events: the events function's settings, one line per problem."""

from __future__ import annotations

import pytest

from tagrelay.core.config import DEFAULT_EVENT_MAX_AGE_SECONDS, load_events
from tagrelay.core.errors import ConfigError
from tests.unit.support import DATA

GOOD = {
    "GOOGLE_CLOUD_PROJECT": "p",
    "TAGRELAY_ROUTES": str(DATA / "routes.toml"),
    "MAILGUN_WEBHOOK_SIGNING_KEY": "signing-key",
    "MAILGUN_DOMAIN": "example.org",
    "MAILGUN_API_KEY": "key-x",
}


def test_defaults() -> None:
    config = load_events(GOOD)
    assert config.max_age_seconds == DEFAULT_EVENT_MAX_AGE_SECONDS == 9 * 3600
    assert (config.deadletter_topic, config.claim_bucket, config.api_base) == (
        "tagrelay-deadletter",
        "",
        "https://api.mailgun.net",
    )
    assert config.signing_key.value == "signing-key" and "signing-key" not in repr(config)


def test_every_problem_is_named_at_once() -> None:
    env = {"TAGRELAY_EVENT_MAX_AGE_SECONDS": "5", "TAGRELAY_CLAIM_BUCKET": "Bad Bucket"}
    with pytest.raises(ConfigError) as caught:
        load_events(env)
    problems = caught.value.problems
    assert [p.split(" ", 1)[0].split("=", 1)[0] for p in problems] == [
        "GOOGLE_CLOUD_PROJECT",
        "TAGRELAY_ROUTES",
        "MAILGUN_WEBHOOK_SIGNING_KEY",
        "TAGRELAY_EVENT_MAX_AGE_SECONDS",
        "MAILGUN_DOMAIN",
        "MAILGUN_API_KEY",
        "TAGRELAY_CLAIM_BUCKET",
    ]
    assert "put a number of seconds between 60 and 32400" in problems[3]
