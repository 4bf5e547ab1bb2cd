import pytest

from semrange import InvalidVersion, Version


def test_parse_and_str_round_trip():
    for text in ["0.0.0", "1.2.3", "10.20.30-rc.1", "1.0.0-alpha+001", "1.0.0+20130313144700"]:
        assert str(Version.parse(text)) == text


def test_leading_v_is_accepted():
    assert Version.parse("v1.2.3") == Version(1, 2, 3)


@pytest.mark.parametrize("text", ["1", "1.2", "01.2.3", "1.2.3-01", "1.2.3-", "a.b.c", "1.2.3.4"])
def test_invalid_versions(text):
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_precedence_chain_from_the_spec():
    chain = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    versions = [Version.parse(v) for v in chain]
    assert sorted(reversed(versions)) == versions


def test_build_metadata_is_ignored_in_comparisons():
    assert Version.parse("1.0.0+a") == Version.parse("1.0.0+b")
    assert len({Version.parse("1.0.0+a"), Version.parse("1.0.0")}) == 1


def test_versions_are_immutable():
    v = Version(1, 2, 3)
    with pytest.raises(AttributeError):
        v.major = 2


def test_bump():
    v = Version.parse("1.2.3")
    assert str(v.bump("major")) == "2.0.0"
    assert str(v.bump("minor")) == "1.3.0"
    assert str(v.bump("patch")) == "1.2.4"
    assert str(Version.parse("1.2.3-rc.1").bump("patch")) == "1.2.3"
    with pytest.raises(ValueError):
        v.bump("micro")
