"""npm-style version ranges: `^1.2.3`, `~1.2`, `1.x`, `>=1 <2`, `1.0 - 2.0`, `a || b`.

A range is a list of comparator sets joined by `||`; a version satisfies
the range when it satisfies every comparator of at least one set.
"""

import operator
import re

from .version import InvalidVersion, Version, _parse_identifier

_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
}

_PARTIAL_RE = re.compile(
    r"""^v?
    (?P<major>\d+|[xX*])
    (?:\.(?P<minor>\d+|[xX*])
    (?:\.(?P<patch>\d+|[xX*])
    (?:-(?P<pre>[0-9A-Za-z.-]+))?)?)?
    (?:\+[0-9A-Za-z.-]+)?
    $""",
    re.VERBOSE,
)
_SIMPLE_RE = re.compile(r"^(?P<op><=|>=|<|>|=|\^|~>?)?\s*(?P<partial>\S+)$")
_HYPHEN_RE = re.compile(r"^\s*(?P<low>\S+)\s+-\s+(?P<high>\S+)\s*$")


class Comparator:
    __slots__ = ("op", "version")

    def __init__(self, op, version):
        self.op = op
        self.version = version

    def test(self, version):
        return _OPS[self.op](version, self.version)

    def __str__(self):
        return f"{self.op}{self.version}"

    def __repr__(self):
        return f"Comparator({str(self)!r})"


def _parse_partial(text):
    """Return [major, minor, patch, prerelease] with None for wildcards."""
    m = _PARTIAL_RE.match(text)
    if not m:
        raise InvalidVersion(f"invalid version in range: {text!r}")
    parts = []
    for name in ("major", "minor", "patch"):
        value = m.group(name)
        if value is None or value in "xX*":
            # Everything after a wildcard is a wildcard too: 1.x.3 == 1.x.
            parts.extend([None] * (3 - len(parts)))
            break
        parts.append(int(value))
    pre = m.group("pre")
    prerelease = tuple(_parse_identifier(p) for p in pre.split(".")) if pre and parts[2] is not None else ()
    return parts + [prerelease]


def _floor(major, minor, patch, pre=()):
    return Version(major or 0, minor or 0, patch or 0, pre)


def _x_range(major, minor, patch, pre):
    if major is None:
        return []
    if minor is None:
        return [Comparator(">=", Version(major)), Comparator("<", Version(major + 1))]
    if patch is None:
        return [Comparator(">=", Version(major, minor)), Comparator("<", Version(major, minor + 1))]
    return [Comparator("=", Version(major, minor, patch, pre))]


def _tilde(major, minor, patch, pre):
    if major is None:
        return []
    low = Comparator(">=", _floor(major, minor, patch, pre))
    if minor is None:
        return [low, Comparator("<", Version(major + 1))]
    return [low, Comparator("<", Version(major, minor + 1))]


def _caret(major, minor, patch, pre):
    """Allow changes that do not modify the left-most non-zero part."""
    if major is None:
        return []
    low = Comparator(">=", _floor(major, minor, patch, pre))
    if major > 0 or minor is None:
        high = Version(major + 1)
    else:
        high = Version(0, minor + 1)
    return [low, Comparator("<", high)]


def _primitive(op, major, minor, patch, pre):
    if op == "=":
        return _x_range(major, minor, patch, pre)
    if major is None:
        # `<*` matches nothing, `>=*` everything.
        return [Comparator("<", Version(0, 0, 0, (0,)))] if op in ("<", ">") else []
    if patch is not None:
        return [Comparator(op, Version(major, minor, patch, pre))]
    # A partial version stands for the whole span it covers.
    if minor is None:
        first, after = Version(major), Version(major + 1)
    else:
        first, after = Version(major, minor), Version(major, minor + 1)
    if op == ">":
        return [Comparator(">=", after)]
    if op == ">=":
        return [Comparator(">=", first)]
    if op == "<":
        return [Comparator("<", first)]
    return [Comparator("<", after)]  # "<="


def _hyphen(low_text, high_text):
    low = _parse_partial(low_text)
    high = _parse_partial(high_text)
    comparators = []
    if low[0] is not None:
        comparators.append(Comparator(">=", _floor(*low)))
    if high[0] is not None:
        comparators.extend(_primitive("<=", *high))
    return comparators


def _parse_set(text):
    hyphen = _HYPHEN_RE.match(text)
    if hyphen:
        return _hyphen(hyphen.group("low"), hyphen.group("high"))
    # Allow a space between an operator and its version: ">= 1.2".
    text = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", text.strip())
    comparators = []
    for token in text.split():
        m = _SIMPLE_RE.match(token)
        if not m:
            raise InvalidVersion(f"invalid comparator: {token!r}")
        op = m.group("op") or "="
        parts = _parse_partial(m.group("partial"))
        if op == "^":
            comparators.extend(_caret(*parts))
        elif op.startswith("~"):
            comparators.extend(_tilde(*parts))
        else:
            comparators.extend(_primitive(op, *parts))
    return comparators


class Range:
    """A parsed range. `Range("^1.2").test("1.4.0")` is True."""

    def __init__(self, text):
        self.text = text
        self.sets = [_parse_set(part) for part in text.split("||")]

    def test(self, version, include_prerelease=False):
        if isinstance(version, str):
            version = Version.parse(version)
        return any(self._test_set(s, version, include_prerelease) for s in self.sets)

    @staticmethod
    def _test_set(comparators, version, include_prerelease):
        if not all(c.test(version) for c in comparators):
            return False
        if not version.is_prerelease or include_prerelease:
            return True
        # A prerelease only matches when the range itself names a prerelease
        # of the same major.minor.patch: opting in to 1.2.3-beta does not
        # opt in to every prerelease that happens to sort in range.
        return any(
            c.version.is_prerelease and c.version.release() == version.release() for c in comparators
        )

    def __contains__(self, version):
        return self.test(version)

    def __str__(self):
        return " || ".join(" ".join(str(c) for c in s) or "*" for s in self.sets)

    def __repr__(self):
        return f"Range({self.text!r})"


def satisfies(version, range_text, include_prerelease=False):
    return Range(range_text).test(version, include_prerelease)


def max_satisfying(versions, range_text, include_prerelease=False):
    """The highest of `versions` (strings or Version) in range, or None."""
    rng = Range(range_text)
    best = None
    for candidate in versions:
        parsed = Version.parse(candidate) if isinstance(candidate, str) else candidate
        if rng.test(parsed, include_prerelease) and (best is None or parsed > best[0]):
            best = (parsed, candidate)
    return None if best is None else best[1]
