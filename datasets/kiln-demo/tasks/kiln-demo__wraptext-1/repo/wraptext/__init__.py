"""wraptext: column-aware text wrapping."""

from .wrapper import TextWrapper, dedent, fill, indent, shorten, wrap
from .width import char_width, slice_to_width, text_width

__all__ = [
    "TextWrapper",
    "char_width",
    "dedent",
    "fill",
    "indent",
    "shorten",
    "slice_to_width",
    "text_width",
    "wrap",
]
