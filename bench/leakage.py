"""The leakage guard's cost at 100k and 1M rows × 50 columns, beside what validate_data does anyway.

A frame shaped like a wide maintenance table: 30 float readings, 8 integer counters, 5 text
categories, 5 honest 0/1 flags, and two leaks (a noisy label copy, a set of failure-mode flags) so
every test of :func:`cmms_pm.leakage.find_leaks` runs to the end. Timed on the same frame, in this
process (best of ``--repeat``):

- (a) ``find_leaks`` over the 50 feature columns (samples 200,000 rows beyond that);
- (b) ``check_frame``, the spec checks validate_data already runs on every split;
- (c) reading the frame back from its Parquet file (what validate_data does first);
- (d) scikit-learn's ``roc_auc_score`` on every numeric column, all rows (a library baseline for
  the single-column test alone).

    source scripts/env.sh && python bench/leakage.py [--sizes 100000,1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import table  # noqa: E402


def wide_frame(n: int, seed: int = 0):  # noqa: ANN201 - pandas is imported late, as in the other benches
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.03
    columns = {}
    for k in range(30):
        columns[f"reading_{k:02d}"] = np.round(rng.normal(size=n) + (0.05 * k) * y, 3)
    for k in range(8):
        columns[f"count_{k}"] = rng.poisson(2 + k, n).astype(np.int64)
    for k in range(5):
        columns[f"category_{k}"] = np.asarray([f"c{j}" for j in range(4 + 6 * k)], dtype=object)[
            rng.integers(0, 4 + 6 * k, n)
        ]
    for k in range(5):
        columns[f"flag_{k}"] = (rng.random(n) < 0.1).astype(np.int64)
    modes = rng.integers(0, 2, n)
    for k in range(2):  # two failure-mode flags whose OR is the label: the set test's work
        columns[f"mode_{k}"] = (y & (modes == k)).astype(np.int64)
    columns["status"] = np.where(y ^ (rng.random(n) < 0.02), "alarm", "ok")
    columns["label"] = y.astype(np.int64)
    return pd.DataFrame(columns)


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measure(n: int, repeat: int) -> list[object]:
    import pandas as pd
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    from cmms_pm.frame_checks import check_frame
    from cmms_pm.leakage import find_leaks
    from cmms_pm.spec import FeatureSpec

    frame = wide_frame(n)
    features = [c for c in frame.columns if c != "label"]
    spec = FeatureSpec(
        numeric=tuple(c for c in features if c.startswith("reading")),
        integer=tuple(c for c in features if c.startswith(("count", "flag", "mode"))),
        categorical=tuple(c for c in features if c.startswith(("category", "status"))),
    )
    report = find_leaks(frame, "label", columns=features)
    found = sorted(c for f in report.findings for c in f.columns)
    guard = _best(lambda: find_leaks(frame, "label", columns=features), repeat)
    checks = _best(
        lambda: check_frame(frame, features=spec, target="label", min_rows=1, max_missing_rate=0.0), repeat
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        frame.to_parquet(path, index=False)
        read = _best(lambda: pq.read_table(path).to_pandas(), repeat)
    y = frame["label"].to_numpy()
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c].dtype)]
    sklearn = _best(lambda: [roc_auc_score(y, frame[c].to_numpy()) for c in numeric], repeat)
    return [
        f"{n:,}",
        len(features),
        report.rows,
        ", ".join(found),
        guard,
        checks,
        read,
        sklearn,
        guard / checks,
        guard / read,
        guard / sklearn,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="rows, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per figure")
    args = parser.parse_args()
    rows = [measure(int(size), args.repeat) for size in args.sizes.split(",")]
    print(
        table(
            "Leakage guard, 51 feature columns (seconds; ratios < 1: the guard costs less than that step)",
            [
                "rows",
                "columns",
                "rows tested",
                "found",
                "(a) guard s",
                "(b) check_frame s",
                "(c) read s",
                "(d) sklearn AUCs s",
                "(a)/(b)",
                "(a)/(c)",
                "(a)/(d)",
            ],  # fmt: skip
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
