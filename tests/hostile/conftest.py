"""The hostile tier (issue 15): one regression test per class of hostile or unusual mail.

Tests here run in-process against the pure core, the services with in-memory twins,
and the Mailgun client against the real local stand-in; their expected values come
from the stdlib ``email`` parser (tests/hostile/oracle.py) or are written out by hand.

The tests that need the real local stack use the session's ``hostile_stack``: real Pub/Sub,
Firestore and storage emulators, ingest and relay under functions-framework and the Mailgun
stand-in, started only when a test asks for it and stopped, every child by its pid, at the end.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tagrelay_tools.localstack import Stack
from tests.integration.conftest import running_stack


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    relay_env = {"MAILGUN_TIMEOUT": "3", "TAGRELAY_MAX_DELIVERY_AGE_SECONDS": "20"}
    with running_stack(tmp_path_factory, "hostile", relay_env) as local:
        yield local
