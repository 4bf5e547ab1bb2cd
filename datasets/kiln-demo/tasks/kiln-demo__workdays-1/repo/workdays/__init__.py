"""workdays: business-day arithmetic over holiday calendars."""

from .arith import add_business_days, business_days_between, next_business_day, previous_business_day
from .calendar import BusinessCalendar
from .holidays import easter_sunday, parse_rule
from .intervals import DateInterval, merge_intervals

__all__ = [
    "BusinessCalendar",
    "DateInterval",
    "add_business_days",
    "business_days_between",
    "easter_sunday",
    "merge_intervals",
    "next_business_day",
    "parse_rule",
    "previous_business_day",
]
