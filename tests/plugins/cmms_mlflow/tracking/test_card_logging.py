"""The model card's two writes (facts, then the rendered card) on a real MLflow store."""

from __future__ import annotations

import json

import pytest

from cmms_mlflow.tracking.card_logging import CARD_ARTIFACT, load_facts, log_card, read_card, update_card


@pytest.fixture
def run_id(client) -> str:
    experiment = client.get_experiment_by_name("card-tests")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("card-tests")
    return client.create_run(experiment_id).info.run_id


def test_a_step_killed_between_the_facts_and_the_card_is_repaired_by_its_retry(client, run_id, monkeypatch):
    log_card(client, run_id, {"model_name": "pm", "holdout": None})
    assert "Not evaluated yet" in read_card(client, run_id)

    real = client.log_text

    def killed(run, text, path):  # the process dies after the facts, before the card
        if path == CARD_ARTIFACT:
            raise KeyboardInterrupt("killed")
        return real(run, text, path)

    monkeypatch.setattr(client, "log_text", killed)
    holdout = {"threshold": 0.4, "rows": 10, "positives": 2, "metrics": {}, "slices": []}
    with pytest.raises(KeyboardInterrupt):
        update_card(client, run_id, "validate_model", version="3", holdout=holdout)
    assert load_facts(client, run_id)["holdout"] == holdout  # facts newer than the card...
    assert "Not evaluated yet" in read_card(client, run_id)

    monkeypatch.setattr(client, "log_text", real)
    update_card(client, run_id, "validate_model", version="3", holdout=holdout)  # ...until the retry
    card = read_card(client, run_id)
    assert "At the version's threshold 0.4000 on 10 holdout rows" in card and card.startswith(
        "# Model card: `pm` version 3"
    )
    assert load_facts(client, run_id)["updated_by"] == "validate_model"


def test_a_run_without_a_card_or_with_unreadable_facts_is_left_alone(client, run_id):
    assert update_card(client, run_id, "report", approval={"outcome": "promoted"}) is None
    assert read_card(client, run_id) is None
    client.log_text(run_id, "{not json", "model_card.json")
    assert load_facts(client, run_id) is None
    client.log_text(run_id, json.dumps([1, 2]), "model_card.json")
    assert load_facts(client, run_id) is None
