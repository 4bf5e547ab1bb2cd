import pytest

from inifile import InterpolationError, loads


def test_same_section_reference():
    cfg = loads("[s]\nhost = h\nport = 1\nurl = http://${host}:${port}/\n")
    assert cfg.get("s", "url") == "http://h:1/"


def test_cross_section_reference():
    cfg = loads("[paths]\nroot = /srv\n[app]\nlogs = ${paths:root}/logs\n")
    assert cfg.get("app", "logs") == "/srv/logs"


def test_reference_to_default():
    cfg = loads("base = /opt\n[app]\nbin = ${base}/bin\n")
    assert cfg.get("app", "bin") == "/opt/bin"


def test_nested_references():
    cfg = loads("[s]\na = x\nb = ${a}${a}\nc = ${b}-${b}\n")
    assert cfg.get("s", "c") == "xx-xx"


def test_dollar_escape():
    cfg = loads("[s]\nprice = $$5 and ${cur}\ncur = EUR\n")
    assert cfg.get("s", "price") == "$5 and EUR"


def test_raw_skips_interpolation():
    cfg = loads("[s]\na = ${b}\nb = 1\n")
    assert cfg.raw("s", "a") == "${b}"


def test_missing_reference():
    cfg = loads("[s]\na = ${nope}\n")
    with pytest.raises(InterpolationError, match="nope"):
        cfg.get("s", "a")


def test_cycle_is_reported():
    cfg = loads("[s]\na = ${b}\nb = ${a}\n")
    with pytest.raises(InterpolationError, match="deeper"):
        cfg.get("s", "a")
