import datetime
import unittest

from workdays import BusinessCalendar, DateInterval, merge_intervals

D = datetime.date


class TestDateInterval(unittest.TestCase):
    def test_parse_two_dates(self):
        interval = DateInterval.parse("2024-01-10/2024-01-20")
        self.assertEqual((interval.start, interval.end), (D(2024, 1, 10), D(2024, 1, 20)))
        self.assertEqual(interval.days, 11)

    def test_parse_duration(self):
        self.assertEqual(DateInterval.parse("2024-01-01/P1D"), DateInterval("2024-01-01", "2024-01-01"))
        self.assertEqual(str(DateInterval.parse("2024-02-26/P1W2D")), "2024-02-26/2024-03-05")

    def test_parse_rejects_garbage(self):
        for text in ["2024-01-01", "2024-01-05/2024-01-01", "2024-01-01/P0D", "2024-01-01/PXD"]:
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    DateInterval.parse(text)

    def test_contains_and_iter(self):
        interval = DateInterval("2024-02-27", "2024-03-01")
        self.assertIn("2024-02-29", interval)
        self.assertNotIn(D(2024, 3, 2), interval)
        self.assertEqual(len(list(interval)), 4)

    def test_overlap_and_intersection(self):
        a = DateInterval("2024-01-01", "2024-01-10")
        b = DateInterval("2024-01-10", "2024-01-20")
        c = DateInterval("2024-01-11", "2024-01-12")
        self.assertTrue(a.overlaps(b))
        self.assertFalse(a.overlaps(c))
        self.assertTrue(a.touches(c))
        self.assertEqual(a.intersection(b), DateInterval("2024-01-10", "2024-01-10"))
        self.assertIsNone(a.intersection(c))

    def test_merge(self):
        parts = [
            DateInterval("2024-01-15", "2024-01-20"),
            DateInterval("2024-01-01", "2024-01-05"),
            DateInterval("2024-01-06", "2024-01-07"),
            DateInterval("2024-01-18", "2024-01-25"),
            DateInterval("2024-02-01", "2024-02-01"),
        ]
        self.assertEqual(
            [str(i) for i in merge_intervals(parts)],
            ["2024-01-01/2024-01-07", "2024-01-15/2024-01-25", "2024-02-01/2024-02-01"],
        )

    def test_split_by_month(self):
        parts = DateInterval("2023-12-30", "2024-02-02").split_by_month()
        self.assertEqual(
            [str(p) for p in parts],
            ["2023-12-30/2023-12-31", "2024-01-01/2024-01-31", "2024-02-01/2024-02-02"],
        )

    def test_business_days_without_holidays(self):
        self.assertEqual(DateInterval("2024-03-04", "2024-03-17").business_days(), 10)

    def test_business_days_when_the_next_day_is_a_holiday(self):
        cal = BusinessCalendar(rules=["12-25", "12-26"])
        self.assertEqual(DateInterval("2024-12-16", "2024-12-24").business_days(cal), 7)
        self.assertEqual(DateInterval("2024-12-16", "2024-12-25").business_days(cal), 7)

    def test_business_days_of_split_months_add_up(self):
        cal = BusinessCalendar(rules=["01-01"])
        whole = DateInterval("2024-11-15", "2025-01-15")
        parts = whole.split_by_month()
        self.assertEqual(sum(p.business_days(cal) for p in parts), whole.business_days(cal))

    def test_business_days_with_holiday_inside(self):
        cal = BusinessCalendar(holidays=[D(2024, 3, 6)])
        self.assertEqual(DateInterval("2024-03-04", "2024-03-08").business_days(cal), 4)


if __name__ == "__main__":
    unittest.main()
