"""The tuning trials on Kubernetes: the pod each ``tune`` task instance runs in.

Under the KubernetesExecutor every task instance is a pod made from the deployment's worker pod
template (the project's image: requirements.txt, dags/, plugins/, include/) and the task's
``executor_config["pod_override"]``. A trial task gets the spec's ``tuning.resources`` (requests =
limits for memory, so a node is never over-committed by a burst of trials), one thread for the
numeric libraries (the parallelism is the pods), and ``CMMS_OPTUNA_STORAGE=postgres`` so that a
missing ``cmms_optuna`` connection fails the trial instead of writing a study no other pod sees.

The override is built only when the deployment's executor is the KubernetesExecutor (read from the
Airflow configuration, no import of the kubernetes client otherwise): other deployments' DAGs parse
as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cmms_pm.spec import ModelSpec

#: The KubernetesExecutor's worker container; a pod_override container of that name is merged into it.
WORKER_CONTAINER = "base"
TRIAL_LABELS = {"app.kubernetes.io/part-of": "cmms-pm", "cmms.io/role": "tuning-trial"}


def kubernetes_executor_configured() -> bool:
    """Whether this deployment's executors include the KubernetesExecutor (``[core] executor``)."""
    from airflow.configuration import conf

    executors = conf.get("core", "executor", fallback="") or ""
    return any(
        name.strip().split(".")[-1].split(":")[-1] == "KubernetesExecutor" for name in executors.split(",")
    )


def trial_pod_override(spec: ModelSpec) -> Any:
    """The ``pod_override`` of ``spec``'s trial tasks (a ``kubernetes.client.V1Pod``)."""
    from kubernetes.client import models as k8s

    resources = (spec.tuning or {}).get("resources") or {}
    cpu, memory = resources.get("cpu", "1"), resources.get("memory", "2Gi")
    container = k8s.V1Container(
        name=WORKER_CONTAINER,
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": cpu, "memory": memory}, limits={"memory": memory}
        ),
        env=[
            k8s.V1EnvVar(name="OMP_NUM_THREADS", value="1"),
            k8s.V1EnvVar(name="CMMS_OPTUNA_STORAGE", value="postgres"),
        ],
    )
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(labels={**TRIAL_LABELS, "cmms.io/spec": spec.name}),
        spec=k8s.V1PodSpec(containers=[container]),
    )


def trial_executor_config(spec: ModelSpec) -> dict[str, Any]:
    """``executor_config`` of the tune tasks: the pod override under the KubernetesExecutor, else {}."""
    if not kubernetes_executor_configured():
        return {}
    return {"pod_override": trial_pod_override(spec)}
