"""What reasons cost in batch scoring: ``cmms_pm.fleet.score_frame`` with and without reason columns.

In one process, on the same synthetic fleet frame and the same calibrated champion per estimator
(the project's defaults; random forest = the shipped spec's 100 trees of depth 10), trained on
``--train-rows`` synthetic rows:

  per-row   explaining N rows (``cmms_pm.explain.contributions``): µs per row, per estimator
  off       score_frame without reasons (``explain.reasons: 0``): the floor
  default   the spec default: the at-risk rows, the riskiest 1,000 at most, exact Tree SHAP
  approx    the same rows, ``explain.method: approximate`` (Saabas path attributions)
  all       every row explained (``explain.scope: all``, no cap), at the sizes where it finishes

ratio = default seconds / off seconds (and all / off). The champion's threshold is its own decision
threshold, as in the scoring DAG. Nothing else of the DAG (read, contract, write) is in the figures:
bench/scoring_throughput.py times the whole task.

    source scripts/env.sh && python bench/reasons_cost.py                   # 100k and 1M rows
    source scripts/env.sh && python bench/reasons_cost.py --sizes 20000 --estimators random_forest
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import PROJECT_DIR, machine, table  # noqa: E402

DEFAULT = {"reasons": 3, "scope": "at_risk", "max_rows": 1_000, "method": "exact"}


def champion(estimator: str, train_rows: int):
    from cmms_pm.calibration import calibrate_and_choose
    from cmms_pm.data import generate_telemetry, split_frame
    from cmms_pm.spec import load_spec
    from cmms_pm.thresholds import DecisionPolicy
    from cmms_pm.training import fit_model

    spec = load_spec(PROJECT_DIR / "include" / "models" / "predictive_maintenance.yaml")
    splits = split_frame(generate_telemetry(train_rows, 7), 7, target=spec.target)
    params = dict(spec.estimator_params) if estimator == spec.estimator else {}
    model = fit_model(
        splits["train"],
        features=spec.features,
        target=spec.target,
        estimator=estimator,
        hyperparameters=params,
    )
    decided = calibrate_and_choose(model, splits["validation"], target=spec.target, policy=DecisionPolicy())
    return decided.model, decided.threshold["threshold"]


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="fleet rows, comma-separated")
    parser.add_argument("--estimators", default="random_forest,hist_gradient_boosting,logistic_regression")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument(
        "--all-up-to", type=int, default=100_000, help="largest size scored with every row explained"
    )
    args = parser.parse_args()
    import shap  # noqa: F401 - imported once, outside the timings (the worker preload imports it too)

    from cmms_pm.explain import contributions
    from cmms_pm.fleet import latest_telemetry, score_frame

    sizes = [int(s) for s in args.sizes.split(",")]
    per_row, scoring = [], []
    for estimator in args.estimators.split(","):
        model, threshold = champion(estimator, args.train_rows)
        sample = latest_telemetry("2026-01-01T00:00:00+00:00", n_units=2000)
        contributions(model, sample.head(50))  # warm-up (SHAP builds its tree structures once)
        exact, _ = timed(contributions, model, sample)
        rough, _ = timed(contributions, model, sample, approximate=True)
        per_row.append([
            estimator, len(sample), round(exact / len(sample) * 1e6), f"{len(sample) / exact:.0f}",
            round(rough / len(sample) * 1e6), f"{exact / rough:.0f}",
        ])  # fmt: skip
        for size in sizes:
            fleet = latest_telemetry("2026-01-02T00:00:00+00:00", n_units=size)
            common = {
                "id_columns": ["equipment_id"], "flags": None, "model_name": "bench", "model_version": "1",
                "scored_at": "2026-01-02T03:00:00+00:00", "threshold": threshold,
            }  # fmt: skip
            off, _ = timed(score_frame, model, fleet, explain=None, **common)
            default, out = timed(score_frame, model, fleet, explain=DEFAULT, **common)
            fast, _ = timed(score_frame, model, fleet, explain={**DEFAULT, "method": "approximate"}, **common)
            every = None
            if size <= args.all_up_to:
                everything = {**DEFAULT, "scope": "all", "max_rows": size}
                every, _ = timed(score_frame, model, fleet, explain=everything, **common)
            scoring.append([
                estimator, size, int(out["at_risk"].sum()), int(out["reasons_explained"].sum()), f"{off:.1f}",
                f"{default:.1f}", f"{default / off:.2f}", f"{fast:.1f}", f"{fast / off:.2f}",
                f"{every:.1f}" if every is not None else "-",
                f"{every / off:.1f}" if every is not None else "-",
            ])  # fmt: skip
            print(f"{estimator} {size}: done", file=sys.stderr)
    print(machine())
    print(
        table(
            "Explaining rows (cmms_pm.explain.contributions): exact Tree SHAP, and approximate (Saabas)",
            ["estimator", "rows", "exact µs/row", "exact rows/s", "approx µs/row", "exact/approx"],
            per_row,
        )
    )
    print(
        table(
            "score_frame seconds without reasons (off), with the default (at-risk rows, riskiest 1,000, "
            "exact), the same rows approximate, and every row explained exactly (all)",
            [
                "estimator",
                "rows",
                "at risk",
                "explained",
                "off s",
                "default s",
                "default/off",
                "approx s",
                "approx/off",
                "all s",
                "all/off",
            ],  # fmt: skip
            scoring,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
