"""The one local stack the stack-backed tiers share (integration, hostile): real Pub/Sub, Firestore and
storage emulators, ingest and relay under functions-framework, the Mailgun stand-in. Started the
first time a test asks for it and stopped, every child by its pid, when the session ends; each
test keeps apart by its own aliases and Message-IDs. Tests that change how the stack behaves
(Mailgun faults, restarts) start pipelines of their own."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tagrelay.core.log import LOGGER_NAME
from tagrelay_tools.localstack import PORT_RANGE_VARIABLE, Stack
from tests.integration.conftest import TAP, running_stack

# `make test` runs two pytest workers (gw0, gw1), each starting stacks: each draws its children's ports
# from its own range below the kernel's ephemeral ports (32768 and up), so they never collide.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit() and int(_WORKER[2:]) < 4:
    _LOW = 20000 + 3000 * int(_WORKER[2:])
    os.environ.setdefault(PORT_RANGE_VARIABLE, f"{_LOW}-{_LOW + 2999}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A send that may have reached Mailgun waits this settle time (issue 12); it must stay below the age limit.
    relay_env = {
        "MAILGUN_TIMEOUT": "3",
        "TAGRELAY_MAX_DELIVERY_AGE_SECONDS": "20",
        "TAGRELAY_EVENTS_SETTLE_SECONDS": "2",
    }
    with running_stack(tmp_path_factory, "stack", relay_env) as local:
        local.ensure_subscription(TAP, local.topic)
        local.ensure_subscription(f"{local.deadletter_topic}-tap", local.deadletter_topic)
        yield local


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """What the tagrelay logger writes during the test. Its records never reach capsys reliably: the
    logger does not propagate, and its stdout stream is bound at first use (maybe in another test)."""
    handler = Records()
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
