"""What the per-alias insight costs the relay, counted: ``python -m bench.insight_counts``.

Runs ``bench.counts.measure`` twice on one local stack, side by side: the relay with its real
Firestore insight, and the same relay with an insight that does nothing (what it was before).
Every message comes from the same sender (the first, warming message makes it known), so this
is the common case: a known sender. A sender domain new to the alias adds one document read
(``tests/contract/test_insight_contract.py`` counts that), and a flagged leak a marker create,
the notice and one more write.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.counts import describe, measure
from bench.messages import small_message
from tagrelay_tools.localstack import Stack

BENCH = Path(__file__).resolve().parent
MESSAGES = 20


class NoInsight:
    """The relay as it was before: nothing recorded."""

    def observe(self, alias: str, write: Any, domain: str) -> dict[str, Any] | None:
        return None

    def update(self, alias: str, write: Any) -> None:
        return None

    def claim_leak(self, alias: str, domain: str, evidence: dict[str, Any]) -> bool:
        return False

    def count_notice(self, alias: str, day: str) -> tuple[int, int]:
        return 0, 0


def main() -> int:
    from tagrelay_tools.terminal import say

    workdir = Path(tempfile.mkdtemp(prefix="tagrelay-insight-counts-"))
    with Stack(workdir=workdir, routes=BENCH / "routes.toml", outbox=workdir / "outbox") as stack:
        for name, replace in (("before (no insight)", {"insight": NoInsight()}), ("with insight", None)):
            found = measure(stack, MESSAGES, lambda n: small_message(f"c-{n}-{uuid.uuid4().hex}@b.example"), replace)
            say(f"relay, {name}: {describe(found['relay'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
