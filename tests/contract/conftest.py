"""A Firestore emulator for the ledger contract suite, started by this fixture and stopped by its pid."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagrelay_tools.localstack import EMULATOR_START_SECONDS, Child, Stack, free_port, missing_prerequisites


@pytest.fixture(scope="session")
def firestore_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    problems = missing_prerequisites()
    if problems:
        pytest.fail("the ledger contract suite needs the Firestore emulator:\n" + "\n".join(problems))
    workdir: Path = tmp_path_factory.mktemp("firestore")
    port = free_port()
    log = workdir / "firestore.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            ["gcloud", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}", "--quiet"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    child = Child("firestore", process, log, port)
    try:
        Stack(workdir=workdir, routes=workdir, outbox=workdir).wait_ready(child, "/", EMULATOR_START_SECONDS)
        yield f"127.0.0.1:{port}"
    finally:
        child.stop()  # its process group, by the pid this fixture started
