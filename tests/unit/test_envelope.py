"""tagrelay.core.envelope: the tagrelay.v1 Pub/Sub schema and the CloudEvent data of a push."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import flask
import pytest
from functions_framework.event_conversion import background_event_to_cloud_event

from tagrelay.core.envelope import (
    MAX_ATTRIBUTE_BYTES,
    SCHEMA,
    Envelope,
    decode,
    delivery_key,
    digest_of,
    encode,
    from_cloud_event_data,
)
from tagrelay.core.errors import SchemaError
from tagrelay.core.inbound import InboundMessage
from tests.unit.support import corpus

RECEIVED = datetime(2023, 11, 14, 22, 13, 30, tzinfo=UTC)
PUBLISH_TIME = "2024-01-01T00:00:00.123456789Z"


def inbound(name: str = "12-shift-jis.eml", **changes: Any) -> InboundMessage:
    values: dict[str, Any] = {
        "recipient": "friends.alice@example.org",
        "sender": "suzuki@kaisha.example.jp",
        "mime": corpus(name),
        "token": "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf",
        "timestamp": 1700000000,
        "form_kind": "mime",
        "spam_flag": "No",
        "spam_score": "0.2",
        **changes,
    }
    return InboundMessage(**values)


def test_encode_gives_the_raw_bytes_and_the_schema_attributes() -> None:
    data, attributes = encode(inbound(), RECEIVED)
    assert data == corpus("12-shift-jis.eml")
    assert attributes == {
        "schema": SCHEMA,
        "recipient": "friends.alice@example.org",
        "sender": "suzuki@kaisha.example.jp",
        "token": "a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf",
        "message_id": "<20240605.kaigi.0001@kaisha.example.jp>",
        "received_at": "2023-11-14T22:13:30+00:00",
        "spam_flag": "No",
        "spam_score": "0.2",
        "digest": hashlib.sha256(corpus("12-shift-jis.eml")).hexdigest(),
    }


def test_schema_is_tagrelay_v1() -> None:
    assert SCHEMA == "tagrelay.v1"


def test_received_at_is_written_in_utc() -> None:
    other_zone = datetime.fromisoformat("2023-11-15T00:13:30+02:00")
    assert encode(inbound(), other_zone)[1]["received_at"] == "2023-11-14T22:13:30+00:00"


def test_empty_attributes_are_left_out() -> None:
    _, attributes = encode(inbound("26-no-message-id.eml", sender="", spam_flag="", spam_score=""), RECEIVED)
    assert set(attributes) == {"schema", "recipient", "token", "received_at", "digest"}


def test_folded_message_id_is_unfolded() -> None:
    _, attributes = encode(inbound("18-folded-headers.eml"), RECEIVED)
    assert attributes["message_id"] == "<build-8812@ci.github.example>"


@pytest.mark.parametrize("name", ["11-iso-8859-1-8bit.eml", "22-binary-cte.eml", "48-empty-body.eml"])
def test_encode_decode_round_trip(name: str) -> None:
    data, attributes = encode(inbound(name), RECEIVED)
    envelope = decode(data, attributes)
    assert envelope == Envelope(
        recipient="friends.alice@example.org",
        sender="suzuki@kaisha.example.jp",
        mime=corpus(name),
        token="a71d0000ed34da6768198da96f9daaf8fb98adbccfdbd2fdaf",
        message_id=attributes.get("message_id", ""),
        received_at="2023-11-14T22:13:30+00:00",
        spam_flag="No",
        spam_score="0.2",
        digest=hashlib.sha256(corpus(name)).hexdigest(),
    )
    assert envelope.attributes() == attributes


def test_claim_round_trips() -> None:
    envelope = Envelope(recipient="a@example.org", sender="", mime=b"", claim="gs://bucket/object")
    assert decode(b"", envelope.attributes()).claim == "gs://bucket/object"


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"recipient": "a@example.org"},
        {"schema": "tagrelay.v2", "recipient": "a@example.org"},
        {"schema": "TAGRELAY.V1", "recipient": "a@example.org"},
    ],
    ids=["none", "no-schema", "other-version", "other-case"],
)
def test_decode_rejects_another_schema(attributes: dict[str, str]) -> None:
    with pytest.raises(SchemaError, match="schema"):
        decode(b"x", attributes)


@pytest.mark.parametrize("attributes", [{"schema": SCHEMA}, {"schema": SCHEMA, "recipient": ""}])
def test_decode_rejects_a_missing_recipient(attributes: dict[str, str]) -> None:
    with pytest.raises(SchemaError, match="recipient"):
        decode(b"x", attributes)


def test_over_long_attribute_values_are_cut_to_1024_bytes() -> None:
    assert MAX_ATTRIBUTE_BYTES == 1024
    long_ascii = "<" + "a" * 2000 + "@x.example>"
    long_multibyte = "a" + "é" * 700  # 1401 bytes; the 1024th byte is inside an "é"
    envelope = Envelope(recipient="r@example.org", sender=long_multibyte, mime=b"", message_id=long_ascii)
    attributes = envelope.attributes()
    assert attributes["message_id"] == long_ascii[:1024]
    # 1 + 511 * 2 = 1023 bytes: a 512th "é" would need bytes 1024 and 1025, so it is dropped whole.
    assert attributes["sender"] == "a" + "é" * 511
    assert attributes["recipient"] == "r@example.org"


def test_values_at_the_limit_are_kept_whole() -> None:
    exact = "é" * 512  # 1024 bytes
    assert Envelope(recipient="r@example.org", sender=exact, mime=b"").attributes()["sender"] == exact


# -- the CloudEvent data of a Pub/Sub push ---------------------------------------------------


def push_body(data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """The body a Pub/Sub push subscription posts to the relay's URL."""
    return {
        "message": {
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": attributes,
            "messageId": "9876543210",
            "message_id": "9876543210",
            "publishTime": PUBLISH_TIME,
            "publish_time": PUBLISH_TIME,
        },
        "subscription": "projects/demo/subscriptions/tagrelay-relay",
    }


def framework_data(body: dict[str, Any]) -> Any:
    """What functions-framework hands the relay as ``cloud_event.data`` for that push."""
    app = flask.Flask(__name__)
    with app.test_request_context("/", method="POST", json=body):
        return background_event_to_cloud_event(flask.request).data


def literal_data(data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """The same shape written out: the framework drops subscription, message_id and publish_time."""
    return {
        "message": {
            "@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": attributes,
            "messageId": "9876543210",
            "publishTime": PUBLISH_TIME,
        }
    }


def test_framework_conversion_has_the_documented_shape() -> None:
    data, attributes = encode(inbound(), RECEIVED)
    assert framework_data(push_body(data, attributes)) == literal_data(data, attributes)


@pytest.mark.parametrize("source", ["framework", "literal"])
def test_from_cloud_event_data_decodes_a_push(source: str) -> None:
    data, attributes = encode(inbound("11-iso-8859-1-8bit.eml"), RECEIVED)
    event_data = (
        framework_data(push_body(data, attributes)) if source == "framework" else literal_data(data, attributes)
    )
    delivery = from_cloud_event_data(event_data)
    assert delivery.envelope == decode(data, attributes)
    assert delivery.envelope.mime == corpus("11-iso-8859-1-8bit.eml")
    assert delivery.pubsub_id == "9876543210"
    assert delivery.publish_time == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def test_publish_time_without_fraction_or_zone() -> None:
    data, attributes = encode(inbound(), RECEIVED)
    event_data = literal_data(data, attributes)
    event_data["message"]["publishTime"] = "2024-01-01T00:00:00"
    assert from_cloud_event_data(event_data).publish_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_missing_publish_time_is_none() -> None:
    data, attributes = encode(inbound(), RECEIVED)
    event_data = literal_data(data, attributes)
    del event_data["message"]["publishTime"]
    assert from_cloud_event_data(event_data).publish_time is None


@pytest.mark.parametrize(
    "event_data",
    [
        None,
        "a string",
        {},
        {"message": "not a dict"},
        {"message": {"data": "aGk=", "attributes": {"schema": "other.v1", "recipient": "a@example.org"}}},
        {"message": {"data": "aGk=", "attributes": {"schema": SCHEMA}}},
        {"message": {"data": "aGk=", "attributes": {"schema": SCHEMA, "recipient": 5}}},
        {"message": {"data": "aGk=", "attributes": ["schema", SCHEMA]}},
        {"message": {"data": "not base64!", "attributes": {"schema": SCHEMA, "recipient": "a@example.org"}}},
        {"message": {"data": "aGk", "attributes": {"schema": SCHEMA, "recipient": "a@example.org"}}},
        {"message": {"data": 12, "attributes": {"schema": SCHEMA, "recipient": "a@example.org"}}},
    ],
    ids=[
        "none",
        "string",
        "empty",
        "message-not-dict",
        "wrong-schema",
        "missing-recipient",
        "non-string-attribute",
        "attributes-list",
        "bad-base64",
        "bad-padding",
        "data-not-string",
    ],
)
def test_anything_else_is_a_schema_error(event_data: Any) -> None:
    with pytest.raises(SchemaError):
        from_cloud_event_data(event_data)


# -- delivery identity (issue 15: never the sender-chosen Message-ID) ----------------------------


def _key(alias: str, targets: tuple[str, ...], mime: bytes) -> str:
    return delivery_key(alias, targets, hashlib.sha256(mime).hexdigest())


def test_two_messages_with_the_same_message_id_have_different_identities() -> None:
    real = b"Message-ID: <pr-1@github.example>\r\nSubject: real\r\n\r\nbody\r\n"
    forged = b"Message-ID: <pr-1@github.example>\r\nSubject: forged\r\n\r\nbody\r\n"
    assert _key("a@example.org", ("o@gmail.com",), real) != _key("a@example.org", ("o@gmail.com",), forged)


def test_identity_covers_alias_and_targets_and_ignores_their_case_and_order() -> None:
    mime = b"Subject: x\r\n\r\nbody\r\n"
    base = _key("A@example.org", ("x@gmail.com", "y@gmail.com"), mime)
    assert base == _key("a@example.org", ("y@gmail.com", "X@gmail.com"), mime)
    assert base != _key("b@example.org", ("x@gmail.com", "y@gmail.com"), mime)
    assert base != _key("a@example.org", ("x@gmail.com",), mime)


@pytest.mark.parametrize("digest", ["", "abc", "G" * 64, "a" * 63, "A" * 64])
def test_delivery_key_refuses_anything_but_a_sha256_hex_digest(digest: str) -> None:
    with pytest.raises(SchemaError):
        delivery_key("a@example.org", ("o@gmail.com",), digest)


def test_digest_attribute_round_trips_and_claims_need_one() -> None:
    data, attributes = encode(inbound(), RECEIVED, claim="gs://b/claims/x.eml")
    envelope = decode(data, attributes)
    assert digest_of(envelope) == hashlib.sha256(corpus("12-shift-jis.eml")).hexdigest()
    without = {k: v for k, v in attributes.items() if k != "digest"}
    with pytest.raises(SchemaError):
        digest_of(decode(data, without))
