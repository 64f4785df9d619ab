"""The warm champion of the predict route (``cmms_mlflow.www.serving``) on a real MLflow SQLite store.

One small model, trained once with the pipeline's provenance, registered as several versions of a
model owned by a copy of the shipped spec. The route itself, on a real api-server, is in
tests/dags/test_predict_api.py.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time

import pytest
from support import training_provenance

from cmms_mlflow.registry import model_registry
from cmms_mlflow.www.serving import ChampionUnavailable, WarmChampions


@pytest.fixture(scope="module")
def trained(mlflow_store, small_batch, shipped_spec) -> dict:
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.client_context import client_settings
    from cmms_mlflow.hooks.mlflow_hook import MlflowHook
    from cmms_mlflow.tracking.training_run import log_training_run

    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    with client_settings({"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}):
        experiment_id = MlflowHook().get_or_create_experiment(client, "serving-tests")
        return log_training_run(
            client, experiment_id=experiment_id, manifest=small_batch, spec=shipped_spec,
            estimator="random_forest", hyperparameters={"n_estimators": 5, "max_depth": 4},
            tags=training_provenance(shipped_spec), run_name="serving",
        )  # fmt: skip


@pytest.fixture
def spec(shipped_spec, model_name):
    """The shipped spec serving ``model_name``, its champion re-checked every 0.2 s."""
    from cmms_pm.spec import ModelSpec

    raw = shipped_spec.to_dict()
    raw["registered_model"] = model_name
    raw["serving"] = {**raw["serving"], "refresh_seconds": 0.2}
    return ModelSpec.from_dict(raw)


def _version(client, name: str, trained: dict, threshold: str | None = None, run_id: str | None = None):
    """A new version of ``name`` made of the trained model (its run, or ``run_id``'s)."""
    from cmms_mlflow.hooks.client_context import client_settings

    if not model_registry.model_exists(client, name):
        client.create_registered_model(name)
    uri = client.tracking_uri
    with client_settings({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}):
        version = client.create_model_version(name, trained["model_uri"], run_id=run_id or trained["run_id"])
    if threshold is not None:
        client.set_model_version_tag(name, str(version.version), "decision_threshold", threshold)
    return str(version.version)


def _promote(client, name: str, version: str, expected: str | None) -> None:
    model_registry.promote(
        client, name, version, expected_champion=expected, lock_dir=None,
        audit={"promoted_by": "test", "promoted_at": "2026-11-27T00:00Z", "promotion_reason": "test"},
        key=f"serve{version}",
    )  # fmt: skip


def _until(found, timeout: float = 60):
    """``found()``'s first truthy value, polled (the champion's checks run in threads of their own)."""
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)
    return value


def _checking(warm, name: str) -> bool:
    return warm._slots[name].lock.locked()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def _counting(client, calls: list[int]):
    calls.append(1)
    yield client


def test_the_champion_is_loaded_once_kept_and_swapped_when_the_registry_moves(
    client, model_name, trained, spec
):
    v1 = _version(client, model_name, trained, threshold="0.35")
    v2 = _version(client, model_name, trained)
    _promote(client, model_name, v1, None)
    calls: list[int] = []
    clock = _Clock()
    warm = WarmChampions(lambda: _counting(client, calls), clock=clock)
    first = warm.get(spec)
    assert (first.version, first.threshold, first.name) == (v1, 0.35, model_name)
    from cmms_pm.training import base_classifier

    assert first.contract.features and base_classifier(first.model).n_jobs == 1
    assert warm.get(spec) is first and len(calls) == 1  # within refresh_seconds: no registry read
    clock.now += 1
    assert warm.get(spec) is first  # the check runs beside the request
    _until(lambda: len(calls) == 2 and not _checking(warm, model_name))
    assert warm.get(spec) is first and len(calls) == 2  # one read: nothing moved, nothing loaded
    _promote(client, model_name, v2, v1)
    assert warm.get(spec) is first  # not re-checked yet
    clock.now += 1
    assert warm.get(spec) is first  # the old champion answers while the new one loads
    second = _until(lambda: warm.get(spec) if warm.get(spec).version == v2 else None)
    assert (second.version, second.threshold) == (v2, 0.5)  # a version without the tag: 0.5
    assert second.model is not first.model


def test_requests_during_a_check_are_answered_by_the_champion_in_hand(client, model_name, trained, spec):
    v1 = _version(client, model_name, trained)
    _promote(client, model_name, v1, None)
    clock = _Clock()
    entered, release = threading.Event(), threading.Event()
    slow = {"on": False}

    @contextlib.contextmanager
    def session():
        if slow["on"]:
            entered.set()
            release.wait(30)
        yield client

    warm = WarmChampions(session, clock=clock)
    champion = warm.get(spec)
    clock.now += 1
    slow["on"] = True
    assert warm.get(spec) is champion  # starts the check, does not wait for it
    assert entered.wait(30)
    assert warm.get(spec) is champion  # the check in flight holds no request up
    release.set()
    _until(lambda: not _checking(warm, model_name))


def test_mlflow_down_keeps_the_champion_and_an_untrusted_one_is_never_served(
    client, model_name, trained, spec
):
    v1 = _version(client, model_name, trained)
    _promote(client, model_name, v1, None)
    clock = _Clock()
    down = {"on": False}

    @contextlib.contextmanager
    def session():
        if down["on"]:
            raise ConnectionError("MLflow at http://127.0.0.1:1 could not be reached")
        yield client

    warm = WarmChampions(session, clock=clock)
    champion = warm.get(spec)
    down["on"] = True
    clock.now += 1
    assert warm.get(spec) is champion
    _until(lambda: not _checking(warm, model_name))
    assert warm.get(spec) is champion  # MLflow down: the champion in hand keeps answering
    down["on"] = False
    # A version without the pipeline's provenance (its run has no model_spec tag) becomes champion.
    run = client.create_run(client.get_experiment_by_name("serving-tests").experiment_id)
    client.set_terminated(run.info.run_id)
    _promote(client, model_name, _version(client, model_name, trained, run_id=run.info.run_id), v1)
    clock.now += 1
    warm.get(spec)  # the check that finds the untrusted champion

    def refused() -> str:
        try:
            warm.get(spec)
        except ChampionUnavailable as err:
            return str(err)
        return ""

    assert re.search("cannot be served: .*not produced by this package", _until(refused))
    with pytest.raises(ChampionUnavailable):  # remembered, not reloaded on every request
        warm.get(spec)


def test_a_model_without_champion_or_unknown_is_not_found(client, model_name, trained, spec):
    from cmms_mlflow.exceptions import ModelNotFoundError

    warm = WarmChampions(lambda: contextlib.nullcontext(client))
    with pytest.raises(ChampionUnavailable, match="does not exist"):
        warm.get(spec)
    assert isinstance(ChampionUnavailable("x"), Exception) and ModelNotFoundError


def test_concurrent_small_requests_share_one_predict_call_and_each_gets_its_own_rows(trained, client):
    """30 one-row requests of two champions, queued while a call runs: a few calls, never one that
    mixes champions, each request its own risk (as predicted alone)."""
    import json

    from cmms_mlflow.tracking.model_loading import load_version
    from cmms_mlflow.tracking.training_run import load_contract
    from cmms_mlflow.www.serving import Champion, RiskCoalescer
    from cmms_pm.data import generate_telemetry
    from cmms_pm.prediction import rows_frame
    from cmms_pm.schema import FEATURES
    from cmms_pm.training import positive_proba

    name = f"coalesce_{trained['run_id'][:8]}"
    version = _version(client, name, trained)
    model = load_version(client, name, version)
    contract = load_contract(client, trained["run_id"])
    champions = [Champion(name, v, trained["run_id"], model, contract, 0.5) for v in ("1", "2")]
    rows = json.loads(generate_telemetry(30, 3)[FEATURES].to_json(orient="records"))
    frames = [rows_frame([row], contract) for row in rows]
    alone = [positive_proba(model, frame) for frame in frames]
    calls: list[tuple[int, int]] = []  # (rows, champions in the call)
    first_call, queued = threading.Event(), threading.Event()

    def proba(model_, frame):
        if not first_call.is_set():
            first_call.set()
            queued.wait(30)  # the others queue up behind this call
        calls.append(len(frame))
        return positive_proba(model_, frame)

    coalescer = RiskCoalescer(proba)
    got: dict[int, object] = {}

    def request(number: int) -> None:
        got[number] = coalescer.risk(champions[number % 2], frames[number])

    threads = [threading.Thread(target=request, args=(0,))]
    threads[0].start()
    assert first_call.wait(30)
    threads += [threading.Thread(target=request, args=(n,)) for n in range(1, 30)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 30
    while len(coalescer._queue) < 29 and time.monotonic() < deadline:
        time.sleep(0.01)
    queued.set()
    for thread in threads:
        thread.join(30)
    assert sorted(got) == list(range(30))
    for number in range(30):
        assert abs(float(got[number][0]) - float(alone[number][0])) < 1e-12
    assert calls[0] == 1 and sorted(calls[1:]) == [14, 15]  # then one call per champion
    # A large request is not queued: its caller predicts it alone.
    big = rows_frame(json.loads(generate_telemetry(150, 4)[FEATURES].to_json(orient="records")), contract)
    assert coalescer.risk(champions[0], big) is None and len(calls) == 3
