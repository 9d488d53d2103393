"""The reply key settings: off when unset, one line per problem, the previous key for rotations."""

from __future__ import annotations

import pytest

from tagrelay.core.config import ReplyConfig, SecretRef, load_replies
from tagrelay.core.errors import ConfigError

KEY = "a" * 64
VERSION = "projects/p/secrets/tagrelay-reply-key/versions/latest"


def test_no_key_means_replies_are_off() -> None:
    assert load_replies({}) is None


def test_a_key_or_a_secret_version() -> None:
    assert load_replies({"TAGRELAY_REPLY_KEY": KEY}) == ReplyConfig(SecretRef("TAGRELAY_REPLY_KEY", value=KEY))
    assert load_replies({"TAGRELAY_REPLY_KEY_SECRET": VERSION}) == ReplyConfig(
        SecretRef("TAGRELAY_REPLY_KEY", version_name=VERSION)
    )


def test_the_previous_key_during_a_rotation() -> None:
    config = load_replies({"TAGRELAY_REPLY_KEY": KEY, "TAGRELAY_REPLY_KEY_PREVIOUS_SECRET": VERSION[:-6] + "3"})
    assert config is not None and config.previous is not None
    assert config.previous.version_name.endswith("/versions/3")


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"TAGRELAY_REPLY_KEY": "short"}, "TAGRELAY_REPLY_KEY is shorter than 32 characters"),
        ({"TAGRELAY_REPLY_KEY": KEY, "TAGRELAY_REPLY_KEY_SECRET": VERSION}, "both set"),
        ({"TAGRELAY_REPLY_KEY_SECRET": "tagrelay-reply-key"}, "must be a version name"),
        ({"TAGRELAY_REPLY_KEY_PREVIOUS": KEY}, "TAGRELAY_REPLY_KEY_PREVIOUS is set but TAGRELAY_REPLY_KEY is not"),
        ({"TAGRELAY_REPLY_KEY": KEY, "TAGRELAY_REPLY_KEY_PREVIOUS": "x"}, "TAGRELAY_REPLY_KEY_PREVIOUS is shorter"),
    ],
)
def test_wrong_settings_fail_with_one_line_naming_the_variable(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_replies(env)
    assert len(caught.value.problems) == 1
    assert problem in caught.value.problems[0]
