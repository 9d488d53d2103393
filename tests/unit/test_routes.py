"""tagrelay.core.routes: loading rules, resolving recipients, fallbacks, blocked aliases, load errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagrelay.core.errors import RoutesError
from tagrelay.core.routes import Forward, Reject, Routes, load, load_file
from tests.unit.support import ROOT

MINIMAL = """\
[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""

RULES = """\
fallback = "owner@gmail.com"
blocked = ["leaked@example.org", "Old.Shop@Example.org"]

[[route]]
match = "team@example.org"
forward = ["alice@gmail.com", "bob@gmail.com"]

[[route]]
match = "{tag}.alice@example.org"
forward = "alice+{tag}@gmail.com"
fallback = "alice@gmail.com"

[[route]]
match = "shop+{what}@example.org"
forward = "owner+shop-{what}@gmail.com"

[[route]]
match = "news-*@example.org"
forward = "owner+news@gmail.com"

[[route]]
match = "{tag}@example.net"
forward = "owner+net-{tag}-{detail}@gmail.com"

[[route]]
match = "{tag}@bücher.example"
forward = "owner+buch-{tag}@gmail.com"

[[route]]
match = "{tag}@example.org"
forward = "owner+{tag}@gmail.com"
"""


def targets(routes: Routes, recipient: str) -> tuple[str, ...]:
    result = routes.resolve(recipient)
    assert isinstance(result, Forward), result
    return result.targets


RULES_LOADED = load(RULES)


@pytest.fixture
def rules() -> Routes:
    return RULES_LOADED


def test_minimal_rules_forward_a_tag() -> None:
    routes = load(MINIMAL)
    result = routes.resolve("github@example.org")
    assert isinstance(result, Forward)
    assert result.targets == ("owner+github@gmail.com",)
    assert not result.fallback_used
    assert result.rule.index == 1 and result.rule.line == 1
    assert routes.domains == frozenset({"example.org"})


def test_minimal_rules_reject_another_domain() -> None:
    result = load(MINIMAL).resolve("github@example.com")
    assert isinstance(result, Reject)
    assert result.reason == "no route matches"


def test_first_matching_route_wins(rules: Routes) -> None:
    # team@ and x.alice@ also match the catch-all below them.
    assert targets(rules, "team@example.org") == ("alice@gmail.com", "bob@gmail.com")
    assert targets(rules, "github.alice@example.org") == ("alice+github@gmail.com",)
    assert targets(rules, "github@example.org") == ("owner+github@gmail.com",)


def test_placeholder_before_a_literal_suffix(rules: Routes) -> None:
    assert targets(rules, "a.b.alice@example.org") == ("alice+a.b@gmail.com",)
    assert targets(rules, "alice@example.org") == ("owner+alice@gmail.com",)  # {tag} needs a character


def test_exact_address_goes_to_a_list(rules: Routes) -> None:
    result = rules.resolve("team@example.org")
    assert isinstance(result, Forward)
    assert result.rule.index == 1 and result.rule.line == 4


def test_a_second_domain(rules: Routes) -> None:
    assert targets(rules, "bills@example.net") == ("owner+net-bills-@gmail.com",)


def test_wildcard_matches_without_capturing(rules: Routes) -> None:
    assert targets(rules, "news-weekly@example.org") == ("owner+news@gmail.com",)


@pytest.mark.parametrize("recipient", ["GitHub@Example.ORG", "GITHUB@EXAMPLE.ORG", " <github@example.org> "])
def test_matching_is_case_insensitive_and_targets_are_lower_case(rules: Routes, recipient: str) -> None:
    assert targets(rules, recipient) == ("owner+github@gmail.com",)


def test_sub_address_routes_like_the_base_address(rules: Routes) -> None:
    assert targets(rules, "github+promo@example.org") == ("owner+github@gmail.com",)
    assert targets(rules, "team+x@example.org") == ("alice@gmail.com", "bob@gmail.com")


def test_detail_is_the_sub_address(rules: Routes) -> None:
    assert targets(rules, "bills+march@example.net") == ("owner+net-bills-march@gmail.com",)


def test_pattern_with_plus_matches_the_whole_address(rules: Routes) -> None:
    assert targets(rules, "shop+promo@example.org") == ("owner+shop-promo@gmail.com",)
    assert targets(rules, "Shop+Promo@example.org") == ("owner+shop-promo@gmail.com",)


def test_shop_plus_promo_routes_as_shop_with_the_detail() -> None:
    routes = load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}.{detail}@gmail.com"\n')
    assert targets(routes, "shop+promo@example.org") == ("owner+shop.promo@gmail.com",)


def test_target_local_part_over_64_octets_goes_to_the_route_fallback(rules: Routes) -> None:
    result = rules.resolve("a" * 60 + ".alice@example.org")  # alice+aaa… is 66 octets
    assert isinstance(result, Forward)
    assert result.targets == ("alice@gmail.com",) and result.fallback_used


def test_target_at_exactly_64_octets_is_kept(rules: Routes) -> None:
    tag = "a" * (64 - len("owner+"))
    assert targets(rules, f"{tag}@example.org") == (f"owner+{tag}@gmail.com",)


@pytest.mark.parametrize("tag", ["a(b)", "a..b", "a:b", "[x]", "x."])
def test_target_with_characters_not_allowed_goes_to_the_fallback(rules: Routes, tag: str) -> None:
    result = rules.resolve(f"{tag}@example.org")
    assert isinstance(result, Forward)
    assert result.targets == ("owner@gmail.com",) and result.fallback_used


def test_route_without_fallback_derives_one_from_its_forward_template() -> None:
    routes = load(MINIMAL)
    result = routes.resolve("x" * 70 + "@example.org")
    assert isinstance(result, Forward)
    assert result.targets == ("owner@gmail.com",) and result.fallback_used


def test_derived_fallback_drops_every_placeholder_part() -> None:
    routes = load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}-{detail}@gmail.com"\n')
    assert routes.rules[0].fallback == "owner@gmail.com"


def test_route_fallback_overrides_the_top_level_one(rules: Routes) -> None:
    assert rules.rules[1].fallback == "alice@gmail.com"
    assert rules.rules[0].fallback == "owner@gmail.com"


@pytest.mark.parametrize(
    "recipient",
    [
        "leaked@example.org",
        "LEAKED@example.org",
        "leaked+anything@example.org",
        "old.shop@example.org",
        "Old.Shop+x@EXAMPLE.org",
    ],
)
def test_blocked_aliases_and_their_sub_addresses_are_rejected(rules: Routes, recipient: str) -> None:
    result = rules.resolve(recipient)
    assert isinstance(result, Reject)
    assert result.reason == "blocked alias"


def test_blocking_is_exact_not_a_prefix(rules: Routes) -> None:
    assert targets(rules, "leaked2@example.org") == ("owner+leaked2@gmail.com",)


@pytest.mark.parametrize("recipient", ["x@bücher.example", "X@XN--BCHER-KVA.EXAMPLE", "x@xn--bcher-kva.example"])
def test_idn_domain_routes_in_either_spelling(rules: Routes, recipient: str) -> None:
    assert targets(rules, recipient) == ("owner+buch-x@gmail.com",)


@pytest.mark.parametrize("recipient", ["josé@example.org", "müller@example.org", "用户@example.org"])
def test_non_ascii_local_part_falls_back(rules: Routes, recipient: str) -> None:
    result = rules.resolve(recipient)
    assert isinstance(result, Forward)
    assert result.targets == ("owner@gmail.com",) and result.fallback_used


@pytest.mark.parametrize(
    "recipient",
    [
        "",
        "@example.org",
        "user@",
        "no-at-sign",
        "a b@example.org",
        '"quoted"@example.org',
        "a@b@example.org",
        "x@.example.org",
        "x@" + "a" * 64 + ".org",
        "x@example.org\r\nBcc: y@z",
        "x@exa\x00mple.org",
        "x@\udcff.org",
    ],
)
def test_unusable_recipients_are_rejected_not_raised(rules: Routes, recipient: str) -> None:
    assert isinstance(rules.resolve(recipient), Reject)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text(max_size=80) | st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=40), st.text(max_size=40)))
def test_resolve_never_raises(recipient: str) -> None:
    result = RULES_LOADED.resolve(recipient)
    assert isinstance(result, Forward | Reject)
    if isinstance(result, Forward):
        assert all(re.fullmatch(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9.-]+", t) for t in result.targets)


# -- load errors -----------------------------------------------------------------------------


def load_error(text: str) -> str:
    with pytest.raises(RoutesError) as caught:
        load(text)
    return caught.value.reason


def test_unknown_route_key_names_its_line() -> None:
    text = MINIMAL + '\n[[route]]\nmatch = "x@example.org"\nfoward = "typo@gmail.com"\n'
    message = load_error(text)
    assert "line 7" in message and "foward" in message  # the typo's own line


def test_unknown_top_level_key_names_its_line() -> None:
    message = load_error(MINIMAL + '\nfallbak = "owner@gmail.com"\n')
    assert "fallbak" in message
    assert "line 5" in message


def test_forward_using_an_uncaptured_placeholder_names_its_line() -> None:
    message = load_error('# comment\n\n[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{name}@gmail.com"\n')
    assert "line 3" in message and "name" in message


def test_invalid_forward_address_names_its_line() -> None:
    message = load_error(MINIMAL + '\n[[route]]\nmatch = "x@example.net"\nforward = "not an address"\n')
    assert "line 5" in message and "not a valid address" in message


def test_missing_match_names_its_line() -> None:
    message = load_error(MINIMAL + '\n[[route]]\nforward = "owner@gmail.com"\n')
    assert "line 5" in message and "match" in message


def test_target_in_a_routed_domain_would_loop() -> None:
    message = load_error(MINIMAL + '\n[[route]]\nmatch = "x@example.net"\nforward = "x@example.org"\n')
    assert "line 5" in message and "loop" in message


def test_forward_into_a_routed_domain_names_the_loop_and_its_line() -> None:
    text = (
        '[[route]]\nmatch = "a@example.net"\nforward = "b@example.org"\n\n'
        '[[route]]\nmatch = "{t}@example.org"\nforward = "owner+{t}@gmail.com"\n'
    )
    message = load_error(text)
    assert "line 1" in message and "loop" in message


def test_fallback_in_a_routed_domain_would_loop() -> None:
    message = load_error('fallback = "postmaster@example.org"\n' + MINIMAL.replace("owner+{tag}", "owner-{tag}"))
    assert "line 2" in message and "loop" in message


def test_no_routes_at_all() -> None:
    assert "no [[route]]" in load_error('fallback = "owner@gmail.com"\n')
    assert "no [[route]]" in load_error("")


def test_bad_toml_names_its_line() -> None:
    message = load_error(MINIMAL + '\n[[route]]\nmatch = "unterminated\n')
    assert "TOML" in message and "line 6" in message


def test_blocked_entry_that_is_not_an_address_names_its_line() -> None:
    message = load_error('blocked = ["nobody"]\n' + MINIMAL)
    assert "line 1" in message and "nobody" in message


def test_detail_cannot_be_captured_in_match() -> None:
    assert "line 1" in load_error('[[route]]\nmatch = "{detail}@example.org"\nforward = "o+{detail}@gmail.com"\n')


def test_load_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{zzz}@gmail.com"\n', encoding="utf-8")
    with pytest.raises(RoutesError) as caught:
        load_file(str(path))
    assert str(path) in caught.value.reason and "line 1" in caught.value.reason


def test_load_file_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="cannot read"):
        load_file(str(tmp_path / "absent.toml"))


# -- the example file in the repository ------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> Routes:
    return load_file(str(ROOT / "routes.example.toml"))


@pytest.mark.parametrize(
    ("recipient", "expected"),
    [
        ("github@example.org", ("owner+github@gmail.com",)),  # "Check a rule with: tagrelay route github@…"
        ("team@example.org", ("alice@gmail.com", "bob@gmail.com")),
        ("anything.alice@example.org", ("alice+anything@gmail.com",)),
        ("bills@example.net", ("owner+net-bills@gmail.com",)),
        ("shop+promo@example.org", ("owner+shop@gmail.com",)),  # matches like shop@example.org
        ("x" * 70 + "@example.org", ("owner@gmail.com",)),  # the top-level fallback
        ("y" * 70 + ".alice@example.org", ("alice@gmail.com",)),  # the route's own fallback
    ],
)
def test_example_rules_resolve_as_documented(example: Routes, recipient: str, expected: tuple[str, ...]) -> None:
    assert targets(example, recipient) == expected


@pytest.mark.parametrize("recipient", ["leaked@example.org", "leaked+again@example.org"])
def test_example_rules_block_the_leaked_alias(example: Routes, recipient: str) -> None:
    result = example.resolve(recipient)
    assert isinstance(result, Reject) and result.reason == "blocked alias"


def test_example_rules_reject_unknown_domains(example: Routes) -> None:
    assert isinstance(example.resolve("x@example.com"), Reject)
