import datetime
import unittest

from workdays import BusinessCalendar, easter_sunday, parse_rule

D = datetime.date


class TestEaster(unittest.TestCase):
    def test_known_dates(self):
        known = {1961: D(1961, 4, 2), 2000: D(2000, 4, 23), 2019: D(2019, 4, 21), 2024: D(2024, 3, 31), 2038: D(2038, 4, 25)}
        for year, expected in known.items():
            with self.subTest(year=year):
                self.assertEqual(easter_sunday(year), expected)

    def test_always_a_sunday(self):
        for year in range(1900, 2100):
            self.assertEqual(easter_sunday(year).weekday(), 6)


class TestRules(unittest.TestCase):
    def test_fixed_date(self):
        self.assertEqual(parse_rule("12-25").date_in(2023), D(2023, 12, 25))

    def test_observed_moves_off_weekends(self):
        rule = parse_rule("07-04 observed")
        self.assertEqual(rule.date_in(2020), D(2020, 7, 3))  # Saturday -> Friday
        self.assertEqual(rule.date_in(2021), D(2021, 7, 5))  # Sunday -> Monday
        self.assertEqual(rule.date_in(2023), D(2023, 7, 4))

    def test_easter_offsets(self):
        self.assertEqual(parse_rule("easter-2").date_in(2024), D(2024, 3, 29))
        self.assertEqual(parse_rule("Easter+1").date_in(2024), D(2024, 4, 1))

    def test_nth_weekday(self):
        self.assertEqual(parse_rule("1mon 09").date_in(2024), D(2024, 9, 2))
        self.assertEqual(parse_rule("4thu 11").date_in(2024), D(2024, 11, 28))
        self.assertEqual(parse_rule("lastmon 05").date_in(2024), D(2024, 5, 27))
        self.assertEqual(parse_rule("lastfri 12").date_in(2024), D(2024, 12, 27))

    def test_invalid_rules(self):
        for text in ["13-01", "02-30", "easter*2", "0mon 01", "5mon 13", "christmas"]:
            with self.subTest(text=text):
                with self.assertRaises(ValueError):
                    parse_rule(text)


class TestCalendar(unittest.TestCase):
    def test_weekend_holidays_are_dropped(self):
        cal = BusinessCalendar(holidays=[D(2024, 12, 25), D(2024, 12, 28)])
        self.assertEqual(cal.holidays, [D(2024, 12, 25)])

    def test_is_business_day(self):
        cal = BusinessCalendar(rules=["01-01"], first_year=2024, last_year=2024)
        self.assertFalse(cal.is_business_day(D(2024, 1, 1)))
        self.assertTrue(cal.is_business_day(D(2024, 1, 2)))
        self.assertFalse(cal.is_business_day(D(2024, 1, 6)))

    def test_custom_weekend(self):
        cal = BusinessCalendar(weekend=(4, 5))
        self.assertFalse(cal.is_business_day(D(2024, 5, 3)))
        self.assertTrue(cal.is_business_day(D(2024, 5, 5)))
        self.assertEqual(cal.workdays_per_week, 5)
        with self.assertRaises(ValueError):
            BusinessCalendar(weekend=range(7))

    def test_with_holidays_copies(self):
        cal = BusinessCalendar()
        more = cal.with_holidays(D(2024, 3, 4))
        self.assertTrue(cal.is_business_day(D(2024, 3, 4)))
        self.assertFalse(more.is_business_day(D(2024, 3, 4)))


if __name__ == "__main__":
    unittest.main()
