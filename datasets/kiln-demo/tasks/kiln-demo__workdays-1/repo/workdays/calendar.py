"""Which days are business days."""

import bisect
import datetime

from .holidays import parse_rule


class BusinessCalendar:
    """Weekend days plus holidays, given as dates and/or rules.

    weekend: weekday numbers (Monday is 0) that are never business days.
    holidays: datetime.date objects.
    rules: holiday rule strings (see workdays.holidays), expanded for
        every year between `first_year` and `last_year`.
    """

    def __init__(self, weekend=(5, 6), holidays=(), rules=(), first_year=1990, last_year=2050):
        self.weekend = frozenset(weekend)
        if len(self.weekend) >= 7:
            raise ValueError("a calendar needs at least one working weekday")
        dates = set(holidays)
        for rule in (parse_rule(r) for r in rules):
            for year in range(first_year, last_year + 1):
                dates.add(rule.date_in(year))
        # Only holidays on working weekdays change any count, so keep just
        # those, sorted, for bisecting.
        self._holidays = sorted(d for d in dates if d.weekday() not in self.weekend)

    @property
    def holidays(self):
        return list(self._holidays)

    def is_holiday(self, day):
        i = bisect.bisect_left(self._holidays, day)
        return i < len(self._holidays) and self._holidays[i] == day

    def is_business_day(self, day):
        return day.weekday() not in self.weekend and not self.is_holiday(day)

    @property
    def workdays_per_week(self):
        return 7 - len(self.weekend)

    def holidays_between(self, start, end):
        """How many holidays fall on working weekdays from start to end."""
        lo = bisect.bisect_left(self._holidays, start)
        hi = bisect.bisect_right(self._holidays, end)
        return hi - lo

    def with_holidays(self, *days):
        """A copy of this calendar with more holidays."""
        copy = BusinessCalendar.__new__(BusinessCalendar)
        copy.weekend = self.weekend
        copy._holidays = sorted(set(self._holidays) | {d for d in days if d.weekday() not in self.weekend})
        return copy


WEEKENDS_ONLY = BusinessCalendar()


def as_date(value):
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    return datetime.date.fromisoformat(value)
