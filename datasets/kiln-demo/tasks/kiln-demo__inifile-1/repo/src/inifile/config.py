"""The Config object: typed, interpolated access to parsed INI data."""

from .errors import MissingKeyError
from .interpolation import expand
from .parser import DEFAULT_SECTION, ParserOptions, parse

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_MISSING = object()


class Config:
    """Parsed INI data.

    Lookups fall back to the DEFAULT section, so a key defined there is
    visible in every section unless the section overrides it.
    """

    def __init__(self, sections=None):
        self._sections = sections or {DEFAULT_SECTION: {}}
        self._sections.setdefault(DEFAULT_SECTION, {})

    # -- structure ---------------------------------------------------------

    def sections(self):
        """Section names in file order, without DEFAULT."""
        return [name for name in self._sections if name != DEFAULT_SECTION]

    def has_section(self, section):
        return section in self._sections and section != DEFAULT_SECTION

    def keys(self, section):
        """Keys visible in `section`: its own, then inherited defaults."""
        own = self._section(section)
        inherited = [k for k in self._sections[DEFAULT_SECTION] if k not in own]
        return list(own) + inherited

    def has_option(self, section, key):
        try:
            self.raw(section, key)
        except MissingKeyError:
            return False
        return True

    def items(self, section):
        return [(key, self.get(section, key)) for key in self.keys(section)]

    def as_dict(self):
        return {name: dict(self.items(name)) for name in self.sections()}

    # -- lookups -----------------------------------------------------------

    def raw(self, section, key):
        """The value as written in the file, without interpolation."""
        key = key.lower()
        own = self._section(section)
        if key in own:
            return own[key]
        defaults = self._sections[DEFAULT_SECTION]
        if key in defaults:
            return defaults[key]
        raise MissingKeyError(section, key)

    def get(self, section, key, default=_MISSING):
        try:
            value = self.raw(section, key)
        except MissingKeyError:
            if default is _MISSING:
                raise
            return default
        return expand(value, section, self.raw)

    def getint(self, section, key, default=_MISSING):
        return self._typed(section, key, default, int)

    def getfloat(self, section, key, default=_MISSING):
        return self._typed(section, key, default, float)

    def getbool(self, section, key, default=_MISSING):
        return self._typed(section, key, default, _to_bool)

    def getlist(self, section, key, default=_MISSING, sep=","):
        """Split on `sep` and on newlines, dropping empty items."""

        def split(value):
            items = []
            for line in value.splitlines():
                items.extend(part.strip() for part in line.split(sep))
            return [item for item in items if item]

        return self._typed(section, key, default, split)

    # -- mutation ----------------------------------------------------------

    def set(self, section, key, value):
        if section != DEFAULT_SECTION:
            self._sections.setdefault(section, {})
        self._section(section)[key.lower()] = str(value)

    def remove_option(self, section, key):
        own = self._section(section)
        try:
            del own[key.lower()]
        except KeyError:
            raise MissingKeyError(section, key) from None

    # -- internals ---------------------------------------------------------

    def _section(self, section):
        try:
            return self._sections[section]
        except KeyError:
            raise MissingKeyError(section) from None

    def _typed(self, section, key, default, convert):
        try:
            value = self.get(section, key)
        except MissingKeyError:
            if default is _MISSING:
                raise
            return default
        try:
            return convert(value)
        except ValueError:
            raise ValueError(
                f"[{section}] {key} = {value!r} is not a valid {getattr(convert, '__name__', 'value')}"
            ) from None


def _to_bool(value):
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(value)


_to_bool.__name__ = "bool"


def loads(text, **options):
    """Parse INI text. Keyword arguments are passed to ParserOptions."""
    return Config(parse(text, ParserOptions(**options)))


def load(fp, **options):
    """Parse an open text file."""
    return loads(fp.read(), **options)
