"""The wrapping algorithm and its convenience functions."""

import re

from .tokens import expand_tabs, fix_sentence_endings, normalize_whitespace, split_chunks
from .width import slice_to_width, text_width


class TextWrapper:
    """Greedy line filling, measured in display columns.

    width: the maximum columns of a line, indent included.
    initial_indent / subsequent_indent: prefixes of the first / other lines.
    break_long_words: split words wider than a line; otherwise they overflow.
    break_on_hyphens: allow breaks after hyphens inside words.
    drop_whitespace: drop spaces at the start and end of lines.
    max_lines: keep at most this many lines, ending the last with placeholder.
    """

    def __init__(
        self,
        width=70,
        initial_indent="",
        subsequent_indent="",
        expand_tabs=True,
        tabsize=8,
        replace_whitespace=True,
        fix_sentence_endings=False,
        break_long_words=True,
        break_on_hyphens=True,
        drop_whitespace=True,
        max_lines=None,
        placeholder=" [...]",
    ):
        self.width = width
        self.initial_indent = initial_indent
        self.subsequent_indent = subsequent_indent
        self.expand_tabs = expand_tabs
        self.tabsize = tabsize
        self.replace_whitespace = replace_whitespace
        self.fix_sentence_endings = fix_sentence_endings
        self.break_long_words = break_long_words
        self.break_on_hyphens = break_on_hyphens
        self.drop_whitespace = drop_whitespace
        self.max_lines = max_lines
        self.placeholder = placeholder

    def _chunks(self, text):
        if self.expand_tabs:
            text = expand_tabs(text, self.tabsize)
        if self.replace_whitespace:
            text = normalize_whitespace(text)
        chunks = split_chunks(text, self.break_on_hyphens)
        if self.fix_sentence_endings:
            chunks = fix_sentence_endings(chunks)
        return chunks

    def _break_long_word(self, chunks, line, line_width, width):
        """The next chunk does not fit on an empty line: take what fits."""
        space_left = max(width - line_width, 1)
        if self.break_long_words:
            head, tail = slice_to_width(chunks[-1], space_left)
            if not head:
                if line:
                    # Only a wide character is left and it needs two
                    # columns: start it on the next line instead.
                    return
                head, tail = chunks[-1][:1], chunks[-1][1:]
            chunks[-1] = tail
            line.append(head)
        elif not line:
            line.append(chunks.pop())

    def wrap(self, text):
        """Wrap `text` into a list of lines without trailing newlines."""
        if self.width <= 0:
            raise ValueError(f"invalid width {self.width!r} (must be > 0)")
        if self.max_lines is not None:
            indent = self.subsequent_indent if self.max_lines > 1 else self.initial_indent
            if text_width(indent) + text_width(self.placeholder.lstrip()) > self.width:
                raise ValueError("placeholder too large for max width")

        chunks = self._chunks(text)
        chunks.reverse()
        lines = []
        while chunks:
            indent = self.subsequent_indent if lines else self.initial_indent
            width = self.width - text_width(indent)
            if width < 1:
                raise ValueError("indent leaves no room for text")
            if self.drop_whitespace and lines and chunks[-1].strip() == "":
                chunks.pop()
                if not chunks:
                    break

            line, line_width = [], 0
            while chunks:
                w = text_width(chunks[-1])
                if line_width + w > width:
                    break
                line.append(chunks.pop())
                line_width += w

            if chunks and text_width(chunks[-1]) > width:
                self._break_long_word(chunks, line, line_width, width)
                line_width = text_width("".join(line))

            if self.drop_whitespace and line and line[-1].strip() == "":
                line_width -= text_width(line.pop())
            if not line:
                continue

            if self.max_lines is None or len(lines) + 1 < self.max_lines or (
                not chunks or (self.drop_whitespace and len(chunks) == 1 and not chunks[0].strip())
            ):
                lines.append(indent + "".join(line))
                continue

            lines.append(self._with_placeholder(indent, line, width, lines))
            break
        return lines

    def _with_placeholder(self, indent, line, width, lines):
        """The last allowed line: make room for the placeholder."""
        while line:
            if line[-1].strip() and text_width("".join(line)) + text_width(self.placeholder) <= width:
                return indent + "".join(line) + self.placeholder
            line.pop()
        if lines:
            previous = lines[-1].rstrip()
            if text_width(previous) + text_width(self.placeholder) <= self.width:
                lines.pop()
                return previous + self.placeholder
        head, _ = slice_to_width(self.placeholder.lstrip(), width)
        return indent + head

    def fill(self, text):
        return "\n".join(self.wrap(text))


def wrap(text, width=70, **kwargs):
    return TextWrapper(width=width, **kwargs).wrap(text)


def fill(text, width=70, **kwargs):
    return TextWrapper(width=width, **kwargs).fill(text)


def shorten(text, width, **kwargs):
    """Collapse whitespace and cut `text` to fit in one line of `width`."""
    text = " ".join(text.strip().split())
    return TextWrapper(width=width, max_lines=1, **kwargs).fill(text)


_MARGIN = re.compile(r"^[ \t]*(?=[^ \t\n])", re.MULTILINE)


def dedent(text):
    """Remove the whitespace prefix shared by every non-blank line."""
    margins = _MARGIN.findall(text)
    if not margins:
        return text
    common = margins[0]
    for margin in margins[1:]:
        while not margin.startswith(common):
            common = common[:-1]
    if not common:
        return text
    return "\n".join(line[len(common) :] if line.strip() else line.strip(" \t") for line in text.split("\n"))


def indent(text, prefix, predicate=None):
    """Add `prefix` to the lines for which predicate(line) is true
    (by default the lines that are not blank)."""
    if predicate is None:
        predicate = str.strip
    return "".join(prefix + line if predicate(line) else line for line in text.splitlines(True))
