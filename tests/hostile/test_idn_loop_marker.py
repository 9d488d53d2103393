"""Class 6: the loop marker is written and compared in one form (IDNA, lower case).

Reproduced on main: the check compared the Unicode form while the marker carried the IDNA form,
so mail for an IDN domain looped.
"""

from __future__ import annotations

import dataclasses

import pytest

from tagrelay.core import routes
from tagrelay.core.rewrite import has_loop_marker, rewrite
from tests.hostile import oracle
from tests.hostile.posts import ingest, mime

FORMS = ["b\u00fccher.example", "xn--bcher-kva.example", "B\u00dcCHER.Example", "XN--BCHER-KVA.EXAMPLE"]


@pytest.mark.parametrize("alias_domain", FORMS)
@pytest.mark.parametrize("checked_domain", FORMS)
def test_a_forwarded_copy_is_seen_as_a_loop_in_either_form(alias_domain: str, checked_domain: str) -> None:
    out = rewrite(b"From: a@b.example\r\n\r\nx", f"shop@{alias_domain}").mime
    assert oracle.parsed(out, "compat32")["X-Tagrelay-Loop"] == "xn--bcher-kva.example"
    assert has_loop_marker(out, checked_domain)


@pytest.mark.parametrize(
    "marker", [b"b\xc3\xbccher.example", b"=?utf-8?q?b=C3=BCcher.example?=", b"XN--BCHER-KVA.example"]
)
def test_a_marker_written_in_unicode_by_an_older_hop_is_seen_too(marker: bytes) -> None:
    raw = b"X-Tagrelay-Loop: " + marker + b"\r\nFrom: a@b.example\r\n\r\nx"
    assert has_loop_marker(raw, "xn--bcher-kva.example")
    assert has_loop_marker(raw, "b\u00fccher.example")
    assert not has_loop_marker(raw, "example.org")


def test_ingest_refuses_the_loop_for_a_routed_idn_domain() -> None:
    routes_toml = '[[route]]\nmatch = "{tag}@b\u00fccher.example"\nforward = "owner+{tag}@gmail.com"\n'
    h = ingest()
    h.ingest.config = dataclasses.replace(h.ingest.config, routes=routes.load(routes_toml))
    raw = b"X-Tagrelay-Loop: b\xc3\xbccher.example\r\nFrom: a@b.example\r\n\r\nx"
    response, published = h.post(*mime(raw, recipient="shop@xn--bcher-kva.example"))
    assert (response.status, published) == (406, [])
    assert "loop" in response.text
