"""The operator reads (``tagrelay trace``, the counts of ``tagrelay status``) on the Firestore emulator.

Records are written here with the fields issue 12 documents for ``tagrelay_deliveries``, through
the real client; the tools read them back through the real client and the real queries.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tagrelay.adapters.ledger import DELIVERIES, REFUSALS
from tagrelay_tools import cli
from tagrelay_tools.ops import count_deliveries, deliveries_since
from tagrelay_tools.trace import find

MID = "<m-ops-1@shop.example>"


@pytest.fixture
def db(firestore_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from google.cloud import firestore

    project = "ops-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    client = firestore.Client(project=project)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def put(db: Any, key: str, **data: Any) -> None:
    db.collection(DELIVERIES).document(key).set(data)


def seed(db: Any, now: float) -> None:
    common = {"message_id": MID, "pubsub_id": "5550001", "received_at": now - 60, "attempts": 1}
    put(
        db,
        "a" * 64,
        alias="one@example.org",
        targets="owner+one@gmail.com",
        state="delivered",
        mailgun_id="<mg-1@example.org>",
        sent_at=now - 58,
        event_at=now - 50,
        updated_at=now - 50,
        **common,
    )
    put(
        db,
        "b" * 64,
        alias="two@example.org",
        targets="owner+two@gmail.com",
        state="failed",
        reason="suppress-bounce",
        code=605,
        severity="permanent",
        mailgun_id="<mg-2@example.org>",
        sent_at=now - 58,
        event_at=now - 40,
        updated_at=now - 40,
        **common,
    )
    put(
        db,
        "c" * 64,
        alias="old@example.org",
        targets="o@gmail.com",
        state="delivered",
        message_id="<old@x>",
        pubsub_id="5550002",
        updated_at=now - 3 * 86400,
    )
    put(
        db,
        "d" * 64,
        alias="new@example.org",
        targets="o@gmail.com",
        state="sent",
        message_id="<new@x>",
        pubsub_id="5550003",
        mailgun_id="<mg-3@example.org>",
        updated_at=now - 5,
    )
    db.collection(REFUSALS).document("r1").set(
        {
            "alias": "three@example.org",
            "sender": "s@x",
            "reason": "token reused",
            "at": now - 30,
            "attributes": {"message_id": MID},
            "released": "",
        }
    )


def test_trace_finds_every_record_of_a_message_id_by_each_kind_of_id(db: Any) -> None:
    seed(db, time.time())
    by_message_id = find(db, MID)
    assert [(f.collection, f.id) for f in by_message_id] == [
        (DELIVERIES, "a" * 64),
        (DELIVERIES, "b" * 64),
        (REFUSALS, "r1"),
    ]
    assert [f.id for f in find(db, MID.strip("<>"))] == [f.id for f in by_message_id]
    assert [f.id for f in find(db, "5550001")] == ["a" * 64, "b" * 64]
    assert [f.id for f in find(db, "mg-2@example.org")] == ["b" * 64]
    assert [f.id for f in find(db, "<mg-3@example.org>")] == ["d" * 64]
    assert [f.id for f in find(db, "c" * 64)] == ["c" * 64]
    assert find(db, "<nothing@x>") == []


def test_trace_command_prints_one_journey_per_alias(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    seed(db, time.time())
    assert cli.main(["trace", MID]) == 0
    out = capsys.readouterr().out
    assert out.count("\ndelivery ") + out.startswith("delivery ") == 2
    assert "  alias one@example.org → owner+one@gmail.com" in out
    assert "sent         Mailgun id <mg-2@example.org>" in out
    assert "failed (permanent): 605 suppress-bounce" in out
    assert "refused: token reused" in out
    assert cli.main(["trace", "<nothing@x>"]) == 1
    assert "nothing recorded for <nothing@x>" in capsys.readouterr().out


def test_status_counts_read_only_the_last_day(db: Any) -> None:
    now = time.time()
    seed(db, now)
    recent = deliveries_since(db, now - 86400)
    assert sorted(str(r["state"]) for r in recent) == ["delivered", "failed", "sent"]  # not the 3-day-old one
    counts = count_deliveries(recent)
    assert (counts["delivered"], counts["failed"], counts["suppressed"], counts["sent"]) == (1, 1, 1, 1)
    assert len(deliveries_since(db, now - 86400, limit=2)) == 2  # bounded
    assert all(set(r) <= {"state", "reason", "severity", "recipients", "updated_at"} for r in recent)
