"""The pod a tuning trial runs in under the KubernetesExecutor, rendered by the cncf.kubernetes
provider's own PodGenerator (what the executor does before it calls the API server), no cluster."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[4]
IMAGE = "registry.example/cmms-airflow:2026.12"


@pytest.fixture(scope="module")
def tuned_spec():
    from cmms_pm.spec import build_spec, load_spec

    raw = copy.deepcopy(dict(load_spec(PROJECT_DIR / "tests/dag_fixtures/models/ai4i_tuned.yaml").raw))
    raw["tuning"]["resources"] = {"cpu": "1500m", "memory": "3Gi"}
    return build_spec(raw)


def _worker_template():
    """A deployment's pod_template_file, as the Airflow Helm chart writes it (container ``base``)."""
    from kubernetes.client import models as k8s

    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(labels={"tier": "airflow"}),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base",
                    image="apache/airflow:3.3.2",
                    env=[k8s.V1EnvVar(name="AIRFLOW__CORE__EXECUTOR", value="KubernetesExecutor")],
                )
            ],
            restart_policy="Never",
        ),
    )


def test_a_trial_task_renders_to_a_pod_with_the_specs_resources_and_storage(tuned_spec, monkeypatch):
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient

    from cmms_mlflow.factory import build_training_dag

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "KubernetesExecutor")
    tune = build_training_dag(tuned_spec).get_task("tune")
    override = tune.partial_kwargs["executor_config"]["pod_override"]
    args = ["airflow", "tasks", "run", "ai4i_tuned_training", "tune", "r", "--map-index", "1"]
    pod = PodGenerator.construct_pod(
        dag_id="ai4i_tuned_training", task_id="tune", pod_id="ai4i-tuned-training-tune-abc", try_number=1,
        kube_image=IMAGE, date=None, args=args,
        pod_override_object=override, base_worker_pod=_worker_template(), namespace="airflow",
        scheduler_job_id="7", run_id="scheduled__2026-12-07", map_index=1,
    )  # fmt: skip
    rendered = ApiClient().sanitize_for_serialization(pod)
    [container] = rendered["spec"]["containers"]
    assert container["name"] == "base" and container["image"] == IMAGE
    assert container["args"][-2:] == ["--map-index", "1"]
    assert container["resources"] == {
        "requests": {"cpu": "1500m", "memory": "3Gi"},
        "limits": {"memory": "3Gi"},
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OMP_NUM_THREADS"] == "1" and env["CMMS_OPTUNA_STORAGE"] == "postgres"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "KubernetesExecutor"  # the template's env is kept
    labels = rendered["metadata"]["labels"]
    assert labels["cmms.io/role"] == "tuning-trial" and labels["cmms.io/spec"] == "ai4i_tuned"
    assert labels["task_id"] == "tune" and labels["map_index"] == "1" and labels["tier"] == "airflow"
    assert rendered["metadata"]["namespace"] == "airflow" and rendered["spec"]["restartPolicy"] == "Never"


def test_the_override_survives_dag_serialization_and_other_executors_get_none(tuned_spec, monkeypatch):
    from airflow.serialization.serialized_objects import DagSerialization

    from cmms_mlflow.factory import build_training_dag

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "KubernetesExecutor")
    dag = build_training_dag(tuned_spec)
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    override = restored.get_task("tune").partial_kwargs["executor_config"]["pod_override"]
    assert override.spec.containers[0].resources.requests == {"cpu": "1500m", "memory": "3Gi"}
    for executor in ("CeleryExecutor", "LocalExecutor"):
        monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
        assert build_training_dag(tuned_spec).get_task("tune").partial_kwargs["executor_config"] == {}
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor,KubernetesExecutor")
    assert "pod_override" in build_training_dag(tuned_spec).get_task("tune").partial_kwargs["executor_config"]


@pytest.mark.parametrize(("field", "value"), [("cpu", "lots"), ("memory", "2GB"), ("memory", "1Gi\n")])
def test_bad_resource_quantities_are_refused_when_the_spec_loads(tuned_spec, field, value):
    from cmms_pm.exceptions import SpecError
    from cmms_pm.spec import build_spec

    raw = copy.deepcopy(dict(tuned_spec.raw))
    raw["tuning"]["resources"] = {field: value}
    with pytest.raises(SpecError, match=f"tuning.resources.{field}"):
        build_spec(raw)
