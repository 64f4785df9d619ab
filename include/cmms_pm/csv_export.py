"""CSV files people open in a spreadsheet, written safely: the one helper every CSV writer uses.

Column names and text cells come from user data (a source file's header, category values). A cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula to Excel, Calc or
Sheets (``=HYPERLINK(...)``, ``@SUM(...)``): each such text value is written with a leading ``'``,
as OWASP's "CSV injection" guidance says, so it is shown as text and never evaluated. Numbers stay
numbers (a negative number is not text and is not touched). Every text field is quoted, so a carriage
return inside one cannot start a new row whose first cell is a formula.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: What makes a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would read as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose column names and text cells are escaped (:func:`escape_cell`)."""
    import pandas as pd

    safe = frame.copy()
    safe.columns = [
        escape_cell(str(column)) if isinstance(column, str) else column for column in safe.columns
    ]
    for position in range(safe.shape[1]):
        column = safe.iloc[:, position]
        if pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column):
            safe.isetitem(position, column.map(escape_cell, na_action="ignore").astype(object))
        elif isinstance(column.dtype, pd.CategoricalDtype):
            safe.isetitem(position, column.astype(object).map(escape_cell, na_action="ignore"))
    return safe


def write_csv(frame: pd.DataFrame, path: str | Path, *, index: bool = False) -> Path:
    """Write ``frame`` as CSV at ``path`` with every formula-like text escaped and every text field
    quoted; return the path."""
    path = Path(path)
    safe_frame(frame).to_csv(path, index=index, quoting=csv.QUOTE_NONNUMERIC)
    return path
