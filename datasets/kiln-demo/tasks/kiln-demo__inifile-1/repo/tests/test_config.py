import io

import pytest

import inifile
from inifile import MissingKeyError

SAMPLE = """
workers = 4
debug = off

[server]
host = example.org
port = 8080
ratio = 0.75
debug = yes
tags = web, api,
  internal

[client]
retries = three
"""


@pytest.fixture
def cfg():
    return inifile.loads(SAMPLE)


def test_defaults_are_inherited(cfg):
    assert cfg.getint("client", "workers") == 4
    assert cfg.keys("client") == ["retries", "workers", "debug"]


def test_section_overrides_default(cfg):
    assert cfg.getbool("server", "debug") is True
    assert cfg.getbool("client", "debug") is False


def test_typed_getters(cfg):
    assert cfg.getint("server", "port") == 8080
    assert cfg.getfloat("server", "ratio") == pytest.approx(0.75)


def test_getlist_splits_on_separator_and_newlines(cfg):
    assert cfg.getlist("server", "tags") == ["web", "api", "internal"]


def test_bad_int_names_the_option(cfg):
    with pytest.raises(ValueError, match=r"\[client\] retries"):
        cfg.getint("client", "retries")


def test_missing_key_and_default(cfg):
    with pytest.raises(MissingKeyError):
        cfg.get("server", "nope")
    assert cfg.get("server", "nope", default=None) is None
    assert cfg.getint("server", "nope", default=7) == 7


def test_missing_section(cfg):
    with pytest.raises(KeyError):
        cfg.get("nowhere", "host")
    assert not cfg.has_section("nowhere")
    assert not cfg.has_option("nowhere", "host")


def test_set_and_remove(cfg):
    cfg.set("new", "Key", 12)
    assert cfg.getint("new", "key") == 12
    cfg.remove_option("new", "key")
    assert not cfg.has_option("new", "key")


def test_as_dict(cfg):
    data = cfg.as_dict()
    assert data["server"]["host"] == "example.org"
    assert data["client"]["workers"] == "4"


def test_load_from_file():
    cfg = inifile.load(io.StringIO("[a]\nb = c\n"))
    assert cfg.get("a", "b") == "c"
