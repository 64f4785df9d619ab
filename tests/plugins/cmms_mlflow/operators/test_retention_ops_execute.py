"""``execute(context)`` of plugins/cmms_mlflow/operators/retention_ops.py's operator on a real MLflow:
the spec's ``retention`` removes old run folders of the DAG and never a version it must keep."""

from __future__ import annotations

from pathlib import Path

from datasets import ai4i_like
from operator_context import operator_runner, write_incoming

from cmms_mlflow.operators import ExtractBatchOperator
from cmms_mlflow.operators.retention_ops import MlflowRetentionOperator
from cmms_pm.spec import ModelSpec


def test_retention_keeps_the_newest_batch_and_no_version_it_must_keep(
    fresh_model, tmp_path, monkeypatch, client
):
    retention = {"keep_batches": 1, "keep_archived_versions": 0}
    spec = ModelSpec.from_dict({**fresh_model.spec.to_dict(), "retention": retention})
    run = operator_runner(spec, fresh_model.name, tmp_path / "retention", monkeypatch)
    source = write_incoming(tmp_path / "retention", ai4i_like(300, seed=45))
    folders = [
        run(ExtractBatchOperator(task_id="extract_data", spec=spec.to_dict()), day, data_source=source)["uri"]
        for day in (1, 2, 3)
    ]
    assert len(set(folders)) == 3 and all(Path(uri).is_dir() for uri in folders)

    retention = MlflowRetentionOperator(task_id="retention", spec=spec.to_dict(), model_name=fresh_model.name)
    result = run(retention, 3)  # day 3's run: its own folder is the newest

    assert sorted(result["folders"]["removed"]) == sorted(folders[:2])
    assert [Path(uri).is_dir() for uri in folders] == [False, False, True]
    versions = result["versions"]
    assert versions["name"] == fresh_model.name and versions["pruned"] == []  # v1 is Staging, not archived
    assert client.get_model_version(fresh_model.name, fresh_model.version).current_stage == "Staging"
    # Nothing left beyond the policy: a second run removes nothing more.
    assert run(retention, 3)["folders"]["removed"] == []
