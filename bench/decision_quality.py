"""Issue 19's closing figures: F1 at 0.5 vs at the chosen threshold, and calibration (Brier) before/after.

For each dataset and estimator, over several seeds (batches), side by side on the same holdout:

  F1 @ 0.5      the fitted pipeline as before issue 19: balanced class weights, uncalibrated, cut at 0.5
  F1 @ chosen   the calibrated pipeline at its decision threshold (spec default: the F1 strategy),
                both chosen on the validation split (cross-fitted, cmms_pm.calibration), never the holdout
  Brier         mean squared error of the risk on the holdout, before and after calibration

Datasets: ``ai4i`` is the AI4I-2020-like foreign dataset the tests use (tests/datasets.py: 10,000
rows, ~3 % failures, leak-free sensor columns), split by the project's batch code as a user's file
would be; ``synthetic`` is the shipped spec's telemetry (20,000 rows, ~9 % failures). Estimator
defaults are the project's (hyperparameters of cmms_pm.estimators). Nothing is timed.

    source scripts/env.sh && python bench/decision_quality.py            # 5 seeds, ~5 min
    source scripts/env.sh && python bench/decision_quality.py --seeds 1 --rows 3000   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import PROJECT_DIR, machine, table  # noqa: E402

sys.path.insert(0, str(PROJECT_DIR / "tests"))
from datasets import CATEGORICAL, INTEGER, NUMERIC, TARGET, ai4i_like  # noqa: E402

ESTIMATORS = ("random_forest", "hist_gradient_boosting", "logistic_regression")


def ai4i_spec():
    """The spec a new user writes for the AI4I file (as ``make new-model`` infers it)."""
    from cmms_pm.spec import build_spec

    return build_spec({
        "name": "ai4i_bench", "registered_model": "ai4i_bench",
        "source": {"kind": "file", "path": "ai4i.csv"},
        "target": {"column": TARGET, "positive": "yes", "negative": "no"},
        "features": {"categorical": list(CATEGORICAL), "numeric": list(NUMERIC), "integer": list(INTEGER)},
        "drop": ["UDI", "Product ID"], "id_columns": ["UDI", "Product ID"],
    })  # fmt: skip


def batch(spec, frame, seed: int, out: str) -> dict:
    from cmms_pm.batch import prepare_batch
    from cmms_pm.data import read_split

    start = f"2026-01-{seed + 1:02d}T00:00:00+00:00"
    end = f"2026-01-{seed + 2:02d}T00:00:00+00:00"
    manifest = prepare_batch(
        spec=spec, frame=frame, source="bench", n_samples=None, target_column=spec.target,
        interval_start=start, interval_end=end, out_uri=out,
    )  # fmt: skip
    return {name: read_split(entry["uri"]) for name, entry in manifest["splits"].items()} | {
        "seed": manifest["seed"]
    }


def measure(spec, splits, estimator: str) -> dict[str, float]:
    from cmms_pm import training
    from cmms_pm.calibration import calibrate_and_choose
    from cmms_pm.estimators import estimator as kind
    from cmms_pm.thresholds import DecisionPolicy, metrics_at

    params = kind(estimator).defaults()
    model = training.fit_model(
        splits["train"],
        features=spec.features,
        target=spec.target,
        estimator=estimator,
        hyperparameters=params,
    )
    policy = DecisionPolicy.from_spec(spec.decision)
    decided = calibrate_and_choose(
        model, splits["validation"], target=spec.target, policy=policy,
        method=spec.calibration["method"], seed=splits["seed"],
    )  # fmt: skip
    holdout = splits["holdout"]
    y = holdout[spec.target].to_numpy()
    before = training.positive_proba(model, holdout)
    after = training.positive_proba(decided.model, holdout)
    threshold = decided.threshold["threshold"]
    return {
        "f1_05": metrics_at(y, before, 0.5, policy.costs)["f1"],
        "f1_chosen": metrics_at(y, after, threshold, policy.costs)["f1"],
        "threshold": threshold,
        "brier_before": float(np.mean((before - y) ** 2)),
        "brier_after": float(np.mean((after - y) ** 2)),
        "method": decided.calibration["method"],
        "positives": int(y.sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="batches per dataset (default 5)")
    parser.add_argument("--rows", type=int, default=10_000, help="AI4I-like rows (default 10,000, as AI4I)")
    parser.add_argument("--synthetic-rows", type=int, default=20_000)
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    args = parser.parse_args()
    from cmms_pm.data import generate_telemetry
    from cmms_pm.spec import load_spec

    shipped = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    datasets = {
        "ai4i": (ai4i_spec(), lambda seed: ai4i_like(args.rows, seed=seed)),
        "synthetic": (shipped, lambda seed: generate_telemetry(args.synthetic_rows, 1000 + seed)),
    }
    rows = []
    for name, (spec, make) in datasets.items():
        for estimator in args.estimators.split(","):
            results = []
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as out:
                    results.append(measure(spec, batch(spec, make(seed), seed, out), estimator))
            mean = {k: float(np.mean([r[k] for r in results])) for k in results[0] if k != "method"}
            rows.append([
                name, estimator, f"{sorted({r['method'] for r in results})}", round(mean["positives"]),
                f"{mean['f1_05']:.3f}", f"{mean['f1_chosen']:.3f}",
                f"{mean['f1_chosen'] - mean['f1_05']:+.3f}",
                f"{mean['threshold']:.3f}", f"{mean['brier_before']:.4f}", f"{mean['brier_after']:.4f}",
                f"{mean['brier_after'] / mean['brier_before']:.2f}",
            ])  # fmt: skip
            print(f"{name} {estimator}: done", file=sys.stderr)
    print(machine())
    print(
        table(
            f"Holdout F1 and Brier score, mean of {args.seeds} batches (AI4I-like {args.rows} rows, "
            f"synthetic {args.synthetic_rows} rows)",
            [
                "dataset", "estimator", "calibration", "holdout failures", "F1 @ 0.5 (before)",
                "F1 @ chosen (after)", "ΔF1", "chosen threshold", "Brier before", "Brier after", "ratio",
            ],
            rows,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
