"""inifile: a small, strict INI reader."""

from .config import Config, load, loads
from .errors import (
    DuplicateKeyError,
    DuplicateSectionError,
    InterpolationError,
    MissingKeyError,
    ParseError,
)

__all__ = [
    "Config",
    "DuplicateKeyError",
    "DuplicateSectionError",
    "InterpolationError",
    "MissingKeyError",
    "ParseError",
    "load",
    "loads",
]

__version__ = "0.4.1"
