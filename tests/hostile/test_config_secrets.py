"""Class 10: a key never shows in repr/str of the configuration; the API base is https outside this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagrelay.core.config import SecretRef, load_relay
from tagrelay.core.errors import ConfigError

KEY = "key-0123456789abcdef-very-secret"


def test_a_secret_ref_never_prints_its_value() -> None:
    ref = SecretRef("MAILGUN_API_KEY", value=KEY)
    for shown in (repr(ref), str(ref), f"{ref}", repr([ref]), repr({"k": ref})):
        assert KEY not in shown
        assert "MAILGUN_API_KEY" in shown
    assert ref.value == KEY


def relay_env(tmp_path: Path, base: str) -> dict[str, str]:
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n', encoding="utf-8")
    return {
        "GOOGLE_CLOUD_PROJECT": "demo",
        "TAGRELAY_ROUTES": str(routes),
        "MAILGUN_DOMAIN": "example.org",
        "MAILGUN_API_KEY": KEY,
        "MAILGUN_API_BASE": base,
    }


@pytest.mark.parametrize(
    "base", ["http://api.mailgun.net", "http://api.eu.mailgun.net/", "http://localhost.evil.example"]
)
def test_http_outside_this_machine_is_a_config_error_naming_the_variable(tmp_path: Path, base: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_relay(relay_env(tmp_path, base))
    [problem] = refused.value.problems
    assert problem.startswith("MAILGUN_API_BASE=") and "https://" in problem
    assert KEY not in str(refused.value)


@pytest.mark.parametrize(
    "base", ["https://api.mailgun.net", "http://127.0.0.1:8025", "http://localhost:9", "http://[::1]:8025"]
)
def test_https_anywhere_and_http_to_this_machine_load(tmp_path: Path, base: str) -> None:
    config = load_relay(relay_env(tmp_path, base))
    assert config.api_base == base
    assert KEY not in repr(config)
