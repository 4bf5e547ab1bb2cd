"""Semantic versions (https://semver.org/ 2.0.0)."""

import functools
import re

_VERSION_RE = re.compile(
    r"""^v?
    (?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)
    (?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    (?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    $""",
    re.VERBOSE,
)


class InvalidVersion(ValueError):
    """Text that is not a valid version or range."""


def _parse_identifier(part):
    if part.isdigit():
        if len(part) > 1 and part[0] == "0":
            raise InvalidVersion(f"numeric identifier with a leading zero: {part!r}")
        return int(part)
    return part


@functools.total_ordering
class Version:
    """An immutable semantic version.

    Build metadata is kept for display but ignored by comparisons, as the
    specification requires.
    """

    __slots__ = ("major", "minor", "patch", "prerelease", "build")

    def __init__(self, major, minor=0, patch=0, prerelease=(), build=()):
        if min(major, minor, patch) < 0:
            raise InvalidVersion("version numbers cannot be negative")
        object.__setattr__(self, "major", major)
        object.__setattr__(self, "minor", minor)
        object.__setattr__(self, "patch", patch)
        object.__setattr__(self, "prerelease", tuple(prerelease))
        object.__setattr__(self, "build", tuple(build))

    def __setattr__(self, name, value):
        raise AttributeError("Version is immutable")

    @classmethod
    def parse(cls, text):
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise InvalidVersion(f"invalid version: {text!r}")
        pre = m.group("pre")
        build = m.group("build")
        return cls(
            int(m.group("major")),
            int(m.group("minor")),
            int(m.group("patch")),
            tuple(_parse_identifier(p) for p in pre.split(".")) if pre else (),
            tuple(build.split(".")) if build else (),
        )

    @property
    def is_prerelease(self):
        return bool(self.prerelease)

    def release(self):
        """The same version without prerelease and build parts."""
        return Version(self.major, self.minor, self.patch)

    def bump(self, part):
        """The next version of the given part: 'major', 'minor' or 'patch'."""
        if part == "major":
            return Version(self.major + 1)
        if part == "minor":
            return Version(self.major, self.minor + 1)
        if part == "patch":
            # 1.2.3-rc.1 is released as 1.2.3, not 1.2.4.
            if self.prerelease:
                return self.release()
            return Version(self.major, self.minor, self.patch + 1)
        raise ValueError(f"unknown version part: {part!r}")

    def _key(self):
        # A release sorts after all its prereleases; within a prerelease,
        # numeric identifiers sort before alphanumeric ones.
        if not self.prerelease:
            pre = (1,)
        else:
            pre = (0,) + tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, pre)

    def __eq__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other):
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self):
        return hash(self._key())

    def __str__(self):
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(str(p) for p in self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text

    def __repr__(self):
        return f"Version({str(self)!r})"
