"""Expansion of ${key} and ${section:key} references."""

import re

from .errors import InterpolationError

MAX_DEPTH = 10

_REF_RE = re.compile(r"\$(?:\$|\{(?P<ref>[^}]*)\})")


def expand(value, section, lookup, depth=0):
    """Expand the references in `value`, read in the context of `section`.

    `lookup(section, key)` returns the raw (unexpanded) value or raises
    KeyError. References are expanded recursively, up to MAX_DEPTH levels,
    which is also how cycles are caught.
    """
    if "$" not in value:
        return value
    if depth > MAX_DEPTH:
        raise InterpolationError(
            f"references nested deeper than {MAX_DEPTH} levels (a cycle?) in [{section}]"
        )

    def replace(match):
        ref = match.group("ref")
        if ref is None:
            return "$"
        ref = ref.strip()
        if not ref:
            raise InterpolationError(f"empty reference in [{section}]: {value!r}")
        if ":" in ref:
            target_section, _, key = ref.partition(":")
            target_section = target_section.strip()
        else:
            target_section, key = section, ref
        key = key.strip().lower()
        try:
            raw = lookup(target_section, key)
        except KeyError:
            raise InterpolationError(
                f"bad reference ${{{ref}}} in [{section}]: no such option"
            ) from None
        return expand(raw, target_section, lookup, depth + 1)

    return _REF_RE.sub(replace, value)
