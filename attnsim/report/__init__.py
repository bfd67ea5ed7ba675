"""Stage `report`: statistics -> figures, tables, the claims of the paper tested, report.md and report.html."""
