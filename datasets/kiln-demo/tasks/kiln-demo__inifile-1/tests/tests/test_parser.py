import pytest

from inifile import DuplicateKeyError, DuplicateSectionError, ParseError, loads


def test_sections_and_keys_in_file_order():
    cfg = loads("[b]\nx = 1\n[a]\ny = 2\n")
    assert cfg.sections() == ["b", "a"]
    assert cfg.get("b", "x") == "1"
    assert cfg.get("a", "y") == "2"


def test_colon_separator_and_spacing():
    cfg = loads("[s]\nname:value\nother  =   spaced out  \n")
    assert cfg.get("s", "name") == "value"
    assert cfg.get("s", "other") == "spaced out"


def test_keys_are_case_insensitive():
    cfg = loads("[s]\nHost = a\n")
    assert cfg.get("s", "host") == "a"
    assert cfg.get("s", "HOST") == "a"


def test_full_line_comments_are_ignored():
    cfg = loads("# top\n[s]\n; note\nk = v\n  # indented comment\n")
    assert cfg.keys("s") == ["k"]


def test_inline_comment_is_stripped():
    cfg = loads("[s]\ntimeout = 30 ; seconds\nname = web # primary\n")
    assert cfg.get("s", "timeout") == "30"
    assert cfg.get("s", "name") == "web"


def test_semicolon_without_space_is_kept():
    cfg = loads("[s]\npath = a;b;c\n")
    assert cfg.get("s", "path") == "a;b;c"


def test_quoted_value_keeps_spaces():
    cfg = loads("[s]\npad = '  x  '\nempty = \"\"\n")
    assert cfg.get("s", "pad") == "  x  "
    assert cfg.get("s", "empty") == ""


def test_quoted_value_may_contain_comment_characters():
    cfg = loads('[s]\nmotto = "work ; play"\ncolor = \'#ff0000\'\nlabel = \'red #ff0000\'\n')
    assert cfg.get("s", "motto") == "work ; play"
    assert cfg.get("s", "color") == "#ff0000"
    assert cfg.get("s", "label") == "red #ff0000"


def test_quoted_value_followed_by_inline_comment():
    cfg = loads('[s]\nsep = " ; " ; the separator\n')
    assert cfg.get("s", "sep") == " ; "


def test_continuation_lines():
    cfg = loads("[s]\nmotd = first\n  second\n\n  third\nnext = 1\n")
    assert cfg.get("s", "motd") == "first\nsecond\n\nthird"
    assert cfg.get("s", "next") == "1"


def test_trailing_blank_lines_not_part_of_value():
    cfg = loads("[s]\nk = v\n\n\n[t]\n")
    assert cfg.get("s", "k") == "v"


def test_duplicate_section_rejected_in_strict_mode():
    with pytest.raises(DuplicateSectionError):
        loads("[s]\na = 1\n[s]\nb = 2\n")


def test_duplicate_section_merged_when_not_strict():
    cfg = loads("[s]\na = 1\n[s]\nb = 2\n", strict=False)
    assert cfg.keys("s") == ["a", "b"]


def test_duplicate_key_rejected():
    with pytest.raises(DuplicateKeyError) as err:
        loads("[s]\na = 1\nA = 2\n")
    assert err.value.lineno == 3


def test_garbage_line_reports_line_number():
    with pytest.raises(ParseError) as err:
        loads("[s]\nok = 1\nthis is not an option\n")
    assert err.value.lineno == 3
    assert "line 3" in str(err.value)
