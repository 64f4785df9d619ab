"""``execute(context)`` of plugins/cmms_mlflow/operators/data_ops.py's operators on a real MLflow: the
batch is extracted and split; the next day's batch is checked against the champion's contract."""

from __future__ import annotations

from pathlib import Path

from datasets import ai4i_like
from operator_context import write_incoming

from cmms_mlflow.operators import ExtractBatchOperator, MlflowValidateDataOperator
from cmms_pm.data import read_split


def test_extract_writes_three_splits_with_their_digests_and_validate_data_finds_no_champion(pipeline):
    manifest, checks = pipeline.results["extract_data"], pipeline.results["validate_data"]
    assert manifest["rows"] == sum(split["rows"] for split in manifest["splits"].values())
    assert set(manifest["splits"]) == {"train", "validation", "holdout"}
    holdout = manifest["splits"]["holdout"]
    assert len(read_split(holdout["uri"], sha256=holdout["sha256"])) == holdout["rows"]
    assert Path(holdout["uri"]).is_relative_to(pipeline.root / "data" / "ai4i_training")
    assert not {"UDI", "Product ID"} & set(manifest["columns"])  # the spec's drop list
    # Day 1 ran before any champion: nothing to compare the batch with.
    assert checks["champion_version"] is None and checks["drift_status"] == "none"
    assert checks["rows"] == manifest["rows"]


def test_the_next_batch_is_checked_against_the_champions_contract(pipeline, run, tmp_path):
    definition = pipeline.spec.to_dict()
    source = write_incoming(tmp_path, ai4i_like(800, seed=43))
    manifest = run(ExtractBatchOperator(task_id="extract_data", spec=definition), 2, data_source=source)
    assert manifest["rows"] == 800
    assert Path(manifest["splits"]["train"]["uri"]).is_relative_to(tmp_path / "data")

    checks = run(
        MlflowValidateDataOperator(task_id="validate_data", spec=definition, manifest=manifest), 2,
        data_source=source,
    )  # fmt: skip
    assert checks["champion_version"] == pipeline.version
    contract = checks["contract_check"]
    assert contract["rows"] == manifest["rows"] and (contract["removed"], contract["retyped"]) == ([], [])
    assert checks["drift_status"] in ("ok", "warn") and checks["drift"] is not None
