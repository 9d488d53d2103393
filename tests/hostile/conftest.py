"""The hostile tier's own local stack (real Pub/Sub, Firestore and storage emulators, ingest and relay
under functions-framework, the Mailgun stand-in), started only by the tests that need it and stopped,
every child by its pid, when the session ends. The in-process tests use tests/hostile/support.py."""

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
