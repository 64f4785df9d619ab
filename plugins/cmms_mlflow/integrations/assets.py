"""Airflow Assets the plugin's tasks produce: one champion Asset per model spec.

A spec's training DAG emits its Asset when it promotes; ``model_promotion`` and the model API act
on any model, so they emit through the alias :data:`CHAMPION_ALIAS`, attaching the event to the
Asset of the spec that trained the model (the version's ``model_spec`` tag, else the spec whose
registered model it is). Each spec's scoring DAG is scheduled on its Asset. Every event's
``extra`` carries ``model_name`` and ``champion_version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from airflow.sdk import Asset, AssetAlias

CHAMPION_ALIAS = AssetAlias(name="cmms_champion_models")
#: Tag of every version this package trains: the name of the spec (the pipeline) that made it.
SPEC_TAG = "model_spec"


def champion_asset(spec_name: str) -> Asset:
    """The Asset updated whenever a task may have changed the champion of a model of ``spec_name``."""
    return Asset(
        name=f"cmms_champion_model.{spec_name}",
        uri=f"mlflow://registry/{spec_name}/champion",
        group="mlflow-model",
    )


def retrain_asset(spec_name: str) -> Asset:
    """The Asset a spec's outcomes DAG updates to ask its training DAG for a new model (realized
    performance below the spec's floor); the event's ``extra`` says why (``reason``)."""
    return Asset(
        name=f"cmms_retrain_request.{spec_name}",
        uri=f"cmms://{spec_name}/retrain",
        group="mlflow-model",
    )


def spec_name_of(model_name: str, version_tags: Mapping[str, str]) -> str | None:
    """The spec a model version belongs to: its ``model_spec`` tag, else the spec of its name."""
    if version_tags.get(SPEC_TAG):
        return version_tags[SPEC_TAG]
    return _spec_names_by_model().get(model_name)


@cache
def _spec_names_by_model() -> dict[str, str]:
    from cmms_pm.spec import load_specs

    return {spec.registered_model: spec.name for spec in load_specs()[0]}
