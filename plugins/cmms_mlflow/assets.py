"""Airflow Assets the plugin's tasks produce: the DAGs that emit and consume them import them from here."""

from __future__ import annotations

from airflow.sdk import Asset

#: Updated whenever a task may have changed the champion of a registered model; the event's
#: ``extra`` carries ``model_name`` and ``champion_version``.
CHAMPION_MODEL = Asset(name="cmms_champion_model", uri="mlflow://registry/champion")
