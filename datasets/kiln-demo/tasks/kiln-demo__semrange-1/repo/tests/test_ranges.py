import pytest

from semrange import InvalidVersion, Range, max_satisfying, satisfies


@pytest.mark.parametrize(
    "rng, version, expected",
    [
        ("1.2.3", "1.2.3", True),
        ("=1.2.3", "1.2.4", False),
        (">1.2.3", "1.2.4", True),
        ("<=1.2.3", "1.2.3", True),
        (">= 1.2.3 < 2", "1.9.9", True),
        (">=1.2.3 <2", "2.0.0", False),
        ("1.x", "1.9.0", True),
        ("1.2.x", "1.3.0", False),
        ("*", "3.4.5", True),
        ("", "0.0.1", True),
        (">1.2", "1.2.9", False),
        (">1.2", "1.3.0", True),
        ("<=1.2", "1.2.9", True),
    ],
    ids=lambda value: str(value).replace(" ", "_") or "empty",
)
def test_primitives_and_x_ranges(rng, version, expected):
    assert satisfies(version, rng) is expected


@pytest.mark.parametrize(
    "rng, inside, outside",
    [
        ("~1.2.3", "1.2.9", "1.3.0"),
        ("~1.2", "1.2.0", "1.3.0"),
        ("~1", "1.9.9", "2.0.0"),
        ("~0.2.3", "0.2.4", "0.3.0"),
    ],
    ids=["tilde-patch", "tilde-minor", "tilde-major", "tilde-zero"],
)
def test_tilde(rng, inside, outside):
    assert satisfies(inside, rng)
    assert not satisfies(outside, rng)


@pytest.mark.parametrize(
    "rng, inside, outside",
    [
        ("^1.2.3", "1.9.0", "2.0.0"),
        ("^1.2.3", "1.2.3", "1.2.2"),
        ("^1.x", "1.0.0", "2.0.0"),
        ("^0.2.3", "0.2.9", "0.3.0"),
        ("^0.2", "0.2.0", "0.3.0"),
        ("^0.0", "0.0.7", "0.1.0"),
        ("^0", "0.9.9", "1.0.0"),
    ],
    ids=["major", "lower-bound", "x-minor", "zero-major", "zero-major-partial", "zero-minor-partial", "zero"],
)
def test_caret(rng, inside, outside):
    assert satisfies(inside, rng)
    assert not satisfies(outside, rng)


def test_hyphen_ranges():
    assert satisfies("2.3.4", "1.2.3 - 2.3.4")
    assert not satisfies("2.3.5", "1.2.3 - 2.3.4")
    assert satisfies("2.3.9", "1.2 - 2.3")
    assert not satisfies("2.4.0", "1.2 - 2.3")
    assert not satisfies("1.1.9", "1.2 - 2.3")


def test_or_sets():
    rng = Range("<1.0.0 || >=2.1 <3")
    assert rng.test("0.5.0")
    assert rng.test("2.5.0")
    assert not rng.test("1.5.0")
    assert not rng.test("3.0.0")


def test_prereleases_need_opt_in():
    assert not satisfies("1.3.0-beta.1", "^1.2.0")
    assert satisfies("1.3.0-beta.1", "^1.2.0", include_prerelease=True)
    assert satisfies("1.2.4-rc.2", ">=1.2.4-rc.1 <1.3")
    assert not satisfies("1.2.5-rc.2", ">=1.2.4-rc.1 <1.3")


def test_max_satisfying():
    versions = ["1.2.3", "1.2.10", "1.3.0", "2.0.0", "1.4.0-rc.1"]
    assert max_satisfying(versions, "~1.2") == "1.2.10"
    assert max_satisfying(versions, "^1") == "1.3.0"
    assert max_satisfying(versions, "^1", include_prerelease=True) == "1.4.0-rc.1"
    assert max_satisfying(versions, ">=3") is None


def test_range_str_shows_comparators():
    assert str(Range("^1.2.3")) == ">=1.2.3 <2.0.0"
    assert str(Range("~1.2 || 3.x")) == ">=1.2.0 <1.3.0 || >=3.0.0 <4.0.0"


def test_invalid_range():
    with pytest.raises(InvalidVersion):
        Range("^one.two")
