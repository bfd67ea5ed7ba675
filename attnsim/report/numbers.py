"""How the report, the claims table and the terminal tables write a number: one formatter."""

from __future__ import annotations

import math


def number(x, digits: int = 3, fixed: bool = False, missing: str = "n/a") -> str:
    """`digits` significant digits (or decimals when `fixed`); whole numbers without a fraction."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    if fixed:
        return f"{x:.{digits}f}"
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.{digits}g}"


def with_interval(row: dict, name: str, digits: int = 3, fixed: bool = False, missing: str = "n/a") -> str:
    """A table row's value and, when the row has them, its interval: "1.2 [1.1, 1.3]"."""
    value = number(row[name], digits, fixed, missing)
    low, high = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    if low is None or high is None:
        return value
    return f"{value} [{number(low, digits, fixed, missing)}, {number(high, digits, fixed, missing)}]"
