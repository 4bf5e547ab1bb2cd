"""Exceptions raised by inifile."""


class IniError(Exception):
    """Base class of every error raised by this package."""


class ParseError(IniError):
    """The text is not valid INI."""

    def __init__(self, message, lineno, line):
        super().__init__(f"line {lineno}: {message}: {line!r}")
        self.lineno = lineno
        self.line = line


class DuplicateSectionError(ParseError):
    """A section header appears twice (only in strict mode)."""


class DuplicateKeyError(ParseError):
    """A key appears twice in one section (only in strict mode)."""


class MissingKeyError(IniError, KeyError):
    """A lookup names a section or key that does not exist."""

    def __init__(self, section, key=None):
        where = section if key is None else f"{section}.{key}"
        super().__init__(f"no such option: {where}")
        self.section = section
        self.key = key

    def __str__(self):
        return self.args[0]


class InterpolationError(IniError):
    """A ${...} reference cannot be resolved."""
