import pytest

from wraptext import TextWrapper, fill, text_width, wrap

PANGRAM = "The quick brown fox jumps over the lazy dog"


def test_greedy_fill():
    assert wrap(PANGRAM, width=15) == ["The quick brown", "fox jumps over", "the lazy dog"]


def test_fill_joins_with_newlines():
    assert fill(PANGRAM, width=20) == "The quick brown fox\njumps over the lazy\ndog"


def test_whitespace_is_normalised():
    assert wrap("a\tb\n c", width=80, expand_tabs=False) == ["a b  c"]


def test_empty_and_blank_text():
    assert wrap("", width=10) == []
    assert wrap("   ", width=10) == []


def test_indents_count_towards_width():
    lines = wrap(PANGRAM, width=16, initial_indent="* ", subsequent_indent="  ")
    assert lines == ["* The quick", "  brown fox", "  jumps over the", "  lazy dog"]
    assert all(len(line) <= 16 for line in lines)


def test_long_words_are_broken():
    assert wrap("abcdefghij klm", width=4) == ["abcd", "efgh", "ij", "klm"]


def test_long_words_overflow_when_not_breaking():
    assert wrap("abcdefghij klm", width=4, break_long_words=False) == ["abcdefghij", "klm"]


def test_break_on_hyphens():
    assert wrap("a well-known fact", width=8) == ["a well-", "known", "fact"]
    assert wrap("a well-known fact", width=8, break_on_hyphens=False) == ["a well-k", "nown", "fact"]


def test_hyphen_rules_for_option_names():
    assert wrap("use --no-color", width=6) == ["use", "--no-", "color"]
    assert wrap("use --verbose", width=6) == ["use --", "verbos", "e"]


def test_wide_words_wrap_by_columns():
    lines = wrap("日本語 テキスト 折り返し", width=10)
    assert lines == ["日本語", "テキスト", "折り返し"]
    assert all(text_width(line) <= 10 for line in lines)


def test_wide_long_word_is_broken_by_columns():
    lines = wrap("日本語のテキストを折り返すテスト", width=10)
    assert lines == ["日本語のテ", "キストを折", "り返すテス", "ト"]


def test_wide_long_word_after_short_word():
    lines = wrap("see 東京都千代田区丸の内", width=9)
    assert lines == ["see 東京", "都千代田", "区丸の内"]
    assert all(text_width(line) <= 9 for line in lines)


def test_wide_character_never_straddles_the_margin():
    lines = wrap("ab日本語", width=3)
    assert lines == ["ab", "日", "本", "語"]


def test_fill_with_wide_text_and_indent():
    text = fill("中文字符串没有空格需要折行", width=12, initial_indent="- ", subsequent_indent="  ")
    assert text == "- 中文字符串\n  没有空格需\n  要折行"


def test_max_lines_with_placeholder():
    lines = wrap("one two three four five six seven", width=12, max_lines=2)
    assert lines == ["one two", "three [...]"]


def test_max_lines_not_reached():
    assert wrap("one two", width=12, max_lines=2) == ["one two"]


def test_fix_sentence_endings():
    wrapper = TextWrapper(width=80, fix_sentence_endings=True)
    assert wrapper.fill("Hello there. How are you?") == "Hello there.  How are you?"


def test_invalid_width():
    with pytest.raises(ValueError):
        wrap("text", width=0)
    with pytest.raises(ValueError):
        wrap("text", width=3, max_lines=1, placeholder=" [more]")
