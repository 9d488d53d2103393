"""Class 7: a rules file that would let a sender choose where the copy goes does not load.

Reproduced on main: ``forward = "{detail}@gmail.com"`` or ``"owner@{tag}.com"`` loaded fine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tagrelay.core import routes
from tagrelay.core.errors import RoutesError

ROOT = Path(__file__).resolve().parents[2]


def rules(forward: str) -> str:
    return f'fallback = "owner@gmail.com"\n\n[[route]]\nmatch = "{{a}}.{{tag}}@example.org"\nforward = "{forward}"\n'


@pytest.mark.parametrize(
    ("forward", "reason"),
    [
        ("{detail}@gmail.com", "mailbox made only of placeholders"),
        ("{tag}@gmail.com", "mailbox made only of placeholders"),
        ("{a}.{tag}@gmail.com", "mailbox made only of placeholders"),
        ("{a}+{tag}@gmail.com", "mailbox made only of placeholders"),
        ("{tag}-{detail}+x@gmail.com", "mailbox made only of placeholders"),
        ("owner@{tag}.com", "placeholder in its domain"),
        ("owner@gmail.{tag}", "placeholder in its domain"),
        ("owner+{tag}@mail-{a}.example", "placeholder in its domain"),
    ],
)
def test_a_route_a_sender_could_steer_is_refused_with_its_line(forward: str, reason: str) -> None:
    with pytest.raises(RoutesError) as refused:
        routes.load(rules(forward))
    assert refused.value.reason.startswith("line 3: ")
    assert reason in refused.value.reason


@pytest.mark.parametrize("forward", ["owner+{tag}@gmail.com", "owner+{a}.{tag}-{detail}@gmail.com", "o{tag}@gmail.com"])
def test_a_fixed_mailbox_with_placeholders_after_it_loads(forward: str) -> None:
    table = routes.load(rules(forward))
    resolved = table.resolve("x.evil+gmail.com@example.org")
    assert isinstance(resolved, routes.Forward)
    assert all(target.endswith("@gmail.com") for target in resolved.targets)


@pytest.mark.parametrize("path", ["routes.example.toml", "tests/data/routes.toml", "bench/routes.toml"])
def test_the_shipped_rules_files_still_load(path: str) -> None:
    assert routes.load((ROOT / path).read_text(encoding="utf-8")).rules
