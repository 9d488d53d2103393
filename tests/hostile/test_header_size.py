"""Class 2: header parsing costs time linear in the header block, and the block has a cap (406).

Reproduced on main: a Subject folded into 400,000 short lines took 18 s to parse at ingest
(continuation lines joined by repeated bytes concatenation); 2.5 MB passed the 60 s timeout.
"""

from __future__ import annotations

import time

import pytest

from tagrelay.core.errors import Undeliverable
from tagrelay.core.headers import MAX_HEADER_BLOCK_BYTES, check_header_block, parse_fields
from tagrelay.core.rewrite import rewrite
from tests.hostile import oracle
from tests.hostile.posts import ingest, mime, parsed


def folded_subject(octets: int) -> bytes:
    """A message whose Subject is folded into short lines, ``octets`` long in all."""
    lines = b" a\r\n" * (octets // 4)
    return b"From: a@b.example\r\nSubject: x\r\n" + lines + b"\r\nbody\r\n"


def best_of(runs: int, raw: bytes) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        parse_fields(raw[: raw.index(b"\r\n\r\n") + 2])
        times.append(time.perf_counter() - start)
    return min(times)


def test_parsing_time_grows_linearly_with_the_block() -> None:
    # 1 MiB against 4 MiB: linear is 4x, quadratic 16x; a wide margin keeps a busy machine from
    # failing it (bench/header_parse.py prints the 1 MiB / 2 MiB ratio: about 2).
    one, four = best_of(5, folded_subject(1 << 20)), best_of(3, folded_subject(4 << 20))
    assert four / one < 8.0, (one, four)
    assert one < 2.0, one  # main took 8 s for 1 MiB


def test_the_issue_s_400000_line_subject_parses_in_well_under_a_second_per_mb() -> None:
    raw = folded_subject(1_600_000)
    start = time.perf_counter()
    [_, subject] = parse_fields(raw[: raw.index(b"\r\n\r\n") + 2])
    assert time.perf_counter() - start < 3.0
    assert subject.raw.count(b"\n") == 400_001


def test_a_header_block_over_the_cap_is_refused_with_a_clear_406() -> None:
    check_header_block(folded_subject(MAX_HEADER_BLOCK_BYTES - 100))  # under: fine
    with pytest.raises(Undeliverable, match="header block over"):
        check_header_block(folded_subject(MAX_HEADER_BLOCK_BYTES + 100))
    h = ingest()
    response, published = h.post(*mime(folded_subject(MAX_HEADER_BLOCK_BYTES + 100)))
    assert (response.status, published) == (406, [])
    assert "header block over" in response.text


def test_parsed_form_headers_over_the_cap_are_refused_too() -> None:
    h = ingest()
    response, published = h.post(*parsed([["Subject", "a " * (MAX_HEADER_BLOCK_BYTES // 2)]]))
    assert (response.status, published) == (406, [])


def test_a_block_just_under_the_cap_goes_out_folded_as_it_came() -> None:
    raw = folded_subject(MAX_HEADER_BLOCK_BYTES - 100)
    out = rewrite(raw, "shop@example.org").mime
    assert oracle.long_lines(out) == []
    assert str(oracle.parsed(out, "compat32")["Subject"]).replace("\r\n", "") == str(
        oracle.parsed(raw, "compat32")["Subject"]
    ).replace("\r\n", "")
