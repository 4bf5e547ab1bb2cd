"""Turns INI text into an ordered mapping of sections to raw values.

Values come out of the parser already unquoted and with inline comments
removed, but not yet interpolated: that happens lazily in `Config`.
"""

import re

from .errors import DuplicateKeyError, DuplicateSectionError, ParseError

DEFAULT_SECTION = "DEFAULT"

_SECTION_RE = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")
_OPTION_RE = re.compile(r"^(?P<key>[^=:\s][^=:]*?)\s*(?P<sep>[=:])\s*(?P<value>.*)$")


class ParserOptions:
    """Knobs that change how the text is read.

    comment_prefixes: characters that start a full-line comment.
    inline_comment_prefixes: characters that start a comment after a value;
        they only count when preceded by whitespace, so `a=b;c` keeps `b;c`.
    strict: reject duplicate sections and keys instead of merging them.
    lowercase_keys: fold keys to lower case (section names are kept).
    """

    def __init__(
        self,
        comment_prefixes="#;",
        inline_comment_prefixes=";#",
        strict=True,
        lowercase_keys=True,
    ):
        self.comment_prefixes = comment_prefixes
        self.inline_comment_prefixes = inline_comment_prefixes
        self.strict = strict
        self.lowercase_keys = lowercase_keys


def _strip_inline_comment(text, prefixes):
    if not prefixes:
        return text
    # A comment marker inside a quoted value is part of the value: only
    # look for comments after the closing quote.
    start = 0
    if text[:1] in ("'", '"'):
        closing = text.find(text[0], 1)
        if closing != -1:
            start = closing + 1
    for i in range(start, len(text)):
        if text[i] in prefixes and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip()
    return text


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _clean_value(raw, options):
    return _unquote(_strip_inline_comment(raw, options.inline_comment_prefixes).strip())


def parse(text, options=None):
    """Parse `text` and return `{section: {key: value}}`, in file order.

    Keys that appear before the first header go to the DEFAULT section.
    A line that starts with whitespace continues the previous value; the
    pieces are joined with newlines and blank continuation lines are kept
    only when something follows them.
    """
    options = options or ParserOptions()
    sections = {DEFAULT_SECTION: {}}
    current = sections[DEFAULT_SECTION]
    current_name = DEFAULT_SECTION
    last_key = None
    pending_blank = 0

    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()

        if not stripped:
            if last_key is not None:
                pending_blank += 1
            continue

        if stripped[0] in options.comment_prefixes:
            continue

        if line[0].isspace() and last_key is not None:
            piece = _clean_value(stripped, options)
            current[last_key] += "\n" * (pending_blank + 1) + piece
            pending_blank = 0
            continue

        pending_blank = 0
        header = _SECTION_RE.match(stripped)
        if header:
            current_name = header.group("name").strip()
            if current_name in sections and current_name != DEFAULT_SECTION:
                if options.strict:
                    raise DuplicateSectionError("duplicate section", lineno, line)
            current = sections.setdefault(current_name, {})
            last_key = None
            continue

        option = _OPTION_RE.match(stripped)
        if not option:
            raise ParseError("expected 'key = value' or '[section]'", lineno, line)

        key = option.group("key").strip()
        if options.lowercase_keys:
            key = key.lower()
        if key in current and options.strict:
            raise DuplicateKeyError(f"duplicate key in [{current_name}]", lineno, line)
        current[key] = _clean_value(option.group("value"), options)
        last_key = key

    return sections
