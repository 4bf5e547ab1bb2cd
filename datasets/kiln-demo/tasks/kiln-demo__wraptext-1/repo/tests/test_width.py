from wraptext import char_width, slice_to_width, text_width


def test_ascii_is_one_column_per_character():
    assert text_width("hello") == 5


def test_wide_characters_take_two_columns():
    assert char_width("日") == 2
    assert text_width("日本語") == 6
    assert text_width("ｆｕｌｌ") == 8


def test_combining_marks_take_no_columns():
    assert text_width("e\u0301te\u0301") == 3
    assert char_width("\u200b") == 0


def test_slice_to_width_ascii():
    assert slice_to_width("abcdef", 4) == ("abcd", "ef")
    assert slice_to_width("abc", 10) == ("abc", "")


def test_slice_to_width_never_splits_a_wide_character():
    assert slice_to_width("日本語", 3) == ("日", "本語")
    assert slice_to_width("a日本", 2) == ("a", "日本")


def test_slice_to_width_keeps_combining_mark_with_its_letter():
    assert slice_to_width("e\u0301x", 1) == ("e\u0301", "x")
