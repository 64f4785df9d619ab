"""The predict route's model work without a server (``cmms_pm.prediction``): a request's rows as the
champion's frame (schema problems named, nothing half-built), risks, alerts, contract issues and
reasons. The route on a real api-server: tests/dags/test_predict_api.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmms_pm.prediction import RowsRejected, predict, rows_frame, top_reasons


@pytest.fixture(scope="module")
def fitted():
    """(model, contract, rows) of a small forest on the synthetic telemetry."""
    from cmms_pm.contract import derive_contract
    from cmms_pm.data import generate_telemetry
    from cmms_pm.estimators import ESTIMATORS
    from cmms_pm.schema import FEATURES, TARGET

    frame = generate_telemetry(3000, 5)
    categorical = ["equipment_type"]
    numeric = [f for f in FEATURES if f not in categorical]
    estimator = ESTIMATORS["random_forest"]
    params = {**estimator.defaults(), "n_estimators": 15, "max_depth": 6}
    model = estimator.build(params, categorical, numeric)
    model.fit(frame[FEATURES], frame[TARGET])
    kinds = {"equipment_type": "categorical", **dict.fromkeys(numeric, "numeric")}
    contract = derive_contract(frame[[*FEATURES, TARGET]], target=TARGET, feature_kinds=kinds)
    rows = json.loads(generate_telemetry(40, 9)[FEATURES].to_json(orient="records"))
    return model, contract, rows


def test_rows_become_the_training_frame_and_score_as_the_batch_would(fitted):
    from cmms_pm.training import positive_proba

    model, contract, rows = fitted
    sent = [{**row, "equipment_id": f"EQ-{n}"} for n, row in enumerate(rows)]
    sent[0]["equipment_type"] = 3  # a category code: the text "3"
    frame = rows_frame(sent, contract, id_columns=["equipment_id"])
    assert frame["equipment_type"].iloc[0] == "3" and frame["equipment_id"].tolist()[:2] == ["EQ-0", "EQ-1"]
    found = predict(model, frame, contract=contract, threshold=0.2, reasons=0)
    np.testing.assert_allclose(found.risk, positive_proba(model, frame), rtol=0, atol=1e-12)
    assert found.alert.tolist() == (found.risk >= 0.2).tolist()
    assert found.issues[0] == [{"kind": "unseen_category", "feature": "equipment_type"}]
    assert all(r == [] for r in found.reasons)


def test_schema_problems_are_named_with_their_rows_and_nothing_is_scored(fitted):
    _, contract, rows = fitted
    bad = [dict(row) for row in rows[:8]]
    bad[1]["temperature_c"] = "hot"
    bad[2]["temperature_c"] = True
    bad[3]["equipment_type"] = 2.5
    del bad[4]["rpm"]
    bad[5]["rmp"] = 1500.0
    with pytest.raises(RowsRejected) as caught:
        rows_frame(bad, contract, id_columns=["equipment_id"])
    found = {(p["kind"], p["column"]): p["rows"] for p in caught.value.problems}
    assert found == {
        ("unknown_column", "rmp"): [5],
        ("missing_column", "rpm"): [4],
        ("wrong_type", "equipment_type"): [3],
        ("wrong_type", "temperature_c"): [1, 2],
    }
    many = [{k: v for k, v in row.items() if k != "rpm"} for row in rows]
    with pytest.raises(RowsRejected, match=r"rows \[0, 1, 2, 3, 4\] and 35 more: feature 'rpm' is absent"):
        rows_frame(many, contract)


def test_reasons_go_to_the_alerts_and_fast_ones_add_up_to_the_forests_output(fitted):
    import shap

    from cmms_pm.prediction import _path_contributions
    from cmms_pm.training import base_classifier, positive_proba

    model, contract, rows = fitted
    frame = rows_frame(rows, contract)
    threshold = float(np.quantile(positive_proba(model, frame), 0.75))
    found = predict(model, frame, contract=contract, threshold=threshold, reasons=2, explainer="approximate")
    explained = [bool(r) for r in found.reasons]
    assert any(explained) and not any(e and not a for e, a in zip(explained, found.alert, strict=True))
    everyone = predict(model, frame, contract=contract, threshold=threshold, reasons=2, scope="all",
                       explainer="approximate")  # fmt: skip
    assert sum(bool(r) for r in everyone.reasons) > sum(bool(r) for r in found.reasons)
    riskiest = predict(model, frame, contract=contract, threshold=0.0, reasons=2, max_explained=3,
                       explainer="approximate")  # fmt: skip
    explained = [n for n, r in enumerate(riskiest.reasons) if r]
    assert len(explained) <= 3 and set(explained) <= set(np.argsort(-riskiest.risk)[:3].tolist())
    values = _path_contributions(model, base_classifier(model), frame)
    base = np.asarray(shap.TreeExplainer(base_classifier(model)).expected_value).reshape(-1)[-1]
    np.testing.assert_allclose(values.sum(axis=1) + base, positive_proba(model, frame), atol=1e-9)
    assert list(values.columns) == list(contract.features)
    exact = top_reasons(model, frame, 3, explainer="exact")
    fast = top_reasons(model, frame, 3, explainer="approximate")
    assert len(exact) == len(fast) == len(frame)
    # The same values as cmms_pm.explain's approximate method (kept explainer, reused inputs aside).
    from cmms_pm.explain import contributions

    theirs, _ = contributions(model, frame, approximate=True)
    np.testing.assert_allclose(values.to_numpy(), theirs.to_numpy(), atol=1e-9)
    with pytest.raises(ValueError, match="explainer"):
        top_reasons(model, frame, 3, explainer="guess")
