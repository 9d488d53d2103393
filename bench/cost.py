"""The price of forwarding 10,000 messages, from counted operations and measured times.

Pure: the counts come from bench/counts.py (every call counted as it went over the
wire to the emulators and stand-ins), the times from the same run. Prices are Google
Cloud's published list prices in USD, for a tier-1 region (us-central1) without free
tiers or committed-use discounts, as published in 2025 (the date of our copy of the
pricing pages; check the current pages before relying on them):

- Cloud Run functions (2nd gen, request-based billing): $0.000024 per vCPU-second,
  $0.0000025 per GiB-second, $0.40 per million requests; billable time is rounded up
  to 100 ms. Free each month: 180,000 vCPU-s, 360,000 GiB-s, 2 million requests.
- Pub/Sub: $40 per TiB of throughput, counted once for the publish and once for each
  delivery, with at least 1,000 bytes per message. Free: 10 GiB a month.
- Firestore (Standard edition, in the functions' region, as deploy.sh creates it):
  $0.03 per 100,000 document reads, $0.09 per 100,000 writes, $0.01 per 100,000
  deletes (TTL deletes are billed as deletes; a multi-region location costs twice).
  Free each day: 50,000 reads, 20,000 writes, 20,000 deletes.
- Cloud Storage (Standard, regional): $0.005 per 1,000 Class A operations (upload),
  $0.0004 per 1,000 Class B operations (download), deletes free, $0.020 per GB-month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PRICES_DATE = "2025 (published list prices)"
CPU_SECOND = 0.000024
GIB_SECOND = 0.0000025
REQUEST = 0.40 / 1_000_000
BILLING_STEP_SECONDS = 0.1
PUBSUB_TIB = 40.0
PUBSUB_MIN_BYTES = 1000
FIRESTORE_READ = 0.03 / 100_000
FIRESTORE_WRITE = 0.09 / 100_000
FIRESTORE_DELETE = 0.01 / 100_000
GCS_CLASS_A = 0.005 / 1000
GCS_CLASS_B = 0.0004 / 1000
GCS_GB_MONTH = 0.020
TIB = 1024**4


@dataclass(frozen=True)
class Stage:
    """One function's share of a message: what it was counted and timed doing."""

    name: str
    vcpu: float  # deployed size (deploy.sh)
    memory_gib: float
    seconds: float  # instance time per invocation (measured latency; rounded up when billed)
    invocations: float = 1.0
    pubsub_bytes: float = 0.0  # published plus delivered, before the 1,000-byte minimum
    pubsub_messages: float = 0.0  # published plus delivered
    firestore_reads: float = 0.0
    firestore_writes: float = 0.0
    firestore_deletes: float = 0.0  # including the TTL delete of each record written
    gcs_class_a: float = 0.0
    gcs_class_b: float = 0.0


@dataclass
class Bill:
    messages: int
    lines: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(sum(items.values()) for items in self.lines.values())


def billed_seconds(seconds: float) -> float:
    return math.ceil(max(seconds, 1e-9) / BILLING_STEP_SECONDS) * BILLING_STEP_SECONDS


def estimate(stages: list[Stage], messages: int = 10_000) -> Bill:
    bill = Bill(messages)
    for stage in stages:
        calls = stage.invocations * messages
        billed = billed_seconds(stage.seconds) * calls
        pubsub_bytes = max(stage.pubsub_bytes, PUBSUB_MIN_BYTES * stage.pubsub_messages) * messages
        items = {
            "requests": calls * REQUEST,
            "cpu": billed * stage.vcpu * CPU_SECOND,
            "memory": billed * stage.memory_gib * GIB_SECOND,
            "pubsub": pubsub_bytes / TIB * PUBSUB_TIB,
            "firestore": messages
            * (
                stage.firestore_reads * FIRESTORE_READ
                + stage.firestore_writes * FIRESTORE_WRITE
                + stage.firestore_deletes * FIRESTORE_DELETE
            ),
            "storage": messages * (stage.gcs_class_a * GCS_CLASS_A + stage.gcs_class_b * GCS_CLASS_B),
        }
        bill.lines[stage.name] = {k: v for k, v in items.items() if v}
    return bill


def markdown(bill: Bill) -> str:
    kinds = sorted({kind for items in bill.lines.values() for kind in items})
    head = "| stage | " + " | ".join(kinds) + " | total |"
    rule = "|---|" + "---:|" * (len(kinds) + 1)
    rows = [
        f"| {name} | {' | '.join(f'${items.get(kind, 0.0):.4f}' for kind in kinds)} | ${sum(items.values()):.4f} |"
        for name, items in bill.lines.items()
    ]
    return "\n".join(
        [
            f"Cost of {bill.messages:,} forwarded messages at list prices ({PRICES_DATE}), before free tiers:",
            "",
            head,
            rule,
            *rows,
            "| **all** | " + " | ".join("" for _ in kinds) + f" | **${bill.total:.4f}** |",
        ]
    )


# Assumptions the counts cannot give (stated in the report):
MAILGUN_API_SECONDS = 0.3  # a Mailgun API call from Cloud Functions; the local stand-in answers in about 1 ms
RELAY_VCPU = 1 / 3  # deploy.sh: relay --memory=512Mi without --cpu: Cloud Run functions' default for 512 MiB
INGEST_VCPU = 1.0  # deploy.sh: ingest --memory=512Mi --cpu=1
MEMORY_GIB = 0.5
TTL_DOCUMENTS_PER_MESSAGE = 2  # the delivery record and its token binding expire by TTL (a billed delete each)
LARGE_SHARE = 0.01  # messages over 9.5 MB (claim check): 1 in 100
LARGE_CLASS_A = 4  # a 25 MB claim-check upload: 1 resumable session + 3 pieces of 8 MiB
LARGE_CLASS_B = 1  # the relay's download


def stages_from_counts(
    ingest_seconds: float,
    relay_seconds: float,
    ingest_documents: dict[str, float],
    relay_documents: dict[str, float],
    pubsub_bytes: float,
) -> list[Stage]:
    """The two functions' shares of one message, from counted operations and measured times."""
    return [
        Stage(
            "ingest",
            INGEST_VCPU,
            MEMORY_GIB,
            ingest_seconds,
            pubsub_bytes=pubsub_bytes,
            pubsub_messages=1,
            firestore_reads=ingest_documents.get("reads", 0.0),
            firestore_writes=ingest_documents.get("writes", 0.0),
            gcs_class_a=LARGE_SHARE * LARGE_CLASS_A,
        ),
        Stage(
            "relay",
            RELAY_VCPU,
            MEMORY_GIB,
            relay_seconds + MAILGUN_API_SECONDS,
            pubsub_bytes=pubsub_bytes,
            pubsub_messages=1,
            firestore_reads=relay_documents.get("reads", 0.0),
            firestore_writes=relay_documents.get("writes", 0.0),
            firestore_deletes=relay_documents.get("deletes", 0.0) + TTL_DOCUMENTS_PER_MESSAGE,
            gcs_class_b=LARGE_SHARE * LARGE_CLASS_B,
        ),
    ]


ASSUMPTIONS = (
    f"Relay time per message = its measured handler time + {MAILGUN_API_SECONDS * 1000:.0f} ms for Mailgun's API "
    f"(the local stand-in answers at once); relay {RELAY_VCPU:.3g} vCPU and ingest {INGEST_VCPU:g} vCPU with "
    f"{MEMORY_GIB:g} GiB each (deploy.sh); every invocation billed alone, rounded up to 100 ms (an upper bound: "
    f"ingest's concurrency 8 shares instance time); {TTL_DOCUMENTS_PER_MESSAGE} TTL deletes per message; "
    f"{LARGE_SHARE:.0%} of messages over 9.5 MB go through the claim check ({LARGE_CLASS_A} Class A and "
    f"{LARGE_CLASS_B} Class B operations each)."
)
