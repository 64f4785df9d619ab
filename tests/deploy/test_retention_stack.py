"""Retention on the production stack: pruning through the authenticated tracking server's artifact proxy
(``mlflow-artifacts:``), with S3 (moto, standing in for AWS) behind it, as the pipeline user.

Checks what MLflow 3.17 does for a proxied store: the model and run artifacts of a pruned version
leave the bucket, the decision record stays, and the pipeline user (not an admin) may delete the
artifacts of the experiments it created. Fixtures: tests/deploy/conftest.py.
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.slow

ARTIFACT_BUCKET = "cmms-artifacts"


def test_pruning_through_the_artifact_proxy_empties_s3_of_the_pruned_versions_only(
    mlflow_server, s3_server, shipped_spec, monkeypatch, tmp_path
):
    from mlflow import MlflowClient

    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.registry import pruning as ret
    from cmms_pm import registry_plan as rp
    from cmms_pm.spec import build_spec

    user, password = mlflow_server.pipeline
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    name = f"pm_prune_{uuid.uuid4().hex[:8]}"
    experiment = f"prune-{name}"
    experiment_id = client.create_experiment(experiment)
    spec = build_spec(
        {**{k: v for k, v in shipped_spec.raw.items() if k not in ("experiment", "scoring")},
         "experiment": experiment, "registered_model": name},
    )  # fmt: skip
    files = tmp_path / "model"
    files.mkdir()
    (files / "model.skops").write_bytes(b"\0" * 4096)
    runs = {}
    for night in (1, 2, 3):
        tags = {
            "model_spec": spec.name,
            "airflow.dag_id": spec.training_dag_id,
            "airflow.run_id": f"n{night}",
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_text(run_id, "{}", "validation/decision.json")
        client.log_text(run_id, "png", "evaluation/roc_curve.png")
        logged = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
        client.log_model_artifacts(logged.model_id, str(files))
        version = model_registry.register_version(client, name=name, source=f"models:/{logged.model_id}",
                                            run_id=run_id, description="n", tags={})  # fmt: skip
        runs[str(version.version)] = (run_id, logged.model_id)
    lock = tmp_path / "locks"
    model_registry.promote(
        client, name, "3", expected_champion=None, lock_dir=lock, audit={"promoted_by": "t"}
    )
    for version in ("1", "2"):
        model_registry.reject(client, name, version, reason="older", lock_dir=lock)
    assert client.get_run(runs["1"][0]).info.artifact_uri.startswith("mlflow-artifacts:")

    outcome = ret.prune_versions(client, name, spec=spec, keep=1, lock_dir=lock, local_root=None,
                                 actor="t", at="t", key="k")  # fmt: skip

    assert outcome["pruned"] == ["1"] and outcome["skipped"] == {}
    keys = s3_server.keys(ARTIFACT_BUCKET, "mlflow/")
    run1, model1 = runs["1"]
    left1 = [k for k in keys if run1 in k or model1 in k]
    assert left1 and all(k.endswith("validation/decision.json") for k in left1), left1
    for version in ("2", "3"):  # kept: the newest archived one, and the champion
        run_id, model_id = runs[version]
        assert any(model_id in k and k.endswith("model.skops") for k in keys)
        assert any(run_id in k and k.endswith("roc_curve.png") for k in keys)
    assert client.get_model_version(name, "1").tags[rp.RETENTION_TAG] == rp.PRUNED
