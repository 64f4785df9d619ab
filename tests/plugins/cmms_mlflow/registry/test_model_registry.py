"""Registry state changes against a real MLflow SQLite store: stages and aliases move together."""

from __future__ import annotations

import pytest

from cmms_mlflow.exceptions import MlflowRegistryError, PromotionConflictError
from cmms_mlflow.registry import model_registry


def _stages(client, name: str) -> dict[str, str]:
    return {str(v.version): v.current_stage for v in client.search_model_versions(f"name = '{name}'")}


def test_registering_the_same_run_twice_returns_one_version(client, model_name):
    run = client.create_run(client.create_experiment(f"twice-{model_name}"))
    kwargs = dict(
        name=model_name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        description="d",
        tags={"k": "v"},
    )
    first = model_registry.register_version(client, **kwargs)
    second = model_registry.register_version(client, **kwargs)
    assert first.version == second.version
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 1
    assert client.get_model_version(model_name, first.version).tags["k"] == "v"


def test_staging_sets_the_challenger_alias(client, model_name, register):
    version = register(model_name)
    model_registry.transition(client, model_name, version, "Staging")
    assert _stages(client, model_name) == {version: "Staging"}
    assert model_registry.aliases_of(client, model_name) == {"challenger": version}


def test_promotion_archives_the_previous_champion_and_remembers_it(client, model_name, register):
    v1, v2 = register(model_name), register(model_name)
    model_registry.transition(
        client, model_name, v1, "Production", check_champion=True, expected_champion=None
    )
    model_registry.transition(client, model_name, v2, "Staging")
    changes = model_registry.transition(
        client, model_name, v2, "Production", check_champion=True, expected_champion=v1
    )
    assert changes["replaced"] == v1
    assert _stages(client, model_name) == {v1: "Archived", v2: "Production"}
    assert model_registry.aliases_of(client, model_name) == {"champion": v2, "previous_champion": v1}
    assert client.get_model_version(model_name, v1).tags["replaced_by_version"] == v2
    model_registry.check_invariants(client, model_name)


def test_promoting_the_champion_again_changes_nothing(client, model_name, register):
    v1 = register(model_name)
    model_registry.transition(client, model_name, v1, "Production")
    again = model_registry.transition(
        client, model_name, v1, "Production", check_champion=True, expected_champion=None
    )
    assert again.get("unchanged") is True
    assert model_registry.aliases_of(client, model_name) == {"champion": v1}


def test_promotion_is_refused_when_the_champion_changed_since_validation(client, model_name, register):
    v1, v2, v3 = (register(model_name) for _ in range(3))
    model_registry.transition(client, model_name, v1, "Production")
    model_registry.transition(client, model_name, v2, "Production")  # someone else promoted meanwhile
    with pytest.raises(PromotionConflictError, match=r"expected version '1', found '2'"):
        model_registry.transition(
            client, model_name, v3, "Production", check_champion=True, expected_champion=v1
        )
    assert _stages(client, model_name)[v3] == "None"
    assert model_registry.aliases_of(client, model_name)["champion"] == v2


def test_archiving_drops_the_roles_of_the_version(client, model_name, register):
    version = register(model_name)
    model_registry.transition(client, model_name, version, "Staging")
    model_registry.transition(client, model_name, version, "Archived")
    assert _stages(client, model_name) == {version: "Archived"}
    assert model_registry.aliases_of(client, model_name) == {}


def test_unknown_stage_is_rejected_by_name(client, model_name, register):
    version = register(model_name)
    with pytest.raises(MlflowRegistryError, match="'Prod'"):
        model_registry.transition(client, model_name, version, "Prod")


def test_invariant_check_catches_a_champion_alias_off_production(client, model_name, register):
    v1, v2 = register(model_name), register(model_name)
    model_registry.transition(client, model_name, v1, "Production")
    client.set_registered_model_alias(model_name, "champion", v2)  # out-of-band edit
    with pytest.raises(MlflowRegistryError, match="alias 'champion' -> '2' but Production -> '1'"):
        model_registry.check_invariants(client, model_name)


def test_champion_falls_back_to_the_production_stage_without_alias(client, model_name, register):
    assert model_registry.get_champion(client, model_name) is None
    v1 = register(model_name)
    client.transition_model_version_stage(model_name, v1, "Production")
    assert str(model_registry.get_champion(client, model_name).version) == v1
