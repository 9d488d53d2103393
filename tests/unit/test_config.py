"""tagrelay.core.config: settings from a dict environment, every problem on its own line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagrelay.core.config import SecretRef, load_ingest, load_relay
from tagrelay.core.errors import ConfigError
from tagrelay.core.routes import Forward

SECRET_VERSION = "projects/demo/secrets/mailgun-key/versions/latest"


@pytest.fixture
def routes_file(tmp_path: Path) -> str:
    path = tmp_path / "routes.toml"
    path.write_text('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n', encoding="utf-8")
    return str(path)


@pytest.fixture
def ingest_env(routes_file: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "demo",
        "TAGRELAY_ROUTES": routes_file,
        "MAILGUN_WEBHOOK_SIGNING_KEY": "signing-key",
    }


@pytest.fixture
def relay_env(routes_file: str) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "demo",
        "TAGRELAY_ROUTES": routes_file,
        "MAILGUN_DOMAIN": "example.org",
        "MAILGUN_API_KEY": "api-key",
    }


def ingest_problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_ingest(env)
    return caught.value.problems


def relay_problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_relay(env)
    return caught.value.problems


def only(problems: list[str], variable: str) -> str:
    assert len(problems) == 1, problems
    assert variable in problems[0]
    return problems[0]


def test_empty_env_names_every_missing_ingest_variable_on_its_own_line() -> None:
    problems = ingest_problems({})
    assert len(problems) == 3
    for problem, variable in zip(
        problems, ["GOOGLE_CLOUD_PROJECT", "TAGRELAY_ROUTES", "MAILGUN_WEBHOOK_SIGNING_KEY"], strict=True
    ):
        assert problem.startswith(variable)
        assert "\n" not in problem


def test_empty_env_names_every_missing_relay_variable_on_its_own_line() -> None:
    problems = relay_problems({})
    assert [p.split(" ", 1)[0] for p in problems] == [
        "GOOGLE_CLOUD_PROJECT",
        "TAGRELAY_ROUTES",
        "MAILGUN_DOMAIN",
        "MAILGUN_API_KEY",
    ]
    assert all("\n" not in p for p in problems)


def test_the_message_says_what_to_put_there() -> None:
    problems = relay_problems({})
    assert "MAILGUN_API_KEY_SECRET" in problems[3]  # the alternative is named
    assert "routes.example.toml" in problems[1]


@pytest.mark.parametrize("variable", ["GOOGLE_CLOUD_PROJECT", "TAGRELAY_ROUTES", "MAILGUN_WEBHOOK_SIGNING_KEY"])
def test_each_missing_ingest_variable_alone(ingest_env: dict[str, str], variable: str) -> None:
    del ingest_env[variable]
    only(ingest_problems(ingest_env), variable)


@pytest.mark.parametrize("variable", ["GOOGLE_CLOUD_PROJECT", "MAILGUN_DOMAIN", "MAILGUN_API_KEY"])
def test_blank_counts_as_missing(relay_env: dict[str, str], variable: str) -> None:
    relay_env[variable] = ""
    only(relay_problems(relay_env), variable)


def test_whitespace_only_key_counts_as_missing(relay_env: dict[str, str]) -> None:
    relay_env["MAILGUN_API_KEY"] = "   "
    try:
        load_relay(relay_env)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = []
    only(problems, "MAILGUN_API_KEY")


def test_key_and_key_secret_together_are_a_contradiction(ingest_env: dict[str, str]) -> None:
    ingest_env["MAILGUN_WEBHOOK_SIGNING_KEY_SECRET"] = "projects/demo/secrets/signing/versions/1"
    problem = only(ingest_problems(ingest_env), "MAILGUN_WEBHOOK_SIGNING_KEY_SECRET")
    assert "both" in problem


@pytest.mark.parametrize(
    "version",
    ["mailgun-key", "projects/demo/secrets/mailgun-key", "projects/demo/secrets/k/versions/", "secrets/k/versions/1"],
)
def test_bad_secret_version_name(relay_env: dict[str, str], version: str) -> None:
    del relay_env["MAILGUN_API_KEY"]
    relay_env["MAILGUN_API_KEY_SECRET"] = version
    problem = only(relay_problems(relay_env), "MAILGUN_API_KEY_SECRET")
    assert "projects/P/secrets/NAME/versions/latest" in problem


@pytest.mark.parametrize(
    ("variable", "value", "word"),
    [
        ("TAGRELAY_MAX_AGE_SECONDS", "nine hours", "not a number"),
        ("TAGRELAY_MAX_AGE_SECONDS", "59", "out of range"),
        ("TAGRELAY_MAX_AGE_SECONDS", "nan", "out of range"),
        ("TAGRELAY_PUBLISH_TIMEOUT", "0", "out of range"),
        ("TAGRELAY_PUBLISH_TIMEOUT", "inf", "out of range"),
        ("TAGRELAY_MAX_BODY_BYTES", "1k", "not a number"),
        ("TAGRELAY_MAX_BODY_BYTES", "100", "out of range"),
    ],
)
def test_bad_ingest_numbers(ingest_env: dict[str, str], variable: str, value: str, word: str) -> None:
    ingest_env[variable] = value
    assert word in only(ingest_problems(ingest_env), variable)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAILGUN_TIMEOUT", "0.5"),
        ("MAILGUN_TIMEOUT", "sixty"),
        ("TAGRELAY_MAX_DELIVERY_AGE_SECONDS", "-1"),
        ("TAGRELAY_MAX_ATTEMPTS", "0"),
        ("TAGRELAY_MAX_ATTEMPTS", "many"),
    ],
)
def test_bad_relay_numbers(relay_env: dict[str, str], variable: str, value: str) -> None:
    relay_env[variable] = value
    only(relay_problems(relay_env), variable)


@pytest.mark.parametrize("value", ["ab", "1topic", "has space", "x" * 256])
def test_bad_topic_names(ingest_env: dict[str, str], value: str) -> None:
    ingest_env["TAGRELAY_TOPIC"] = value
    only(ingest_problems(ingest_env), "TAGRELAY_TOPIC")


@pytest.mark.parametrize("value", ["api.mailgun.net", "ftp://api.mailgun.net", "https://", "mailgun"])
def test_bad_api_base_url(relay_env: dict[str, str], value: str) -> None:
    relay_env["MAILGUN_API_BASE"] = value
    assert "https://api.eu.mailgun.net" in only(relay_problems(relay_env), "MAILGUN_API_BASE")


def test_several_problems_are_reported_together(relay_env: dict[str, str]) -> None:
    relay_env["MAILGUN_API_BASE"] = "nope"
    relay_env["MAILGUN_TIMEOUT"] = "x"
    del relay_env["MAILGUN_DOMAIN"]
    problems = relay_problems(relay_env)
    assert len(problems) == 3
    assert [v for v in ("MAILGUN_DOMAIN", "MAILGUN_API_BASE", "MAILGUN_TIMEOUT") if any(v in p for p in problems)] == [
        "MAILGUN_DOMAIN",
        "MAILGUN_API_BASE",
        "MAILGUN_TIMEOUT",
    ]


def test_unreadable_routes_file(ingest_env: dict[str, str], tmp_path: Path) -> None:
    ingest_env["TAGRELAY_ROUTES"] = str(tmp_path / "missing.toml")
    assert "cannot read" in only(ingest_problems(ingest_env), "TAGRELAY_ROUTES")


def test_invalid_routes_file_reports_the_rules_error(ingest_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('fallback = "owner@gmail.com"\n', encoding="utf-8")
    ingest_env["TAGRELAY_ROUTES"] = str(path)
    assert "no [[route]]" in only(ingest_problems(ingest_env), "TAGRELAY_ROUTES")


def test_valid_ingest_env_with_defaults(ingest_env: dict[str, str]) -> None:
    config = load_ingest(ingest_env)
    assert config.project == "demo"
    assert config.topic == "tagrelay-inbound"
    assert config.signing_key == SecretRef(variable="MAILGUN_WEBHOOK_SIGNING_KEY", value="signing-key")
    assert config.max_age_seconds == 9 * 3600
    assert config.publish_timeout == 10
    assert config.max_body_bytes == (25 + 1) * 1024 * 1024  # a 25 MB message and its form fields
    resolved = config.routes.resolve("github@example.org")
    assert isinstance(resolved, Forward) and resolved.targets == ("owner+github@gmail.com",)


def test_valid_ingest_env_with_every_setting(ingest_env: dict[str, str]) -> None:
    del ingest_env["MAILGUN_WEBHOOK_SIGNING_KEY"]
    ingest_env.update(
        {
            "TAGRELAY_TOPIC": "mail-in",
            "MAILGUN_WEBHOOK_SIGNING_KEY_SECRET": "projects/demo/secrets/signing/versions/3",
            "TAGRELAY_MAX_AGE_SECONDS": "3600",
            "TAGRELAY_PUBLISH_TIMEOUT": "2.5",
            "TAGRELAY_MAX_BODY_BYTES": "30000000",
        }
    )
    config = load_ingest(ingest_env)
    assert config.topic == "mail-in"
    assert config.signing_key == SecretRef(
        variable="MAILGUN_WEBHOOK_SIGNING_KEY", version_name="projects/demo/secrets/signing/versions/3"
    )
    assert (config.max_age_seconds, config.publish_timeout, config.max_body_bytes) == (3600.0, 2.5, 30000000)
    assert isinstance(config.max_body_bytes, int)


def test_valid_relay_env(relay_env: dict[str, str]) -> None:
    del relay_env["MAILGUN_API_KEY"]
    relay_env.update(
        {
            "MAILGUN_API_KEY_SECRET": SECRET_VERSION,
            "MAILGUN_API_BASE": "https://api.eu.mailgun.net/",
            "TAGRELAY_DEADLETTER_TOPIC": "mail-dead",
            "MAILGUN_TIMEOUT": "30",
            "TAGRELAY_MAX_DELIVERY_AGE_SECONDS": "7200",
            "TAGRELAY_MAX_ATTEMPTS": "5",
        }
    )
    config = load_relay(relay_env)
    assert config.mailgun_domain == "example.org"
    assert config.api_base == "https://api.eu.mailgun.net"
    assert config.api_key == SecretRef(variable="MAILGUN_API_KEY", version_name=SECRET_VERSION)
    assert config.deadletter_topic == "mail-dead"
    assert (config.mailgun_timeout, config.max_delivery_age_seconds, config.max_attempts) == (30.0, 7200.0, 5)


def test_relay_defaults(relay_env: dict[str, str]) -> None:
    config = load_relay(relay_env)
    assert config.api_base == "https://api.mailgun.net"
    assert config.deadletter_topic == "tagrelay-deadletter"
    assert config.mailgun_timeout == 60
    assert config.max_delivery_age_seconds == 24 * 3600
    assert config.max_attempts == 10
    assert config.api_key == SecretRef(variable="MAILGUN_API_KEY", value="api-key")


# -- numbers say their unit; counts and sizes are whole -----------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TAGRELAY_MAX_AGE_SECONDS",
            "nine hours",
            "TAGRELAY_MAX_AGE_SECONDS='nine hours' is not a number: put a number of seconds between 60 and 604800",
        ),
        (
            "TAGRELAY_PUBLISH_TIMEOUT",
            "0",
            "TAGRELAY_PUBLISH_TIMEOUT='0' is out of range: put a number of seconds between 0.5 and 60",
        ),
        (
            "TAGRELAY_MAX_BODY_BYTES",
            "1k",
            "TAGRELAY_MAX_BODY_BYTES='1k' is not a number: put a whole number of bytes between 1024 and 536870912",
        ),
        (
            "TAGRELAY_MAX_BODY_BYTES",
            "100",
            "TAGRELAY_MAX_BODY_BYTES='100' is out of range: put a whole number of bytes between 1024 and 536870912",
        ),
        (
            "TAGRELAY_MAX_BODY_BYTES",
            "2048.5",
            "TAGRELAY_MAX_BODY_BYTES='2048.5' is not a whole number: "
            "put a whole number of bytes between 1024 and 536870912",
        ),
    ],
)
def test_ingest_number_messages_name_the_unit(
    ingest_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    ingest_env[variable] = value
    assert ingest_problems(ingest_env) == [message]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "MAILGUN_TIMEOUT",
            "sixty",
            "MAILGUN_TIMEOUT='sixty' is not a number: put a number of seconds between 1 and 540",
        ),
        (
            "TAGRELAY_MAX_DELIVERY_AGE_SECONDS",
            "-1",
            "TAGRELAY_MAX_DELIVERY_AGE_SECONDS='-1' is out of range: put a number of seconds between 1 and 604800",
        ),
        (
            "TAGRELAY_MAX_ATTEMPTS",
            "2.5",
            "TAGRELAY_MAX_ATTEMPTS='2.5' is not a whole number: put a whole number of attempts between 1 and 1000",
        ),
        (
            "TAGRELAY_MAX_ATTEMPTS",
            "1e3",
            "TAGRELAY_MAX_ATTEMPTS='1e3' is not a whole number: put a whole number of attempts between 1 and 1000",
        ),
        (
            "TAGRELAY_MAX_ATTEMPTS",
            "0",
            "TAGRELAY_MAX_ATTEMPTS='0' is out of range: put a whole number of attempts between 1 and 1000",
        ),
        (
            "TAGRELAY_MAX_ATTEMPTS",
            "many",
            "TAGRELAY_MAX_ATTEMPTS='many' is not a number: put a whole number of attempts between 1 and 1000",
        ),
    ],
)
def test_relay_number_messages_name_the_unit(
    relay_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    relay_env[variable] = value
    assert relay_problems(relay_env) == [message]


def test_whole_settings_are_read_as_integers(ingest_env: dict[str, str], relay_env: dict[str, str]) -> None:
    ingest_env["TAGRELAY_MAX_BODY_BYTES"] = "4096"
    relay_env["TAGRELAY_MAX_ATTEMPTS"] = " 15 "
    body = load_ingest(ingest_env).max_body_bytes
    attempts = load_relay(relay_env).max_attempts
    assert (body, type(body)) == (4096, int)
    assert (attempts, type(attempts)) == (15, int)


def test_a_count_too_long_to_convert_is_a_problem_not_a_crash(relay_env: dict[str, str]) -> None:
    relay_env["TAGRELAY_MAX_ATTEMPTS"] = "9" * 5000  # past int()'s 4300-digit limit
    [problem] = relay_problems(relay_env)
    assert problem.startswith("TAGRELAY_MAX_ATTEMPTS='999")
    assert problem.endswith("is out of range: put a whole number of attempts between 1 and 1000")


def test_fractional_seconds_are_still_accepted(ingest_env: dict[str, str]) -> None:
    ingest_env["TAGRELAY_PUBLISH_TIMEOUT"] = "0.5"
    assert load_ingest(ingest_env).publish_timeout == 0.5


# -- issue 12: how long Mailgun's events need before "not accepted" is believed ------------------------------------


def test_events_settle_time_and_lease_margin_default_to_half_an_hour_and_thirty_seconds(
    relay_env: dict[str, str],
) -> None:
    config = load_relay(relay_env)
    assert (config.events_settle_seconds, config.lease_margin_seconds) == (1800, 30)


def test_events_settle_time_and_lease_margin_are_read(relay_env: dict[str, str]) -> None:
    relay_env.update({"TAGRELAY_EVENTS_SETTLE_SECONDS": "0", "TAGRELAY_LEASE_MARGIN_SECONDS": "2"})
    config = load_relay(relay_env)
    assert (config.events_settle_seconds, config.lease_margin_seconds) == (0, 2)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "TAGRELAY_EVENTS_SETTLE_SECONDS",
            "1800.5",
            "TAGRELAY_EVENTS_SETTLE_SECONDS='1800.5' is not a whole number: "
            "put a whole number of seconds between 0 and 86400",
        ),
        (
            "TAGRELAY_EVENTS_SETTLE_SECONDS",
            "-1",
            "TAGRELAY_EVENTS_SETTLE_SECONDS='-1' is out of range: put a whole number of seconds between 0 and 86400",
        ),
        (
            "TAGRELAY_EVENTS_SETTLE_SECONDS",
            "30m",
            "TAGRELAY_EVENTS_SETTLE_SECONDS='30m' is not a number: put a whole number of seconds between 0 and 86400",
        ),
        (
            "TAGRELAY_LEASE_MARGIN_SECONDS",
            "0",
            "TAGRELAY_LEASE_MARGIN_SECONDS='0' is out of range: put a whole number of seconds between 1 and 600",
        ),
    ],
)
def test_events_settings_messages_name_the_unit(
    relay_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    relay_env[variable] = value
    assert relay_problems(relay_env) == [message]


def test_a_settle_time_not_below_the_delivery_age_is_a_contradiction(relay_env: dict[str, str]) -> None:
    relay_env["TAGRELAY_MAX_DELIVERY_AGE_SECONDS"] = "1800"
    assert relay_problems(relay_env) == [
        "TAGRELAY_EVENTS_SETTLE_SECONDS=1800 is not below TAGRELAY_MAX_DELIVERY_AGE_SECONDS=1800: "
        "a send that may have reached Mailgun would be dead-lettered before its events can be trusted; "
        "put a settle time shorter than the delivery age (or a longer age)"
    ]
    relay_env["TAGRELAY_EVENTS_SETTLE_SECONDS"] = "1799"
    assert load_relay(relay_env).events_settle_seconds == 1799


def test_a_wrong_delivery_age_is_reported_once_not_also_as_a_contradiction(relay_env: dict[str, str]) -> None:
    relay_env["TAGRELAY_MAX_DELIVERY_AGE_SECONDS"] = "-5"
    assert len(relay_problems(relay_env)) == 1
