"""Counting and stepping over business days."""

import datetime

from .calendar import WEEKENDS_ONLY, as_date

ONE_DAY = datetime.timedelta(days=1)


def business_days_between(start, end, calendar=WEEKENDS_ONLY):
    """Business days from `start` (included) to `end` (excluded).

    Negative when `end` is before `start`, so that
    add_business_days(a, business_days_between(a, b)) lands on b whenever
    both are business days.
    """
    start, end = as_date(start), as_date(end)
    if end < start:
        return -business_days_between(end, start, calendar)
    weeks, rest = divmod((end - start).days, 7)
    # Whole weeks contribute a fixed count; only the tail needs a day walk.
    count = weeks * calendar.workdays_per_week
    tail = start + datetime.timedelta(weeks=weeks)
    for offset in range(rest):
        if (tail + datetime.timedelta(days=offset)).weekday() not in calendar.weekend:
            count += 1
    return count - calendar.holidays_between(start, end)


def add_business_days(start, n, calendar=WEEKENDS_ONLY):
    """The date `n` business days after `start` (before it when n < 0).

    With n == 0 a non-business `start` moves forward to the next business
    day, which is what "due today" means on a weekend.
    """
    day = as_date(start)
    if n == 0:
        return next_business_day(day, calendar, include_start=True)
    step = ONE_DAY if n > 0 else -ONE_DAY
    remaining = abs(n)
    while remaining:
        day += step
        if calendar.is_business_day(day):
            remaining -= 1
    return day


def next_business_day(day, calendar=WEEKENDS_ONLY, include_start=False):
    day = as_date(day)
    if not include_start:
        day += ONE_DAY
    while not calendar.is_business_day(day):
        day += ONE_DAY
    return day


def previous_business_day(day, calendar=WEEKENDS_ONLY, include_start=False):
    day = as_date(day)
    if not include_start:
        day -= ONE_DAY
    while not calendar.is_business_day(day):
        day -= ONE_DAY
    return day
