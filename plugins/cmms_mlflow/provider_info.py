"""Provider metadata: registers the ``mlflow`` connection type (form fields, Test button) in Airflow.

Found through the ``apache_airflow_provider`` entry point declared in pyproject.toml.
"""

from __future__ import annotations


def get_provider_info() -> dict:
    return {
        "package-name": "cmms-mlflow-pipelines",
        "name": "CMMS MLflow pipelines",
        "description": "MLflow hook, operators and links for training-to-production pipelines.",
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "cmms_mlflow.hooks.mlflow_hook.MlflowHook",
                "hook-name": "MLflow",
            }
        ],
        "extra-links": [
            "cmms_mlflow.integrations.links.MlflowRunLink",
            "cmms_mlflow.integrations.links.MlflowModelVersionLink",
        ],
    }
