"""Display width of text in terminal columns."""

import unicodedata


def char_width(ch):
    """Columns taken by one code point: 0, 1 or 2."""
    if unicodedata.combining(ch):
        return 0
    category = unicodedata.category(ch)
    if category in ("Cc", "Cf", "Mn", "Me") or ch == "\u200b":
        return 0
    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 2
    return 1


def text_width(text):
    """Columns taken by `text` on one line."""
    return sum(char_width(ch) for ch in text)


def slice_to_width(text, width):
    """Split `text` into (head, tail) where head is the longest prefix that
    fits in `width` columns. Zero-width characters stay with the character
    they follow."""
    used = 0
    for i, ch in enumerate(text):
        w = char_width(ch)
        if used + w > width:
            return text[:i], text[i:]
        used += w
    return text, ""
