"""The model API (/api/v1/ml) served by a real Airflow api-server, with real JWTs from /auth/token.

Uses the ``airflow_cluster`` fixture (api-server, scheduler, dag-processor; users admin, viewer
and operator). One training run, triggered through the API, gives a real champion; after that:
its extra links resolve through Airflow's REST API, each promotion (the DAG's, the API's, a
rollback through model_promotion) emits the champion Asset event queued for the scoring DAG,
and a scoring run after the API's promotion uses the new champion.

The cluster's scheduler runs with ``use_job_schedule=False`` (no nightly run may appear
mid-test), which also stops it from creating Asset-triggered runs: the test checks that the
event is queued for ``predictive_maintenance_scoring`` and then triggers that DAG itself.
"""

from __future__ import annotations

import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from support import CLUSTER_SLOTS, slot

from cmms_mlflow.integrations.assets import champion_asset
from cmms_mlflow.registry import model_registry
from cmms_pm.batch import batch_uri

if TYPE_CHECKING:
    import pandas as pd

pytestmark = pytest.mark.slow

ML = "/api/v1/ml"
PIPELINE = "predictive_maintenance"  # the cluster has two specs: a request names its pipeline
TRAINING = "predictive_maintenance_training"
SCORING = "predictive_maintenance_scoring"


@pytest.fixture(scope="module")
def cluster_client(airflow_cluster):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=airflow_cluster.mlflow_uri, registry_uri=airflow_cluster.mlflow_uri)


def _register_without_model(client, name: str) -> str:
    """A registered version with no model behind it: enough for registry-only checks."""
    found = client.get_experiment_by_name("api-tests")
    experiment_id = found.experiment_id if found else client.create_experiment("api-tests")
    run = client.create_run(experiment_id)
    return str(
        model_registry.register_version(
            client, name=name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
            description="api test", tags={},
        ).version
    )  # fmt: skip


@pytest.fixture(scope="module")
def registry_only_model(cluster_client) -> tuple[str, str, str]:
    """(name, champion, other version), set up directly in the registry: no Asset event, no scoring."""
    name = f"pm_api_{uuid.uuid4().hex[:8]}"
    v1, v2 = _register_without_model(cluster_client, name), _register_without_model(cluster_client, name)
    model_registry.transition(cluster_client, name, v1, "Production")
    return name, v1, v2


def _promote_path(name: str, version: str | int) -> str:
    return f"{ML}/models/{name}/versions/{version}/promote"


def test_anonymous_callers_get_401_on_every_route(airflow_cluster, registry_only_model):
    name, v1, _ = registry_only_model
    calls = [
        ("GET", f"{ML}/models/{name}/production", None),
        ("GET", f"{ML}/models/{name}/history", None),
        ("GET", f"{ML}/models/{name}/performance", None),
        ("POST", f"{ML}/models/train", {"modelName": name, "pipeline": PIPELINE}),
        ("POST", _promote_path(name, v1), {"stage": "Production", "reason": "anonymous"}),
        # Invalid input is still 401: authentication comes before validation.
        ("POST", _promote_path("bad$name", 0), {"stage": "Gold"}),
        # The Models page's read routes.
        ("GET", f"{ML}/models", None),
        ("GET", f"{ML}/models/{name}", None),
        ("GET", f"{ML}/models/{name}/versions/{v1}", None),
        ("GET", f"{ML}/models/{name}/versions/{v1}/plots/drift", None),
    ]
    for method, path, body in calls:
        status, answer = airflow_cluster.request(method, path, body, auth=False)
        assert status == 401, (method, path, status, answer)


def _get_page(cluster, path: str, user: str | None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a page of the api-server, as ``user`` (anonymous if None)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(cluster.base_url + path)
    if user is not None:
        req.add_header("Authorization", f"Bearer {cluster.token(user)}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_the_models_page_needs_a_login_and_allows_no_inline_script(airflow_cluster):
    for path in ("/cmms-ui/models/", "/cmms-ui/static/models.js", "/cmms-ui/models/pm/versions/1"):
        assert _get_page(airflow_cluster, path, None)[0] == 401, path
    status, headers, body = _get_page(airflow_cluster, "/cmms-ui/models/", "viewer")
    assert status == 200 and b"<table" not in body and b"models.js" in body
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'self'" in csp
    assert _get_page(airflow_cluster, "/cmms-ui/static/..%2F..%2Fapi.py", "viewer")[0] in (404, 422)


def test_the_read_routes_answer_what_the_registry_holds(airflow_cluster, registry_only_model):
    name, v1, v2 = registry_only_model
    status, row = airflow_cluster.request("GET", f"{ML}/models/{name}", user="viewer")
    assert status == 200, row
    assert row["champion"]["version"] == v1 and row["spec"] is None  # no spec owns this model
    assert row["permissions"] == {
        "promote": False, "rollback": False, "override": False, "train": False, "approve": False,
    }  # fmt: skip
    assert airflow_cluster.request("GET", f"{ML}/models/{name}", user="operator")[1]["permissions"]["promote"]
    status, version = airflow_cluster.request("GET", f"{ML}/models/{name}/versions/{v2}", user="viewer")
    assert status == 200 and version["version"] == v2 and version["plots"] == [], version
    assert airflow_cluster.request("GET", f"{ML}/models/{name}/versions/999")[0] == 404
    assert airflow_cluster.request("GET", f"{ML}/models/{name}/versions/{v1}/plots/drift")[0] == 404
    assert airflow_cluster.request("GET", f"{ML}/models/{name}/versions/{v1}/plots/..%2Fmlflow.db")[0] in (
        404, 422,
    )  # fmt: skip
    status, listing = airflow_cluster.request("GET", f"{ML}/models", user="viewer")
    assert status == 200, listing
    # One row per cluster spec (tests/dags/conftest.py CLUSTER_SPECS, and the slots of support.py).
    base = {"predictive_maintenance_rf", "ai4i_hgb", "pm_notify_rf", "pm_serve_rf"}
    assert {m["name"] for m in listing["models"]} == base | {slot(s).model for s in CLUSTER_SLOTS}
    # Who may answer approvals is Airflow's HITL rule: pm_notify names one approver; the others let
    # anyone answer who may update the DAG's HITL details (SimpleAuthManager: not a viewer).
    approve = {
        user: {m["name"]: m["permissions"]["approve"] for m in _listing(airflow_cluster, user)}
        for user in ("viewer", "operator", "approver")
    }
    # pm_serve (the predict route's fixture, test_predict_api.py) has no approvers either: left out.
    shown = base - {"pm_serve_rf"}
    approve = {user: {m: may for m, may in row.items() if m in shown} for user, row in approve.items()}
    assert approve == {
        "viewer": {"predictive_maintenance_rf": False, "ai4i_hgb": False, "pm_notify_rf": False},
        "operator": {"predictive_maintenance_rf": True, "ai4i_hgb": True, "pm_notify_rf": False},
        "approver": {"predictive_maintenance_rf": True, "ai4i_hgb": True, "pm_notify_rf": True},
    }


def _listing(cluster, user: str) -> list[dict]:
    status, body = cluster.request("GET", f"{ML}/models", user=user)
    assert status == 200, body
    return body["models"]


def test_a_viewer_can_read_but_gets_403_on_train_and_promote(airflow_cluster, registry_only_model):
    name, v1, v2 = registry_only_model
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/production", user="viewer")
    assert status == 200 and body["version"] == v1, body
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/history", user="viewer")
    assert status == 200 and body["events"][-1]["version"] == v1, body
    before = {r["dag_run_id"] for r in airflow_cluster.dag_runs(TRAINING)}
    status, body = airflow_cluster.request(
        "POST", f"{ML}/models/train", {"modelName": name, "pipeline": PIPELINE}, user="viewer"
    )
    assert status == 403, body
    status, body = airflow_cluster.request(
        "POST", _promote_path(name, v2), {"stage": "Production", "reason": "viewer"}, user="viewer"
    )
    assert status == 403, body
    assert {r["dag_run_id"] for r in airflow_cluster.dag_runs(TRAINING)} == before


def test_production_of_an_unknown_model_or_a_model_without_champion_is_404(airflow_cluster, cluster_client):
    status, body = airflow_cluster.request("GET", f"{ML}/models/pm_no_such_model/production")
    assert status == 404 and "does not exist" in body["detail"], body
    name = f"pm_api_{uuid.uuid4().hex[:8]}"
    _register_without_model(cluster_client, name)
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/production")
    assert status == 404 and "no Production version" in body["detail"], body
    status, body = airflow_cluster.request("GET", f"{ML}/models/..%2Fetc/production")
    assert status in (404, 422), body


def test_performance_serves_the_stored_outcomes_and_an_unknown_model_is_404(
    airflow_cluster, cluster_client, registry_only_model
):
    import pandas as pd

    from cmms_mlflow.hooks.mlflow_hook import _default_artifact_location
    from cmms_mlflow.tracking import realized_outcomes
    from cmms_pm.outcomes import measure

    name, v1, _ = registry_only_model
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/performance", user="viewer")
    assert status == 200 and body == {"name": name, "versions": []}, body  # never measured
    at = pd.Timestamp("2026-03-01T03:00Z")
    predictions = pd.DataFrame(
        {"equipment_id": ["A", "B"], "scored_at": [at, at], "at_risk": [True, False], "model_version": v1}
    )
    # A fails 40 h after its alert; B (not alerted) 100 h after: outside the horizon, and it makes the
    # day mature (known until 100 h after scoring).
    hours = [pd.Timedelta(hours=40), pd.Timedelta(hours=100)]
    failures = pd.DataFrame({"entity": ["A", "B"], "failure_time": [at + h for h in hours]})
    report = measure(predictions, failures, entity_column="equipment_id", horizon_hours=48, now="2026-03-10")
    realized_outcomes.store(
        cluster_client, name, report, window_days=7, tags={},
        artifact_location=_default_artifact_location(airflow_cluster.mlflow_uri, None),
    )  # fmt: skip
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/performance", user="viewer")
    assert status == 200, body
    (served,) = body["versions"]
    assert served["version"] == v1 and served["window"]["recall"] == 1.0 and served["window"]["tn"] == 1
    assert served["days"][0]["lead_time_hours_median"] == 40.0
    status, body = airflow_cluster.request("GET", f"{ML}/models/pm_no_such_model/performance", user="viewer")
    assert status == 404 and "does not exist" in body["detail"], body
    assert airflow_cluster.request("GET", f"{ML}/models/{name}/performance?limit=0")[0] == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"hyperparameters": {"n_estimators": 0}}, "n_estimators"),
        ({"hyperparameters": {"max_depth": "deep"}}, "max_depth"),
        ({"hyperparameters": {"learning_rate": 0.1}}, "learning_rate"),
        ({"modelName": "bad$name"}, "modelName"),
        ({"modelName": "0x1F"}, "modelName"),
        ({"datasetVersion": "telemetry.xlsx"}, "data_source"),
        ({"datasetVersion": "s3://bucket/t.csv?endpoint_override=attacker.example"}, "data_source"),
        ({"parameters": {"f1_threshold": 1.5}}, "f1_threshold"),
        ({"parameters": {"model_name": "ai4i_hgb"}}, "model_name"),
        ({"source": "s3://somewhere/model.pkl"}, "source"),
        # Another spec's model (the issue's cross-spec write) or one no spec owns: a pipeline trains its own.
        ({"modelName": "ai4i_hgb"}, "is not pipeline 'predictive_maintenance'"),
        ({"modelName": "somebody_elses_model"}, "is not pipeline 'predictive_maintenance'"),
    ],
    ids=["zero-trees", "depth-not-int", "unknown-hyperparameter", "bad-name", "numeric-name", "bad-dataset",
         "s3-endpoint-override", "threshold", "model-name-parameter", "artifact-source",
         "another-specs-model", "unowned-model"],
)  # fmt: skip
def test_invalid_training_requests_are_422_and_trigger_nothing(airflow_cluster, body, field):
    import json

    before = {r["dag_run_id"] for r in airflow_cluster.dag_runs(TRAINING)}
    body = {"modelName": "predictive_maintenance_rf", "pipeline": PIPELINE, **body}
    status, answer = airflow_cluster.request("POST", f"{ML}/models/train", body, user="operator")
    assert status == 422, (body, status, answer)
    assert field in json.dumps(answer), answer
    assert {r["dag_run_id"] for r in airflow_cluster.dag_runs(TRAINING)} == before


def test_a_training_request_cannot_write_another_specs_model_nor_skip_its_approval(
    airflow_cluster, cluster_client
):
    """The issue's reproduction: a plain user trains through spec A with spec B's model and a zero
    threshold; B requires approval. Refused before a run exists, through the model API and the REST API."""
    gated = slot("pm_gated")
    dags = (TRAINING, gated.training)
    runs = {dag: {r["dag_run_id"] for r in airflow_cluster.dag_runs(dag)} for dag in dags}
    attack = {
        "pipeline": PIPELINE, "modelName": gated.model,
        "parameters": {"f1_threshold": 0.0, "min_improvement": -1.0},
    }  # fmt: skip
    status, answer = airflow_cluster.request("POST", f"{ML}/models/train", attack, user="operator")
    assert status == 422, answer
    assert f"modelName '{gated.model}' is not pipeline 'predictive_maintenance'" in str(answer)
    status, answer = airflow_cluster.request(
        "POST", f"/api/v2/dags/{TRAINING}/dagRuns",
        {"logical_date": None, "conf": {"model_name": gated.model, "f1_threshold": 0.0}}, user="operator",
    )  # fmt: skip
    assert status == 400 and "model_name" in str(answer), answer
    # Nor can a run of B's own DAG switch its approval off.
    status, answer = airflow_cluster.request(
        "POST", f"/api/v2/dags/{gated.training}/dagRuns",
        {"logical_date": None, "conf": {"require_approval": False, "f1_threshold": 0.0}}, user="operator",
    )  # fmt: skip
    assert status == 400 and "require_approval" in str(answer), answer
    assert {dag: {r["dag_run_id"] for r in airflow_cluster.dag_runs(dag)} for dag in runs} == runs
    assert cluster_client.search_registered_models(f"name = '{gated.model}'") == []


def test_a_pipeline_you_may_not_trigger_and_one_that_does_not_exist_get_the_same_403(airflow_cluster):
    """Authorization before validation: the answer never tells whether a pipeline exists."""
    answers = {}
    for user, pipeline in (
        ("viewer", PIPELINE), ("viewer", "no_such_pipeline"), ("operator", "no_such_pipeline"),
    ):  # fmt: skip
        status, answer = airflow_cluster.request(
            "POST", f"{ML}/models/train", {"pipeline": pipeline, "parameters": {"f1_threshold": 7}}, user=user
        )
        assert status == 403, (user, pipeline, status, answer)
        answers[(user, pipeline)] = answer["detail"].replace(pipeline, "<pipeline>")
    # The viewer's two answers are identical once the name they sent is taken out.
    assert answers[("viewer", PIPELINE)] == answers[("viewer", "no_such_pipeline")]
    assert "you may trigger: []" in answers[("viewer", PIPELINE)]
    assert "'predictive_maintenance'" in answers[("operator", "no_such_pipeline")]  # theirs, to help
    # A model no spec owns, with no pipeline named: no pipeline to run, the same 403.
    status, answer = airflow_cluster.request(
        "POST", f"{ML}/models/train", {"modelName": "somebody_elses_model"}, user="operator"
    )
    assert status == 403, answer
    # Only the shape of a body, which reveals nothing, is checked first.
    status, answer = airflow_cluster.request(
        "POST", f"{ML}/models/train", {"pipeline": "bad name!"}, user="viewer"
    )
    assert status == 422, answer


def test_only_an_approver_promotes_a_model_whose_spec_requires_approval_and_a_no_needs_an_override(
    airflow_cluster, cluster_client
):
    gated = slot("pm_gated")  # approval required; approver: "approver"
    name = gated.model
    v1, v2, v3 = (_register_without_model(cluster_client, name) for _ in range(3))

    def promote(version: str, user: str, reason: str, stage: str = "Production", **extra) -> tuple[int, dict]:
        body = {"stage": stage, "reason": reason, **extra}
        return airflow_cluster.request("POST", _promote_path(name, version), body, user=user)

    # The page offers it only to the approver.
    perms = {
        user: airflow_cluster.request("GET", f"{ML}/models/{name}", user=user)[1]["permissions"]
        for user in ("operator", "approver")
    }
    assert [perms["operator"][k] for k in ("promote", "rollback", "override")] == [False, False, False]
    assert (perms["approver"]["promote"], perms["approver"]["override"]) == (True, True)

    status, answer = promote(v1, "operator", "go live")
    assert status == 403 and "spec 'pm_gated' requires approval" in answer["detail"], answer
    assert model_registry.champion_version(cluster_client, name) is None
    status, answer = promote(v1, "approver", "checked")
    assert status == 200, answer
    # Staging or archiving needs no approver.
    status, answer = promote(v3, "operator", "unused", stage="Archived")
    assert status == 200, answer

    # A version whose approval step said no: 409 even for the approver, unless they override it.
    model_registry.set_tags(cluster_client, name, v2, {"approval_status": "timed_out", "approval_by": ""})
    status, answer = promote(v2, "approver", "late")
    assert status == 409 and "was timed out at its approval step" in answer["detail"], answer
    assert promote(v2, "operator", "reviewed after the deadline", overrideApproval=True)[0] == 403
    status, answer = promote(v2, "approver", "reviewed after the deadline", overrideApproval=True)
    assert status == 200 and answer["override"]["of"] == "timed_out", answer
    tags = cluster_client.get_model_version(name, v2).tags
    assert (tags["approval_override"], tags["approval_override_by"]) == ("timed_out", f"approver via {ML}")
    status, history = airflow_cluster.request("GET", f"{ML}/models/{name}/history", user="viewer")
    assert history["events"][0]["override"]["reason"] == "reviewed after the deadline"

    # A rollback is a Production change too: the operator's, through model_promotion, fails and changes
    # nothing.
    status, run = airflow_cluster.request(
        "POST", "/api/v2/dags/model_promotion/dagRuns",
        {"logical_date": None, "conf": {"model_name": name, "version": "previous", "stage": "Production",
                                        "reason": "roll back without the approver"}},
        user="operator",
    )  # fmt: skip
    assert status == 200, run
    (done,) = airflow_cluster.wait_for_runs({run["dag_run_id"]}, 1, timeout=300, dag_id="model_promotion")
    states = airflow_cluster.task_instances(run["dag_run_id"], "model_promotion")
    assert done["state"] == "failed" and states["change_stage"]["state"] == "failed", states
    assert states["change_stage"]["try_number"] == 1  # not retried
    assert model_registry.aliases_of(cluster_client, name) == {"champion": v2, "previous_champion": v1}


def test_promotion_errors_are_404_409_and_422(airflow_cluster, cluster_client, registry_only_model):
    name, v1, v2 = registry_only_model
    cases = [
        (_promote_path("pm_no_such_model", 1), {"stage": "Production", "reason": "x" * 5}, 404),
        (_promote_path(name, 999), {"stage": "Production", "reason": "unknown version"}, 404),
        (_promote_path(name, v2), {"stage": "Gold", "reason": "no such stage"}, 422),
        (_promote_path(name, v2), {"stage": "None", "reason": "not a target"}, 422),
        (_promote_path(name, v2), {"stage": "Production"}, 422),  # no reason
        (_promote_path(name, 0), {"stage": "Production", "reason": "version zero"}, 422),
        (_promote_path(name, "two"), {"stage": "Production", "reason": "not a number"}, 422),
        (_promote_path("bad$name", 1), {"stage": "Production", "reason": "bad name"}, 422),
        (_promote_path(name, v2), {"stage": "Production", "reason": "r", "source": "s3://x"}, 422),
        (_promote_path(name, v1), {"stage": "Archived", "reason": "retire the champion"}, 409),
        (_promote_path(name, v2), {"stage": "Production", "reason": "stale", "expectedChampion": 999}, 409),
    ]
    for path, body, expected in cases:
        status, answer = airflow_cluster.request("POST", path, body, user="operator")
        assert status == expected, (path, body, status, answer)
        if expected == 409:
            assert "champion" in answer["detail"], answer
    assert str(model_registry.get_champion(cluster_client, name).version) == v1
    model_registry.check_invariants(cluster_client, name)


def test_staging_by_hand_through_the_api_is_recorded(airflow_cluster, cluster_client, registry_only_model):
    name, v1, v2 = registry_only_model
    status, body = airflow_cluster.request(
        "POST", _promote_path(name, v2), {"stage": "Staging", "reason": "shadow test"}, user="operator"
    )
    assert status == 200, body
    assert (body["previous_stage"], body["stage"], body["champion_before"]) == ("None", "Staging", v1)
    tags = cluster_client.get_model_version(name, v2).tags
    assert tags["stage_changed_by"] == f"operator via {ML}"
    assert tags["stage_change_reason"] == "shadow test"
    assert model_registry.aliases_of(cluster_client, name) == {"champion": v1, "challenger": v2}


def test_production_never_reports_an_archived_version_and_the_next_write_repairs(
    airflow_cluster, cluster_client
):
    """An interrupted promotion (stage changed, alias not moved): GET reports the Production version
    with a warning; the next promote request repairs the aliases and the history records it."""
    name = f"pm_api_{uuid.uuid4().hex[:8]}"
    v1, v2, v3 = (_register_without_model(cluster_client, name) for _ in range(3))
    model_registry.transition(cluster_client, name, v1, "Production")
    cluster_client.transition_model_version_stage(name, v2, "Production", archive_existing_versions=True)

    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/production", user="viewer")
    assert status == 200, body
    assert (body["version"], body["stage"], body["aliases"]) == (v2, "Production", [])
    assert body["modelUri"] == f"models:/{name}/{v2}"
    assert body["warnings"] and f"v{v1} (Archived)" in body["warnings"][0], body

    status, body = airflow_cluster.request(
        "POST", _promote_path(name, v3), {"stage": "Staging", "reason": "next candidate"}, user="operator"
    )
    assert status == 200 and body["repairs"], body
    assert model_registry.aliases_of(cluster_client, name) == {
        "champion": v2,
        "previous_champion": v1,
        "challenger": v3,
    }
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/history?limit=2", user="viewer")
    assert status == 200, body
    staged, repair = body["events"]
    assert (staged["type"], staged["actor"]) == ("stage_change", f"operator via {ML}")
    assert (repair["type"], repair["champion_before"], repair["champion_after"]) == ("repair", v1, v2)
    assert body["nextPageToken"], body
    status, more = airflow_cluster.request(
        "GET", f"{ML}/models/{name}/history?limit=2&pageToken={quote(body['nextPageToken'], safe='')}"
    )
    assert status == 200 and [e["type"] for e in more["events"]] == ["promotion"], more
    for bad in ("limit=0", "limit=501", "pageToken=not-a-token"):
        status, answer = airflow_cluster.request("GET", f"{ML}/models/{name}/history?{bad}")
        assert status == 422, (bad, answer)


# --- one real training run, then scoring, promotion and rollback --------------------------------


def _champion_events(cluster, spec: str = "predictive_maintenance", **filters) -> list[dict]:
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in filters.items())
    events = cluster.request("GET", f"/api/v2/assets/events?limit=100&{query}")[1]["asset_events"]
    return [e for e in events if e["name"] == champion_asset(spec).name]


def _score(cluster, name: str, scoring: str = SCORING) -> pd.DataFrame:
    """Trigger the scoring DAG ``scoring`` for ``name``, wait for it, return its predictions."""
    import pandas as pd

    status, run = cluster.request(
        "POST", f"/api/v2/dags/{scoring}/dagRuns",
        {"logical_date": None, "conf": {"model_name": name, "n_units": 300, "risk_threshold": 0.5}},
    )  # fmt: skip
    assert status == 200, run
    (finished,) = cluster.wait_for_runs({run["dag_run_id"]}, 1, timeout=300, dag_id=scoring)
    assert finished["state"] == "success", cluster.task_instances(run["dag_run_id"], scoring)
    return pd.read_parquet(
        f"{batch_uri(str(cluster.home / 'data'), scoring, run['dag_run_id'])}/{name}/predictions.parquet"
    )


def test_train_through_the_api_then_links_scoring_promotion_and_rollback(airflow_cluster, cluster_client):
    mine = slot("pm_api")  # a copy of the shipped spec owning its own model (a spec trains only its own)
    name, TRAINING, SCORING = mine.model, mine.training, mine.scoring  # noqa: N806
    request = {
        "modelName": name,
        "pipeline": mine.spec,
        "datasetVersion": "synthetic",
        "hyperparameters": {"n_estimators": 20, "max_depth": 8},
        # A small, quick model: the threshold only has to let it through.
        "parameters": {"n_samples": 2500, "experiment_name": f"api-{name}", "f1_threshold": 0.3},
    }
    status, body = airflow_cluster.request("POST", f"{ML}/models/train", request, user="operator")
    assert status == 201, body
    run_id = body["dagRunId"]
    assert body["conf"]["n_estimators"] == 20 and body["conf"]["min_improvement"] == 0.0  # defaults filled
    dag_run = airflow_cluster.request("GET", f"/api/v2/dags/{TRAINING}/dagRuns/{quote(run_id, safe='')}")[1]
    assert dag_run["conf"]["model_name"] == name
    assert dag_run["triggering_user_name"] == "operator"

    (finished,) = airflow_cluster.wait_for_runs({run_id}, 1, timeout=600, dag_id=TRAINING)
    assert finished["state"] == "success", airflow_cluster.task_instances(run_id, TRAINING)
    assert airflow_cluster.task_instances(run_id, TRAINING)["promote_model"]["state"] == "success"

    # Production info for the new champion.
    status, info = airflow_cluster.request("GET", f"{ML}/models/{name}/production", user="viewer")
    assert status == 200, info
    assert (info["version"], info["stage"], info["aliases"]) == ("1", "Production", ["champion"])
    assert info["runId"] and info["metrics"]["val_f1"] > 0.5
    assert info["validation"]["validation_status"] == "passed" and "decision_reason" in info["validation"]
    assert info["dataVersion"] and info["promotedAt"] and info["promotedBy"].startswith("airflow:")
    # Airflow's own address of the training run, built from its ids (never a URL tag).
    run_page = f"{airflow_cluster.base_url}/dags/{TRAINING}/runs/{quote(run_id, safe='')}"
    assert info["airflowRunUrl"] == run_page
    assert info["modelUri"] == f"models:/{name}@champion"

    # Extra links resolve through Airflow's REST API.
    run_path = f"/api/v2/dags/{TRAINING}/dagRuns/{quote(run_id, safe='')}/taskInstances"
    links = {
        task: airflow_cluster.request("GET", f"{run_path}/{task}/links")[1]["extra_links"]
        for task in ("train_model", "register_model", "promote_model")
    }
    experiment_id = cluster_client.get_experiment_by_name(f"api-{name}").experiment_id
    assert links["train_model"]["MLflow run"].endswith(f"/#/experiments/{experiment_id}/runs/{info['runId']}")
    for task in ("register_model", "promote_model"):
        assert links[task]["MLflow model version"].endswith(f"/#/models/{name}/versions/1"), links

    # The promote step emitted the champion Asset event, queued for the scoring DAG.
    (event,) = _champion_events(airflow_cluster, mine.spec, source_dag_id=TRAINING, source_run_id=run_id)
    assert (event["extra"]["model_name"], event["extra"]["champion_version"]) == (name, "1")
    queued = airflow_cluster.request("GET", f"/api/v2/dags/{SCORING}/assets/queuedEvents")[1]
    assert queued["total_entries"] >= 1, queued

    # A second version of the same trained model (so it carries the pipeline's provenance, which
    # scoring requires), promoted through the API: scoring follows it. MLflow resolves a models:/m-...
    # source through the fluent tracking URI: this thread's session points it at the cluster's store.
    from cmms_mlflow.hooks.client_context import client_settings

    first = cluster_client.get_model_version(name, "1")
    uri = airflow_cluster.mlflow_uri
    with client_settings({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}):
        v2 = str(
            cluster_client.create_model_version(
                name, first.source, run_id=first.run_id, tags={"model_spec": mine.spec}
            ).version
        )
    status, body = airflow_cluster.request(
        "POST", _promote_path(name, v2), {"stage": "Production", "reason": "hotfix", "expectedChampion": 1},
        user="operator",
    )  # fmt: skip
    assert status == 200, body
    assert (body["version"], body["replaced"], body["unchanged"]) == (v2, "1", False)
    tags = cluster_client.get_model_version(name, v2).tags
    assert (tags["promoted_by"], tags["promotion_reason"], tags["replaced_version"]) == (
        f"operator via {ML}", "hotfix", "1",
    )  # fmt: skip
    (event,) = [
        e for e in _champion_events(airflow_cluster, mine.spec, asset_id=event["asset_id"])
        if e["extra"].get("model_name") == name and e["extra"]["champion_version"] == v2
    ]  # fmt: skip
    assert event["extra"]["source"] == ML
    predictions = _score(airflow_cluster, name, SCORING)
    assert set(predictions["model_version"]) == {v2} and len(predictions) == 300

    # One-click rollback through the model_promotion DAG.
    status, run = airflow_cluster.request(
        "POST", "/api/v2/dags/model_promotion/dagRuns",
        {"logical_date": None, "conf": {"model_name": name, "version": "previous", "stage": "Production",
                                        "reason": "hotfix misbehaves"}},
        user="operator",
    )  # fmt: skip
    assert status == 200, run
    promotion_dag = "model_promotion"
    (rolled,) = airflow_cluster.wait_for_runs({run["dag_run_id"]}, 1, timeout=300, dag_id=promotion_dag)
    assert rolled["state"] == "success", airflow_cluster.task_instances(rolled["dag_run_id"], promotion_dag)
    assert model_registry.aliases_of(cluster_client, name) == {"champion": "1", "previous_champion": v2}
    model_registry.check_invariants(cluster_client, name)
    tags = cluster_client.get_model_version(name, "1").tags
    assert tags["promotion_kind"] == "rollback" and tags["replaced_version"] == v2
    assert tags["promoted_by"] == f"operator via airflow:model_promotion/{run['dag_run_id']}"
    status, info = airflow_cluster.request("GET", f"{ML}/models/{name}/production")
    assert (info["version"], info["promotionReason"]) == ("1", "hotfix misbehaves")
    (event,) = _champion_events(
        airflow_cluster, mine.spec, source_dag_id="model_promotion", source_run_id=run["dag_run_id"]
    )
    assert event["extra"] == {"model_name": name, "champion_version": "1"}

    # Every change is in the history, newest first, none overwritten: who, from -> to, why, the run.
    status, body = airflow_cluster.request("GET", f"{ML}/models/{name}/history", user="viewer")
    assert status == 200, body
    summary = [(e["type"], e["version"], e["champion_before"], e["champion_after"]) for e in body["events"]]
    assert summary == [
        ("rollback", "1", v2, "1"),
        ("promotion", v2, "1", v2),
        ("promotion", "1", None, "1"),
        ("staging", "1", None, None),
    ], summary
    rollback, by_api, by_dag, _ = body["events"]
    assert rollback["actor"] == f"operator via airflow:model_promotion/{run['dag_run_id']}"
    assert rollback["airflow"] == {
        "dag_id": "model_promotion",
        "run_id": run["dag_run_id"],
        "task_id": "change_stage",
    }
    assert rollback["reason"] == "hotfix misbehaves"
    assert (by_api["actor"], by_api["reason"], by_api["airflow"]) == (f"operator via {ML}", "hotfix", None)
    assert by_dag["airflow"] == {"dag_id": TRAINING, "run_id": run_id, "task_id": "promote_model"}
    assert body["nextPageToken"] is None


def test_endpoint_latency(airflow_cluster, registry_only_model):
    """Not a benchmark gate: prints p50/p99 of 50 sequential and 50 concurrent (8 threads) GETs of
    the production route, and of 20 sequential stage changes (Staging <-> Archived) by promote."""
    name, _, v2 = registry_only_model
    path = f"{ML}/models/{name}/production"
    airflow_cluster.token()

    def timed(_: int) -> float:
        started = time.perf_counter()
        status, _body = airflow_cluster.request("GET", path)
        assert status == 200
        return time.perf_counter() - started

    sequential = [timed(i) for i in range(50)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(timed, range(50)))
    for label, samples in (("sequential", sequential), ("concurrent x8", concurrent)):
        q = statistics.quantiles(samples, n=100)
        print(f"GET {path} {label}: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
    assert statistics.median(sequential) < 5

    promote = []
    for i in range(20):
        body = {"stage": ("Archived", "Staging")[i % 2], "reason": "latency"}
        started = time.perf_counter()
        status, answer = airflow_cluster.request("POST", _promote_path(name, v2), body, user="operator")
        promote.append(time.perf_counter() - started)
        assert status == 200, answer
    q = statistics.quantiles(promote, n=100)
    print(f"POST {_promote_path(name, v2)} sequential: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")
