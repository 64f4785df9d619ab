"""The predict route (POST /api/v1/ml/models/{name}/predict) on a real Airflow api-server.

Uses the ``airflow_cluster`` fixture (tests/dags/conftest.py) and its ``pm_serve`` spec
(tests/dag_fixtures/models/pm_serve.yaml: at most 50 rows and 64 KiB per request, reasons for
every row, the champion re-checked every 0.5 s). Two real models (different forests, so their
risks differ) are trained in this process with the pipeline's provenance and registered as v1
(champion, decision threshold 0.3) and v2; every risk an answer carries is compared with the risk
the version it names gives to the same rows, loaded here through the trusted loader.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from support import training_provenance

pytestmark = pytest.mark.slow

PROJECT_DIR = Path(__file__).resolve().parents[2]
ML = "/api/v1/ml"
NAME = "pm_serve_rf"
PREDICT = f"{ML}/models/{NAME}/predict"
IDS = ["equipment_id"]


@pytest.fixture(scope="module")
def served(airflow_cluster, tmp_path_factory):
    """``{version: (model, contract)}`` of pm_serve_rf's v1 (champion, threshold 0.3) and v2."""
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.client_context import client_settings
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.registry import model_registry
    from cmms_mlflow.registry.promotion import change_stage
    from cmms_mlflow.tracking.model_loading import load_version
    from cmms_mlflow.tracking.training_run import load_contract, log_training_run
    from cmms_pm.batch import prepare_batch
    from cmms_pm.spec import load_spec

    spec = load_spec(PROJECT_DIR / "tests" / "dag_fixtures" / "models" / "pm_serve.yaml")
    uri = airflow_cluster.mlflow_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    manifest = prepare_batch(
        spec=spec, frame=None, source="synthetic", n_samples=3000, target_column="failure_within_7d",
        interval_start="2026-11-24T02:00:00+00:00", interval_end="2026-11-25T02:00:00+00:00",
        out_uri=str(tmp_path_factory.mktemp("serve-batch")),
    )  # fmt: skip
    versions = {}
    with client_settings({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}):
        experiment_id = MlflowHook().get_or_create_experiment(client, "pm_serve")
        for trees, depth in ((5, 4), (15, 8)):
            trained = log_training_run(
                client, experiment_id=experiment_id, manifest=manifest, spec=spec, estimator="random_forest",
                hyperparameters={"n_estimators": trees, "max_depth": depth}, tags=training_provenance(spec),
                run_name=f"rf{trees}",
            )  # fmt: skip
            version = model_registry.register_version(
                client, name=NAME, source=trained["model_uri"], run_id=trained["run_id"], description="serve",
                tags={},
            )  # fmt: skip
            versions[str(version.version)] = trained["run_id"]
        v1, v2 = versions
        client.set_model_version_tag(NAME, v1, "decision_threshold", "0.3")
        change_stage(
            client, name=NAME, version=v1, stage="Production", lock_dir=tmp_path_factory.mktemp("locks"),
            actor="test", reason="first champion", at="2026-11-26T00:00:00+00:00",
        )  # fmt: skip
        return {
            v: (load_version(client, NAME, v, spec_name=spec.name), load_contract(client, run_id))
            for v, run_id in versions.items()
        }


def _rows(count: int, seed: int = 7) -> list[dict]:
    """``count`` rows of the synthetic fleet, as a CMMS backend sends them (ids included)."""
    from cmms_pm.data import generate_telemetry
    from cmms_pm.schema import FEATURES

    frame = generate_telemetry(count, seed)[FEATURES]
    rows = json.loads(frame.to_json(orient="records"))
    for number, row in enumerate(rows):
        row["equipment_id"] = f"EQ-{seed}-{number:04d}"
    return rows


def _expected_risk(served, version: str, rows: list[dict]) -> np.ndarray:
    from cmms_pm.prediction import rows_frame
    from cmms_pm.training import positive_proba

    model, contract = served[version]
    return positive_proba(model, rows_frame(rows, contract, id_columns=IDS))


def _post(cluster, body: bytes | str, *, user: str | None = "operator", path: str = PREDICT, headers=None,
          chunked: bool = False) -> tuple[int, object]:  # fmt: skip
    """(status, JSON answer) of a raw POST: the body is sent as given (not re-encoded)."""
    url = urllib.parse.urlsplit(cluster.base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if user is not None:
        sent["Authorization"] = f"Bearer {cluster.token(user)}"
    data = body.encode() if isinstance(body, str) else body
    if chunked:
        conn.request("POST", path, body=iter([data[i : i + 8192] for i in range(0, len(data), 8192)]),
                     headers=sent, encode_chunked=True)  # fmt: skip
    else:
        conn.request("POST", path, body=data, headers=sent)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        return response.status, json.loads(raw or b"null")
    except ValueError:
        return response.status, raw.decode(errors="replace")


def _post_large(cluster, body: bytes | str, user: str = "operator") -> tuple[int, object]:
    """A POST whose body the server may refuse before reading it all: the body is sent a piece at a
    time and sending stops as soon as an answer arrives (or the server closes)."""
    import select
    import socket

    url = urllib.parse.urlsplit(cluster.base_url)
    data = body.encode() if isinstance(body, str) else body
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {cluster.token(user)}\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    sock = socket.create_connection((url.hostname, url.port), timeout=60)
    try:
        sock.sendall(head.encode())
        for start in range(0, len(data), 65536):
            if select.select([sock], [], [], 0)[0]:
                break  # answered before the whole body was sent
            try:
                sock.sendall(data[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read() or b"null")
    finally:
        sock.close()


def _predict(cluster, rows: list[dict], user: str = "operator") -> tuple[int, dict]:
    return _post(cluster, json.dumps({"rows": rows}), user=user)


def test_predict_needs_a_login_and_the_right_to_run_the_scoring_dag(airflow_cluster, served):
    body = json.dumps({"rows": _rows(2)})
    assert _post(airflow_cluster, body, user=None)[0] == 401
    # Authentication comes before anything else: a bad body, an unknown model, an oversized body.
    assert _post(airflow_cluster, "not json", user=None)[0] == 401
    assert _post(airflow_cluster, body, user=None, path=f"{ML}/models/pm_no_spec/predict")[0] == 401
    assert _post(airflow_cluster, "x" * 100_000, user=None)[0] == 401
    # A token that is not Airflow's: Airflow's own answer (403 "Invalid JWT token"), no prediction.
    status, answer = _post(airflow_cluster, body, headers={"Authorization": "Bearer not-a-jwt"}, user=None)
    assert status in (401, 403) and "predictions" not in answer, answer
    # A viewer may read the model's metadata but not score with it.
    assert airflow_cluster.request("GET", f"{ML}/models/{NAME}/production", user="viewer")[0] == 200
    status, answer = _post(airflow_cluster, body, user="viewer")
    assert status == 403, answer
    status, answer = _post(airflow_cluster, body, user="operator")
    assert status == 200, answer
    status, answer = _post(airflow_cluster, body, user="operator", path=f"{ML}/models/pm_no_spec/predict")
    assert status == 404 and "no model spec serves 'pm_no_spec'" in answer["detail"], answer


def test_predictions_carry_the_version_threshold_ids_reasons_and_contract_issues(airflow_cluster, served):
    rows = _rows(6)
    rows[1]["equipment_type"] = "spaceship"  # unseen category
    rows[2]["temperature_c"] = None  # missing value
    rows[3]["rpm"] = 1e7  # far outside the training range
    rows[4]["equipment_type"] = 3  # a category given as a number: "3", unseen
    rows[5]["equipment_id"] = "'); DROP TABLE x; --"  # ids are data, returned as sent
    status, answer = _predict(airflow_cluster, rows)
    assert status == 200, answer
    from cmms_mlflow.www.predict_api import PredictResponse

    PredictResponse.model_validate(answer)  # the documented shape, field for field
    v1 = sorted(served)[0]
    assert (answer["model"], answer["modelVersion"], answer["threshold"]) == (NAME, v1, 0.3)
    predictions = answer["predictions"]
    assert [p["ids"] for p in predictions] == [{"equipment_id": row["equipment_id"]} for row in rows]
    risks = np.array([p["risk"] for p in predictions])
    np.testing.assert_allclose(risks, _expected_risk(served, v1, rows), rtol=0, atol=1e-12)
    assert [p["alert"] for p in predictions] == [bool(r >= 0.3) for r in risks]
    assert [p["issues"] for p in predictions] == [
        [],
        [{"kind": "unseen_category", "feature": "equipment_type"}],
        [{"kind": "missing_value", "feature": "temperature_c"}],
        [{"kind": "out_of_range", "feature": "rpm"}],
        [{"kind": "unseen_category", "feature": "equipment_type"}],
        [],
    ]
    features = set(served[v1][1].features)
    for prediction in predictions:  # pm_serve explains every row, two reasons at most
        reasons = prediction["reasons"]
        assert len(reasons) <= 2 and all(r["feature"] in features and r["contribution"] > 0 for r in reasons)
        contributions = [r["contribution"] for r in reasons]
        assert contributions == sorted(contributions, reverse=True)
    assert any(p["reasons"] for p in predictions)


def _with(row: dict, **changes) -> str:
    """A body of one row with ``changes`` (a value given as text is written into the JSON as is)."""
    raw = {key: f"@{key}@" for key, value in changes.items() if isinstance(value, Raw)}
    text = json.dumps({"rows": [{**row, **{k: v for k, v in changes.items() if k not in raw}, **raw}]})
    for key, marker in raw.items():
        text = text.replace(json.dumps(marker), str(changes[key]))
    return text


class Raw(str):
    """A JSON literal to write as is (NaN, Infinity: what json.dumps would not write)."""


def _cases() -> list[tuple[str, str, dict, int, str]]:
    """(label, body, headers, status, a phrase of the answer) of each bad request."""
    good = _rows(3)
    one = good[0]
    text = {"Content-Type": "text/plain"}
    return [
        ("not json", "{'rows': nope", {}, 422, "not valid JSON"),
        ("NaN", _with(one, rpm=Raw("NaN")), {}, 422, "NaN and Infinity"),
        ("Infinity", _with(one, rpm=Raw("-Infinity")), {}, 422, "NaN and Infinity"),
        ("overflow", _with(one, rpm=Raw("1e999")), {}, 422, "NaN and Infinity"),
        ("text in a number", _with(one, rpm="fast"), {}, 422, "'rpm' needs numbers"),
        ("boolean in a number", _with(one, rpm=True), {}, 422, "'rpm' needs numbers"),
        ("fraction as a category", _with(one, equipment_type=1.5), {}, 422, "categorical"),
        ("unknown column", _with(one, temprature_c=1.0), {}, 422, "'temprature_c'"),
        ("missing column", json.dumps({"rows": [{k: v for k, v in one.items() if k != "rpm"}]}), {}, 422,
         "'rpm' is absent"),
        ("object in a cell", _with(one, rpm={"value": 1}), {}, 422, "a string, a number"),
        ("rows not a list", json.dumps({"rows": one}), {}, 422, "rows"),
        ("no rows", json.dumps({"rows": []}), {}, 422, "rows"),
        ("a row not an object", json.dumps({"rows": [1, 2]}), {}, 422, "rows"),
        ("another field", json.dumps({"rows": good, "model": "other"}), {}, 422, "model"),
        ("not JSON media", json.dumps({"rows": good}), text, 415, "application/json"),
        ("51 rows", json.dumps({"rows": _rows(51)}), {}, 413, "51 rows"),
    ]  # fmt: skip


def test_bad_bodies_are_clear_4xx_and_the_server_keeps_answering(airflow_cluster, served):
    for label, body, headers, expected, phrase in _cases():
        status, answer = _post(airflow_cluster, body, headers=headers)
        assert status == expected, (label, status, answer)
        assert phrase in json.dumps(answer), (label, answer)
    # Bodies over the byte limit are refused from their Content-Length, before they are read.
    for label, body in (("100k rows", json.dumps({"rows": [_rows(1)[0]] * 100_000})),
                        ("a long body", json.dumps({"rows": _rows(2), "pad": "x" * 70_000}))):  # fmt: skip
        status, answer = _post_large(airflow_cluster, body)
        assert status == 413 and "65536 bytes" in answer["detail"], (label, status, answer)
    # A body over the limit without a Content-Length (chunked) is cut off while it is read.
    status, answer = _post(airflow_cluster, json.dumps({"rows": _rows(400)}), chunked=True)
    assert status == 413 and "over 65536 bytes" in answer["detail"], (status, answer)
    # Every problem of a request is named at once, with the rows that have it.
    rows = _rows(8)
    for row in rows[2:5]:
        row["rpm"] = "n/a"
    del rows[6]["load_pct"]
    status, answer = _predict(airflow_cluster, rows)
    assert status == 422, answer
    found = {(p["kind"], p["column"]): (p["rows"], p["count"]) for p in answer["detail"]}
    assert found == {("wrong_type", "rpm"): ([2, 3, 4], 3), ("missing_column", "load_pct"): ([6], 1)}, found
    # Still serving, in the same process.
    status, answer = _predict(airflow_cluster, _rows(50))
    assert status == 200 and len(answer["predictions"]) == 50, answer


def test_the_champion_swaps_on_promotion_without_errors_or_mixed_answers(airflow_cluster, served):
    """Six clients post 20 rows in a loop while v2 is promoted through the API: every answer is 200,
    names one version and carries exactly that version's risks; once a client sees v2 it never
    sees v1 again, and v2 answers within seconds of the promotion."""
    v1, v2 = sorted(served)
    rows = _rows(20, seed=11)
    expected = {v: _expected_risk(served, v, rows) for v in (v1, v2)}
    assert not np.allclose(expected[v1], expected[v2])  # the two versions are told apart by their risks
    body = json.dumps({"rows": rows})
    seen: list[list[tuple[float, str]]] = [[] for _ in range(6)]
    failures: list[str] = []
    stop = threading.Event()

    def client(number: int) -> None:
        while not stop.is_set():
            status, answer = _post(airflow_cluster, body)
            if status != 200:
                failures.append(f"{status}: {answer}")
                continue
            version = answer["modelVersion"]
            risks = np.array([p["risk"] for p in answer["predictions"]])
            if version not in expected or not np.allclose(risks, expected[version], rtol=0, atol=1e-12):
                failures.append(f"v{version} answered risks of another version")
            seen[number].append((time.monotonic(), version))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        status, outcome = airflow_cluster.request(
            "POST", f"{ML}/models/{NAME}/versions/{v2}/promote",
            {"stage": "Production", "reason": "swap under load", "expectedChampion": int(v1)},
            user="operator",
        )  # fmt: skip
        promoted = time.monotonic()
        assert status == 200, outcome
        deadline = promoted + 60
        while time.monotonic() < deadline and not all(
            sum(1 for at, v in answers if v == v2 and at > promoted) >= 3 for answers in seen
        ):
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not failures, failures[:5]
    for answers in seen:
        versions = [v for _, v in answers]
        assert versions[0] == v1 and versions[-1] == v2, versions
        first_new = versions.index(v2)
        assert set(versions[first_new:]) == {v2}, versions  # never back to the old champion
    swapped = min(at for answers in seen for at, v in answers if v == v2)
    assert swapped - promoted < 15, swapped - promoted
