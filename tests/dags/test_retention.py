"""Retention at the end of the DAGs, under ``dag.test()`` (real MLflow on SQLite, real Parquet batches).

The spec is tests/dag_fixtures/models/pm_retention.yaml: the shipped model keeping one run folder per
DAG and no archived artifacts. Night 1 promotes, night 2 trains a weak model that is rejected and
pruned, night 3 fails at its first step — retention still runs after it and the run stays failed.
The scoring DAG keeps one output folder too (an earlier output written by the test, to save a run).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]
FIXTURES = PROJECT_DIR / "tests" / "dag_fixtures"

pytestmark = pytest.mark.slow


def _owned(name: str):
    """The fixture spec's training and scoring DAGs, built by the DAG factory for the spec owning model
    ``name`` (a spec writes only its own model; the test gets one of its own)."""
    from support import spec_owning

    from cmms_mlflow.factory import build_scoring_dag, build_training_dag
    from cmms_pm.spec import load_spec

    spec = spec_owning(load_spec(FIXTURES / "models" / "pm_retention.yaml"), name)
    return build_training_dag(spec), build_scoring_dag(spec)


def _run(dag, day: int, **conf):
    return dag.test(logical_date=datetime(2026, 7, day, 3, tzinfo=UTC), run_conf=dag.params.dump() | conf)


def _states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def _xcom(dag_run, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids=task_id
            )
        ).all()
        return XComModel.deserialize_value(rows[0]) if rows else None


def _folders(dag_id: str) -> dict[str, str]:
    """{run folder name: the run id its record names} under the data root."""
    import json

    base = Path(os.environ["CMMS_DATA_ROOT"]) / dag_id
    return {
        folder.name: json.loads((folder / "run.json").read_text())["run_id"]
        for folder in sorted(base.iterdir())
        if folder.is_dir()
    }


def test_each_night_keeps_one_batch_prunes_the_rejected_version_and_runs_after_a_failure(
    airflow_db, mlflow_conn, client
):
    from cmms_pm import registry_plan as rp

    name = f"pm_retention_{uuid.uuid4().hex[:8]}"
    training, scoring = _owned(name)
    base = {"model_name": name, "experiment_name": name}

    first = _run(training, 1, **base)
    assert str(first.state) == "success", _states(first)
    assert _states(first)["retention"] == "success"
    assert list(_folders(training.dag_id).values())[-1:] == [first.run_id]
    batch = Path(_xcom(first, "extract_data")["uri"])
    assert {p.name for p in batch.iterdir()} >= {"run.json", "manifest.json", "train.parquet"}

    # A one-stump forest: rejected, archived, and (keep_archived_versions: 0) its artifacts pruned.
    second = _run(training, 2, **base, n_estimators=1, max_depth=1)
    assert str(second.state) == "success", _states(second)
    assert _states(second)["promote_model"] == "skipped" and _states(second)["retention"] == "success"
    assert first.run_id not in _folders(training.dag_id).values()  # night 1's batch is gone
    assert second.run_id in _folders(training.dag_id).values()
    result = _xcom(second, "retention")
    assert result["versions"]["pruned"] == ["2"] and first.run_id not in str(result["folders"]["kept"])
    v1, v2 = client.get_model_version(name, "1"), client.get_model_version(name, "2")
    assert (v1.current_stage, v1.tags[rp.RETENTION_TAG]) == ("Production", rp.KEPT)
    assert (v2.current_stage, v2.tags[rp.RETENTION_TAG]) == ("Archived", rp.PRUNED)
    assert not [a for a in client.list_artifacts(v2.run_id) if a.path != "validation"]
    assert [a.path for a in client.list_artifacts(v2.run_id, "validation")] == ["validation/decision.json"]
    assert client.list_artifacts(v1.run_id, "evaluation")  # the champion keeps everything
    from cmms_mlflow.registry import history

    (prune,) = [e for e in history.read(client, name) if e["type"] == "prune"]
    assert (prune["versions"], prune["status"]) == (["2"], "done")  # recorded pending, then completed
    assert history.pending(client, name) == []

    # Night 3 fails at its first step (a data file that does not exist): retention still runs (it is
    # a teardown) and keeps the failed run's own folder; the run stays failed.
    third = _run(training, 3, **base, data_source="incoming/no-such-file.csv")
    states = _states(third)
    assert str(third.state) == "failed", states
    assert states["extract_data"] == "failed" and states["retention"] == "success"
    assert list(_folders(training.dag_id).values()) == [third.run_id]

    # The scoring DAG keeps one output folder as well, and its own retention step says so. The older
    # output is an earlier run's folder (its record and predictions), written here to save a DAG run.
    from cmms_pm import retention
    from cmms_pm.batch import batch_uri, data_root

    older_id = "scheduled__2026-07-03T03:00:00+00:00"
    older = batch_uri(data_root(), scoring.dag_id, older_id)
    retention.write_run_record(older, retention.run_record(
        kind=retention.SCORING, dag_id=scoring.dag_id, run_id=older_id, run_after="2026-07-03T03:00:00+00:00",
        data_interval_start="2026-07-03T03:00:00+00:00", data_interval_end="2026-07-03T03:00:00+00:00",
    ))  # fmt: skip
    (Path(older) / "predictions.parquet").write_bytes(b"PAR1")
    conf = scoring.params.dump() | {"model_name": name}
    run = scoring.test(logical_date=datetime(2026, 7, 3, 5, tzinfo=UTC), run_conf=conf)
    assert str(run.state) == "success", _states(run)
    scored = [run]
    assert list(_folders(scoring.dag_id).values()) == [run.run_id] and not Path(older).exists()
    assert _xcom(run, "retention")["folders"]["removed"] == [older]
    predictions = Path(_xcom(scored[-1], "score_fleet")[0]["predictions_uri"])
    assert predictions.exists()
