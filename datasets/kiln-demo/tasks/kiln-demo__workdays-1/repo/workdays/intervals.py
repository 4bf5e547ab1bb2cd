"""Closed date intervals: both the first and the last day are included."""

import datetime
import re

from .arith import business_days_between
from .calendar import WEEKENDS_ONLY, as_date

_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?$")


class DateInterval:
    __slots__ = ("start", "end")

    def __init__(self, start, end):
        start, end = as_date(start), as_date(end)
        if end < start:
            raise ValueError(f"interval ends before it starts: {start} > {end}")
        self.start = start
        self.end = end

    @classmethod
    def parse(cls, text):
        """ISO 8601 'start/end' or 'start/PnWnD' (the duration counts the
        first day, so '2024-01-01/P1D' is just January 1st)."""
        first, sep, second = text.strip().partition("/")
        if not sep:
            raise ValueError(f"not an interval: {text!r}")
        start = as_date(first)
        m = _DURATION.match(second)
        if m and (m.group(1) or m.group(2)):
            days = int(m.group(1) or 0) * 7 + int(m.group(2) or 0)
            if days < 1:
                raise ValueError(f"empty duration in {text!r}")
            return cls(start, start + datetime.timedelta(days=days - 1))
        return cls(start, as_date(second))

    @property
    def days(self):
        return (self.end - self.start).days + 1

    def __contains__(self, day):
        return self.start <= as_date(day) <= self.end

    def __iter__(self):
        day = self.start
        while day <= self.end:
            yield day
            day += datetime.timedelta(days=1)

    def overlaps(self, other):
        return self.start <= other.end and other.start <= self.end

    def touches(self, other):
        """Overlapping or directly adjacent (no day between them)."""
        one = datetime.timedelta(days=1)
        return self.start <= other.end + one and other.start <= self.end + one

    def intersection(self, other):
        if not self.overlaps(other):
            return None
        return DateInterval(max(self.start, other.start), min(self.end, other.end))

    def business_days(self, calendar=WEEKENDS_ONLY):
        return business_days_between(self.start, self.end + datetime.timedelta(days=1), calendar)

    def split_by_month(self):
        parts = []
        start = self.start
        while start <= self.end:
            if start.month == 12:
                next_month = datetime.date(start.year + 1, 1, 1)
            else:
                next_month = datetime.date(start.year, start.month + 1, 1)
            end = min(self.end, next_month - datetime.timedelta(days=1))
            parts.append(DateInterval(start, end))
            start = next_month
        return parts

    def __eq__(self, other):
        if not isinstance(other, DateInterval):
            return NotImplemented
        return (self.start, self.end) == (other.start, other.end)

    def __hash__(self):
        return hash((self.start, self.end))

    def __str__(self):
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def __repr__(self):
        return f"DateInterval({str(self)!r})"


def merge_intervals(intervals):
    """Union of intervals as a sorted list of disjoint, non-adjacent ones."""
    merged = []
    for interval in sorted(intervals, key=lambda i: (i.start, i.end)):
        if merged and merged[-1].touches(interval):
            last = merged[-1]
            merged[-1] = DateInterval(last.start, max(last.end, interval.end))
        else:
            merged.append(interval)
    return merged
