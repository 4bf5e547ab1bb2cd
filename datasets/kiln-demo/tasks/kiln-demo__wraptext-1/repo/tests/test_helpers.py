from wraptext import dedent, indent, shorten


def test_shorten_fits():
    assert shorten("Hello  world!", width=12) == "Hello world!"


def test_shorten_adds_placeholder():
    assert shorten("Hello  world, how are you?", width=14) == "Hello [...]"
    assert shorten("Hello world, how are you?", width=20, placeholder="...") == "Hello world, how..."


def test_dedent_common_margin():
    text = "    def f():\n        return 1\n"
    assert dedent(text) == "def f():\n    return 1\n"


def test_dedent_ignores_blank_lines():
    assert dedent("  a\n\n    b\n  \n  c") == "a\n\n  b\n\nc"


def test_dedent_no_common_margin():
    assert dedent("a\n  b") == "a\n  b"


def test_indent_skips_blank_lines_by_default():
    assert indent("a\n\nb\n", "> ") == "> a\n\n> b\n"


def test_indent_with_predicate():
    assert indent("a\n\nb", "+ ", lambda line: True) == "+ a\n+ \n+ b"
