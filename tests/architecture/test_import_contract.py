"""The import contract (pyproject ``[tool.importlinter]``) holds on the tree and fails on each kind of violation.

``lint-imports`` runs on the real tree, then on copies of the two packages that each carry one
deliberate violation; every copy must fail and name the contract it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    "layers": "Runtime layers: app > services > adapters > core",
    "services-no-adapters": "Services take ports (core.ports), never adapters",
    "services-independent": "Services are independent of each other",
    "runtime-no-tooling": "Runtime never imports tooling",
    "core-no-network": "The core imports no network client",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's packages, not the installed (editable) ones
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verdicts(output: str) -> dict[str, str]:
    """Contract name → KEPT or BROKEN, from lint-imports' summary lines."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        for name in CONTRACTS.values():
            if line.startswith(name + " "):
                found[name] = line[len(name) + 1 :].split()[0]
    return found


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert verdicts(done.stdout) == {name: "KEPT" for name in CONTRACTS.values()}


VIOLATIONS = [
    # (module that gains the import, the import, the contract it breaks)
    ("tagrelay/core/rewrite.py", "import tagrelay.adapters.bus", "layers"),
    ("tagrelay/adapters/lazy.py", "import tagrelay.services.relay", "layers"),
    ("tagrelay/services/ingest.py", "from tagrelay.adapters import ledger", "services-no-adapters"),
    ("tagrelay/services/ingest.py", "from tagrelay.services import relay", "services-independent"),
    ("tagrelay/services/events.py", "import tagrelay.services.ingest", "services-independent"),  # a new service
    ("tagrelay/app.py", "from tagrelay_tools import standin", "runtime-no-tooling"),
    ("tagrelay/core/log.py", "import tagrelay_tools.mailgun_posts", "runtime-no-tooling"),
    ("tagrelay/core/spam.py", "import requests", "core-no-network"),
    ("tagrelay/core/envelope.py", "from google.cloud import pubsub_v1", "core-no-network"),
    ("tagrelay/core/headers.py", "import socket", "core-no-network"),
    ("tagrelay/core/routes.py", "from werkzeug import serving", "core-no-network"),  # only inbound may
]


@pytest.mark.parametrize(("module", "line", "contract"), VIOLATIONS, ids=[f"{c}:{m}" for m, _, c in VIOLATIONS])
def test_a_violation_fails_naming_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    for name in ("tagrelay", "tagrelay_tools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    before = target.read_text() if target.exists() else '"""A service added later."""\n'
    target.write_text(before + f"\n{line}  # deliberate violation\n")

    done = lint_imports(tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    assert verdicts(done.stdout)[CONTRACTS[contract]] == "BROKEN", done.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert importer in done.stdout  # the report names the offending module
