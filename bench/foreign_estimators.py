"""Holdout quality of each estimator on the foreign-schema (AI4I-like) dataset, through the pipeline's code.

The same steps the training DAG runs for ``tests/dag_fixtures/models/ai4i.yaml`` — label mapping,
split, write and read the Parquet batch, fit the spec's features, score the holdout — once per
estimator with its defaults, on one data interval. Prints a table (no timing is asserted).

    source scripts/env.sh && python bench/foreign_estimators.py [--rows 10000] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "tests"))  # the test suite's dataset builder, not a copy

from datasets import ai4i_like  # noqa: E402

from cmms_pm.batch import manifest_features, prepare_batch  # noqa: E402
from cmms_pm.data import read_split  # noqa: E402
from cmms_pm.estimators import ESTIMATORS  # noqa: E402
from cmms_pm.spec import load_spec  # noqa: E402
from cmms_pm.training import fit_model, score_model  # noqa: E402

SPEC = PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "ai4i.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--seeds", default="0,1,2", help="dataset seeds (one data interval each)")
    args = parser.parse_args()
    spec = load_spec(SPEC)
    results: dict[str, list[dict]] = {kind: [] for kind in ESTIMATORS}
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = prepare_batch(
                spec=spec,
                frame=ai4i_like(args.rows, seed=seed),
                source="incoming/ai4i.csv",
                n_samples=None,
                target_column=spec.target,
                interval_start=f"2026-05-{seed + 1:02d}T02:00:00+00:00",
                interval_end=f"2026-05-{seed + 2:02d}T02:00:00+00:00",
                out_uri=tmp,
            )
            train = read_split(manifest["splits"]["train"]["uri"])
            holdout = read_split(manifest["splits"]["holdout"]["uri"])
            features = manifest_features(spec, manifest)
            for kind in ESTIMATORS:
                started = time.perf_counter()
                model = fit_model(
                    train, features=features, target=spec.target, estimator=kind, hyperparameters={}
                )
                fit_s = time.perf_counter() - started
                results[kind].append({**score_model(model, holdout, target=spec.target), "fit_s": fit_s})
    print(f"Foreign dataset (AI4I-like, {args.rows} rows, seeds {args.seeds}): holdout, estimator defaults")
    print(f"{'estimator':26} {'F1':>14} {'ROC-AUC':>8} {'PR-AUC':>8} {'fit s':>7}")
    for kind, rows in results.items():
        f1 = [r["f1"] for r in rows]
        roc, pr, fit = (statistics.mean(r[key] for r in rows) for key in ("roc_auc", "pr_auc", "fit_s"))
        spread = f"({min(f1):.2f}-{max(f1):.2f})"
        print(f"{kind:26} {statistics.mean(f1):6.3f} {spread} {roc:8.3f} {pr:8.3f} {fit:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
