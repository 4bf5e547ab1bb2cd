"""Splitting text into the chunks the wrapper places on lines."""

import re

# A word may be split after a hyphen that has letters on both sides, so
# "well-known" can break as "well-" / "known" but "--verbose" and "-5" stay.
_HYPHENATED = re.compile(r"(?<=[^\W\d_])-(?=[^\W\d_])")
_WHITESPACE = re.compile(r"(\s+)")


def expand_tabs(text, tabsize):
    return text.expandtabs(tabsize)


def normalize_whitespace(text):
    """Turn every whitespace character into a plain space."""
    return re.sub(r"\s", " ", text)


def split_chunks(text, break_on_hyphens=True):
    """Split into alternating word and whitespace chunks, dropping empties."""
    chunks = []
    for piece in _WHITESPACE.split(text):
        if not piece:
            continue
        if piece.isspace() or not break_on_hyphens:
            chunks.append(piece)
            continue
        start = 0
        for m in _HYPHENATED.finditer(piece):
            chunks.append(piece[start : m.end()])
            start = m.end()
        chunks.append(piece[start:])
    return chunks


def fix_sentence_endings(chunks):
    """Put two spaces after a sentence end, as some house styles want."""
    ending = re.compile(r"[a-z][.!?][\"']?$")
    for i in range(len(chunks) - 1):
        if chunks[i + 1] == " " and ending.search(chunks[i]):
            chunks[i + 1] = "  "
    return chunks
