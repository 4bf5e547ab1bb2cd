import datetime
import unittest

from workdays import (
    BusinessCalendar,
    add_business_days,
    business_days_between,
    next_business_day,
    previous_business_day,
)

D = datetime.date
UK_2024 = BusinessCalendar(
    rules=["01-01 observed", "easter-2", "easter+1", "1mon 05", "lastmon 05", "lastmon 08", "12-25", "12-26"],
    first_year=2024,
    last_year=2025,
)


class TestBetween(unittest.TestCase):
    def test_same_day_is_zero(self):
        self.assertEqual(business_days_between(D(2024, 3, 6), D(2024, 3, 6)), 0)

    def test_within_a_week(self):
        self.assertEqual(business_days_between("2024-03-04", "2024-03-08"), 4)
        self.assertEqual(business_days_between("2024-03-08", "2024-03-11"), 1)

    def test_across_many_weeks(self):
        self.assertEqual(business_days_between("2024-01-01", "2025-01-01"), 262)

    def test_reversed_range_is_negative(self):
        self.assertEqual(business_days_between("2024-03-11", "2024-03-04"), -5)

    def test_holidays_inside_the_range(self):
        self.assertEqual(business_days_between("2024-03-25", "2024-04-05", UK_2024), 7)

    def test_holiday_on_the_start_day(self):
        self.assertEqual(business_days_between("2024-05-06", "2024-05-10", UK_2024), 3)


class TestStepping(unittest.TestCase):
    def test_add_skips_weekends(self):
        self.assertEqual(add_business_days(D(2024, 3, 8), 1), D(2024, 3, 11))
        self.assertEqual(add_business_days(D(2024, 3, 4), 10), D(2024, 3, 18))

    def test_subtract(self):
        self.assertEqual(add_business_days(D(2024, 3, 11), -1), D(2024, 3, 8))
        self.assertEqual(add_business_days(D(2024, 4, 2), -1, UK_2024), D(2024, 3, 28))
        self.assertEqual(add_business_days(D(2024, 4, 2), -2, UK_2024), D(2024, 3, 27))

    def test_zero_rolls_forward_from_weekend(self):
        self.assertEqual(add_business_days(D(2024, 3, 9), 0), D(2024, 3, 11))
        self.assertEqual(add_business_days(D(2024, 3, 6), 0), D(2024, 3, 6))

    def test_add_skips_holidays(self):
        self.assertEqual(add_business_days(D(2024, 12, 24), 1, UK_2024), D(2024, 12, 27))

    def test_next_and_previous(self):
        self.assertEqual(next_business_day(D(2024, 3, 29), UK_2024), D(2024, 4, 2))
        self.assertEqual(previous_business_day(D(2024, 4, 2), UK_2024), D(2024, 3, 28))
        self.assertEqual(next_business_day(D(2024, 3, 6), include_start=True), D(2024, 3, 6))

    def test_add_and_between_agree_across_holidays(self):
        start = D(2024, 3, 20)
        for n in range(0, 30):
            with self.subTest(n=n):
                end = add_business_days(start, n, UK_2024)
                if UK_2024.is_holiday(end):
                    continue
                self.assertEqual(business_days_between(start, end, UK_2024), n)


if __name__ == "__main__":
    unittest.main()
