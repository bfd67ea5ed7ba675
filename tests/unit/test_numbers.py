"""The one number formatter of the report, the claims and the terminal tables."""

from attnsim.report.numbers import number, with_interval


def test_number_and_interval():
    assert number(float("nan")) == "n/a" and number(None, missing="-") == "-"
    assert number(3.0) == "3" and number(12) == "12"  # whole numbers without a fraction
    assert number(0.123456) == "0.123" and number(1234.5678, 2) == "1.2e+03"
    assert number(0.5, 2, fixed=True) == "0.50" and number(2.0, 1, fixed=True) == "2.0"
    row = {"x": 1.2345, "x_ci_low": 1.1, "x_ci_high": 1.31, "y": 0.5}
    assert with_interval(row, "x") == "1.23 [1.1, 1.31]"
    assert with_interval(row, "x", 2, fixed=True) == "1.23 [1.10, 1.31]"
    assert with_interval(row, "y") == "0.5"  # no interval in the row
