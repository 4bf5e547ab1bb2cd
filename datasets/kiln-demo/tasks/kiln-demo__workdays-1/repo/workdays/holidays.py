"""Holiday rules.

A rule is written as text:
  "MM-DD"            a fixed date every year, e.g. "12-25"
  "MM-DD observed"   same, moved to Friday/Monday when it falls on Sat/Sun
  "easter+N"         N days after (or before, with a minus) Easter Sunday
  "N<weekday> MM"    the Nth weekday of a month, e.g. "1mon 09"; N may be
                     "last", e.g. "lastmon 05"
"""

import datetime
import re

_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_FIXED = re.compile(r"^(\d{2})-(\d{2})(\s+observed)?$")
_EASTER = re.compile(r"^easter([+-]\d+)?$")
_NTH = re.compile(r"^(\d|last)(mon|tue|wed|thu|fri|sat|sun)\s+(\d{2})$")


def easter_sunday(year):
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    month, day = divmod(h + l - 7 * m + 114, 31)
    return datetime.date(year, month, day + 1)


def _nth_weekday(year, month, weekday, n):
    if n == "last":
        nxt = datetime.date(year + month // 12, month % 12 + 1, 1)
        day = nxt - datetime.timedelta(days=1)
        return day - datetime.timedelta(days=(day.weekday() - weekday) % 7)
    first = datetime.date(year, month, 1)
    day = first + datetime.timedelta(days=(weekday - first.weekday()) % 7)
    day += datetime.timedelta(weeks=int(n) - 1)
    if day.month != month:
        raise ValueError(f"there is no weekday #{n} in {year}-{month:02d}")
    return day


class Rule:
    def __init__(self, text, resolve):
        self.text = text
        self._resolve = resolve

    def date_in(self, year):
        return self._resolve(year)

    def __repr__(self):
        return f"Rule({self.text!r})"


def parse_rule(text):
    spec = text.strip().lower()
    m = _FIXED.match(spec)
    if m:
        month, day, observed = int(m.group(1)), int(m.group(2)), bool(m.group(3))
        datetime.date(2000, month, day)  # validates; 2000 is a leap year

        def fixed(year):
            date = datetime.date(year, month, day)
            if observed and date.weekday() == 5:
                return date - datetime.timedelta(days=1)
            if observed and date.weekday() == 6:
                return date + datetime.timedelta(days=1)
            return date

        return Rule(text, fixed)
    m = _EASTER.match(spec)
    if m:
        offset = int(m.group(1) or 0)
        return Rule(text, lambda year: easter_sunday(year) + datetime.timedelta(days=offset))
    m = _NTH.match(spec)
    if m:
        n, weekday, month = m.group(1), _WEEKDAYS.index(m.group(2)), int(m.group(3))
        if not 1 <= month <= 12 or n == "0":
            raise ValueError(f"invalid holiday rule: {text!r}")
        return Rule(text, lambda year: _nth_weekday(year, month, weekday, n))
    raise ValueError(f"invalid holiday rule: {text!r}")
