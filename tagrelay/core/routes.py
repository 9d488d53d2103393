"""Routing rules: a TOML file → ``resolve(recipient) -> Forward | Reject``.

The rules file::

    fallback = "owner@gmail.com"          # optional: where unusable targets go
    blocked = ["leaked@example.org"]      # optional: aliases refused with 406

    [[route]]
    match = "{tag}@example.org"           # {name} captures part of the local part
    forward = "owner+{tag}@gmail.com"     # a string or a list of addresses
    fallback = "owner@gmail.com"          # optional, overrides the top-level one

Matching is case-insensitive and the first matching route wins. A sub-address
is split off before matching (``shop+promo@example.org`` matches like
``shop@example.org``) and is available to ``forward`` as ``{detail}``; a
pattern that itself contains ``+`` is matched against the whole address. A
target that is not a valid address (over 64 octets, characters not allowed)
goes to the fallback; a route without one falls back to its forward template
with the ``+{placeholder}`` parts removed (``owner+{tag}@gmail.com`` →
``owner@gmail.com``). Pure: the caller reads the file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

from tagrelay.core.errors import RoutesError
from tagrelay.core.headers import has_control_chars
from tagrelay.core.reverse import PREFIX as REVERSE_PREFIX
from tagrelay.core.spam import ACTIONS, SpamPolicy

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATEXT}(\.{_ATEXT})*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
ROUTE_KEYS = frozenset(
    {"match", "forward", "fallback", "name", "notify", "spam", "spam_threshold", "reply_name", "block_link"}
)
TOP_KEYS = frozenset({"route", "fallback", "blocked", "spam", "spam_threshold"})
DETAIL = "detail"
MAX_ADDRESS_OCTETS = 254  # RFC 5321's path limit, less the angle brackets


@dataclass(frozen=True)
class Rule:
    index: int  # 1-based position in the file
    line: int
    match: str
    forward: tuple[str, ...]
    fallback: str
    pattern: AddressPattern
    whole_address: bool  # the pattern has a "+": match the address with its sub-address
    notify: str = ""  # who is told when a message for this route cannot be delivered
    spam: SpamPolicy = field(default_factory=SpamPolicy)
    reply_name: str = ""  # display name of the alias on replies sent as it (issue 13)
    block_link: bool = False  # one-click block links for its aliases (issue 14)

    def describe(self) -> str:
        return f"route #{self.index} (line {self.line}): match = {self.match!r}"


@dataclass(frozen=True)
class Forward:
    recipient: str
    targets: tuple[str, ...]
    rule: Rule
    fallback_used: bool


@dataclass(frozen=True)
class Reject:
    recipient: str
    reason: str


@dataclass(frozen=True)
class Routes:
    rules: tuple[Rule, ...]
    blocked: frozenset[str]
    domains: frozenset[str]  # every domain a rule matches: ours, never a target

    def resolve(self, recipient: str) -> Forward | Reject:
        address = normalize(recipient)
        if address is None:
            return Reject(recipient, "not a usable address")
        local, domain = address.rsplit("@", 1)
        base_local, _, detail = local.partition("+")
        base = f"{base_local}@{domain}"
        if address in self.blocked or base in self.blocked:
            return Reject(recipient, "blocked alias")
        for rule in self.rules:
            captured = rule.pattern.match(address if rule.whole_address else base)
            if captured is None:
                continue
            values = {**captured, DETAIL: detail}
            targets = tuple(_expand(template, values) for template in rule.forward)
            if all(is_valid_address(t) for t in targets):
                return Forward(recipient, targets, rule, fallback_used=False)
            return Forward(recipient, (rule.fallback,), rule, fallback_used=True)
        return Reject(recipient, "no route matches")


def normalize(address: str) -> str | None:
    """Lower-case the address and write its domain in IDNA form; None if unusable."""
    address = address.strip().strip("<>").strip()
    if (
        has_control_chars(address)
        or address.count("@") != 1
        or len(address.encode("utf-8", "surrogatepass")) > MAX_ADDRESS_OCTETS
    ):
        return None
    local, _, domain = address.rpartition("@")
    if not local or not domain or any(c in address for c in ' ,;<>"\\'):
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local.lower()}@{domain.lower()}"


def is_valid_address(address: str) -> bool:
    """A deliverable plain address: dot-atom local part ≤ 64 octets, a real domain name."""
    local, at, domain = address.rpartition("@")
    if not at or len(address) > 254 or len(local.encode("utf-8")) > 64:
        return False
    if not _LOCAL_PART.fullmatch(local):
        return False
    labels = domain.lower().split(".")
    return len(domain) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


def load(text: str) -> Routes:
    """Parse and check a rules file. Raises RoutesError naming the line and the reason."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutesError(f"not valid TOML: {exc}") from None
    lines = _route_lines(text)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        line = _key_line(text, unknown[0]) or _table_line(text, unknown[0])
        raise RoutesError(f"line {line}: unknown top-level key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    top_fallback = data.get("fallback", "")
    if not isinstance(top_fallback, str):
        raise RoutesError(f"line {_key_line(text, 'fallback')}: fallback must be a string")
    routes = data.get("route", [])
    if not isinstance(routes, list) or not routes:
        raise RoutesError("no [[route]] tables: add at least one route")
    raw_rules = [(index, lines[index - 1] if index <= len(lines) else 0, r) for index, r in enumerate(routes, 1)]
    domains = frozenset(_match_domain(r, line) for _, line, r in raw_rules)
    default_spam = _spam_policy(data, SpamPolicy(), f"line {_key_line(text, 'spam')}")
    rules = tuple(_rule(text, index, line, r, top_fallback, domains, default_spam) for index, line, r in raw_rules)
    blocked = data.get("blocked", [])
    if not isinstance(blocked, list) or not all(isinstance(b, str) for b in blocked):
        raise RoutesError(f"line {_key_line(text, 'blocked')}: blocked must be a list of addresses")
    normalized = set()
    for item in blocked:
        address = normalize(item)
        if address is None:
            raise RoutesError(f"line {_key_line(text, 'blocked')}: blocked entry {item!r} is not an address")
        normalized.add(address)
    return Routes(rules=rules, blocked=frozenset(normalized), domains=domains)


def load_file(path: str) -> Routes:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise RoutesError(f"cannot read routes file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RoutesError(f"routes file {path} is not UTF-8") from None
    try:
        return load(text)
    except RoutesError as exc:
        raise RoutesError(f"{path}: {exc.reason}") from None


def _match_domain(raw: object, line: int) -> str:
    if not isinstance(raw, dict):
        raise RoutesError(f"line {line}: route must be a table")
    match = raw.get("match")
    if not isinstance(match, str) or match.count("@") != 1:
        raise RoutesError(f"line {line}: match must be one address pattern like '{{tag}}@example.org'")
    domain = match.rpartition("@")[2].lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise RoutesError(f"line {line}: match domain {domain!r} is not a domain name") from None


def _rule(
    text: str,
    index: int,
    line: int,
    raw: dict[str, object],
    top_fallback: str,
    domains: frozenset[str],
    default_spam: SpamPolicy,
) -> Rule:
    where = f"line {line}"
    unknown = sorted(set(raw) - ROUTE_KEYS)
    if unknown:
        key_line = _key_line(text, unknown[0], after=line) or line
        raise RoutesError(f"line {key_line}: unknown key(s) {unknown} in route #{index}; allowed: {sorted(ROUTE_KEYS)}")
    match = str(raw["match"])
    local, _, domain = match.rpartition("@")
    names = _PLACEHOLDER.findall(local)
    if len(names) != len(set(names)):
        raise RoutesError(f"{where}: a placeholder appears twice in match {match!r}")
    if DETAIL in names:
        raise RoutesError(f"{where}: {{detail}} is the sub-address; use another name in match")
    if not _LOCAL_PART.fullmatch(_PLACEHOLDER.sub("x", local).replace("*", "x")):
        raise RoutesError(f"{where}: match {match!r} has characters not allowed in an address")
    if local.lower().startswith(REVERSE_PREFIX):
        raise RoutesError(f"{where}: match {match!r} starts with {REVERSE_PREFIX!r}, reserved for reply addresses")
    reply_name = raw.get("reply_name", "")
    if not isinstance(reply_name, str) or has_control_chars(reply_name) or len(reply_name) > 100:
        raise RoutesError(f"{where}: reply_name must be one line of text (the name shown on replies)")
    forward_raw = raw.get("forward")
    if isinstance(forward_raw, str):
        forward: tuple[str, ...] = (forward_raw,)
    elif isinstance(forward_raw, list) and forward_raw and all(isinstance(f, str) for f in forward_raw):
        forward = tuple(forward_raw)
    else:
        raise RoutesError(f"{where}: forward must be an address or a non-empty list of addresses")
    allowed = set(names) | {DETAIL}
    for template in forward:
        used = set(_PLACEHOLDER.findall(template))
        if used - allowed:
            raise RoutesError(
                f"{where}: forward {template!r} uses {sorted(used - allowed)}, not captured by match {match!r}"
            )
        sample = _PLACEHOLDER.sub("x", template)
        if not is_valid_address(sample):
            raise RoutesError(f"{where}: forward {template!r} is not a valid address")
        _check_not_open(template, where)
        _check_not_ours(sample, domains, where, "forward")
    fallback_raw = raw.get("fallback", top_fallback) or _derived_fallback(forward[0])
    fallback = str(fallback_raw)
    if not is_valid_address(fallback) or _PLACEHOLDER.search(fallback):
        raise RoutesError(
            f'{where}: no usable fallback ({fallback!r}); set fallback = "you@example.com" '
            "for targets that would be invalid addresses"
        )
    _check_not_ours(fallback, domains, where, "fallback")
    notify = _notify(raw.get("notify", False), fallback, domains, where)
    block_link = raw.get("block_link", False)
    if not isinstance(block_link, bool):
        raise RoutesError(f"{where}: block_link must be true or false")
    return Rule(
        index=index,
        line=line,
        match=match,
        forward=forward,
        fallback=fallback.lower(),
        pattern=_compile(local, domain),
        whole_address="+" in local,
        notify=notify,
        spam=_spam_policy(raw, default_spam, where),
        reply_name=reply_name.strip(),
        block_link=block_link,
    )


def _spam_policy(raw: dict[str, object], default: SpamPolicy, where: str) -> SpamPolicy:
    action = raw.get("spam", default.action)
    threshold = raw.get("spam_threshold", default.threshold)
    if action not in ACTIONS:
        raise RoutesError(f"{where}: spam must be one of {', '.join(ACTIONS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise RoutesError(f"{where}: spam_threshold must be a number (Mailgun's spam score)")
    return SpamPolicy(action, float(threshold))


def _notify(value: object, fallback: str, domains: frozenset[str], where: str) -> str:
    """``notify = true`` tells the fallback address; a string names another address."""
    if value is False:
        return ""
    if value is True:
        return fallback.lower()
    if isinstance(value, str) and is_valid_address(value):
        _check_not_ours(value, domains, where, "notify")
        return value.lower()
    raise RoutesError(f"{where}: notify must be true, false or an address")


def _check_not_open(template: str, where: str) -> None:
    """Refuse a forward template that lets whoever writes to the alias choose where the copy goes.

    A placeholder in the domain (``owner@{tag}.com``) picks the domain; a mailbox made only of
    placeholders and separators (``{detail}@gmail.com``, ``{first}.{last}@gmail.com``,
    ``{a}+{b}@gmail.com``) picks any address there. The mailbox is the local part before its
    first literal ``+`` (the sub-address): it must hold a literal letter or digit.
    """
    local, _, domain = template.rpartition("@")
    if _PLACEHOLDER.search(domain) or "{" in domain or "}" in domain:
        raise RoutesError(
            f"{where}: forward {template!r} has a placeholder in its domain: a sender could choose the "
            "destination (an open relay); write the domain literally"
        )
    mailbox = local.partition("+")[0]  # placeholder names hold no "+"
    if not any(c.isalnum() for c in _PLACEHOLDER.sub("", mailbox)):
        raise RoutesError(
            f"{where}: forward {template!r} has a mailbox made only of placeholders: a sender could choose the "
            'destination (an open relay); put placeholders after a fixed mailbox, e.g. "owner+{tag}@gmail.com"'
        )


def _check_not_ours(address: str, domains: frozenset[str], where: str, key: str) -> None:
    if address.rpartition("@")[2].lower() in domains:
        raise RoutesError(f"{where}: {key} {address!r} is in a routed domain; that would loop")


def _derived_fallback(template: str) -> str:
    """``owner+{tag}@gmail.com`` → ``owner@gmail.com``: the template without its placeholders."""
    return _PLACEHOLDER.sub("", re.sub(r"[+.-]?\{[A-Za-z_][A-Za-z0-9_]*\}", "", template))


@dataclass(frozen=True)
class AddressPattern:
    """A ``match`` pattern as literal pieces around holes ({name} or *), each hole one or more characters.

    Matched left to right, taking the earliest place for each literal: linear in the
    address, where a regular expression with several lazy holes backtracks
    exponentially on long addresses that do not match.
    """

    pieces: tuple[str, ...]  # one more than holes; lower case
    holes: tuple[str | None, ...]  # capture name, or None for *
    domain: str  # IDNA, lower case

    def match(self, address: str) -> dict[str, str] | None:
        local, _, domain = address.rpartition("@")
        if domain != self.domain:
            return None
        return _match_local(self.pieces, self.holes, local)


def _match_local(pieces: tuple[str, ...], holes: tuple[str | None, ...], local: str) -> dict[str, str] | None:
    first, last = pieces[0], pieces[-1]
    if not holes:
        return {} if local == first else None
    end = len(local) - len(last)  # the last literal sits at the very end
    if not local.startswith(first) or not local.endswith(last) or end < len(first):
        return None
    values: dict[str, str] = {}
    position = len(first)
    for index, hole in enumerate(holes):
        if index == len(holes) - 1:
            stop = end
        else:
            piece = pieces[index + 1]
            later = pieces[index + 2 : -1]
            reserve = sum(len(p) for p in later) + len(holes) - index - 1  # later literals, later holes
            found = local.find(piece, position + 1, end - reserve) if piece else position + 1
            if found < 0:
                return None
            stop = found
        if stop - position < 1:
            return None
        if hole is not None:
            values[hole] = local[position:stop]
        position = stop + (len(pieces[index + 1]) if index < len(holes) - 1 else 0)
    return values


def _compile(local: str, domain: str) -> AddressPattern:
    parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\}|\*)", local)  # literal, hole, literal, ..., literal
    pieces = tuple(part.lower() for part in parts[0::2])
    holes = tuple(None if part == "*" else part[1:-1] for part in parts[1::2])
    return AddressPattern(pieces, holes, domain.lower().encode("idna").decode("ascii"))


def _expand(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template).lower()


def _route_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*route\s*\]\]", line)]


def _table_line(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*\[\[?\s*{re.escape(key)}\s*\]\]?", line):
            return n
    return 0


def _key_line(text: str, key: str, after: int = 0) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if n > after and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return 0
