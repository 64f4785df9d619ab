"""Model loading you can trust: skops only, the estimator's trusted types, this package's provenance.

A tampered ``MLmodel`` (``serialization_format: pickle`` with a payload that writes a marker file
when unpickled) must be refused before anything is unpickled, in validation and in scoring; the
marker file never appears. The same artifact loaded by MLflow's own loader does run the payload,
which shows the test's attack is real.
"""

from __future__ import annotations

import os
import pickle
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import pytest
import yaml
from support import training_provenance

from cmms_mlflow.exceptions import UntrustedModelError
from cmms_mlflow.hooks.mlflow_hook import MlflowHook
from cmms_mlflow.registry import model_registry


@pytest.fixture(scope="module")
def trained_model_dir(tmp_path_factory, mlflow_store, small_batch, shipped_spec) -> Path:
    """The artifact folder of one real model logged by the training code (skops, random forest)."""
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.client_context import client_settings
    from cmms_mlflow.tracking.training_run import log_training_run

    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    with client_settings({"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}):
        experiment_id = MlflowHook().get_or_create_experiment(client, "model-loading-tests")
        trained = log_training_run(
            client, experiment_id=experiment_id, manifest=small_batch, spec=shipped_spec,
            estimator="random_forest", hyperparameters={"n_estimators": 5, "max_depth": 4},
            tags=training_provenance(shipped_spec), run_name="trusted",
        )  # fmt: skip
        root = client.get_run(trained["run_id"]).info.artifact_uri
    logged = client.search_logged_models(experiment_ids=[experiment_id])[0]
    out = tmp_path_factory.mktemp("model") / "model"
    shutil.copytree(_local(logged.artifact_location), out)
    assert root and (out / "MLmodel").exists()
    return out


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _version(client, name: str, model_dir: Path, *, tags: dict, estimator: str = "random_forest"):
    """A registered version whose run holds a copy of ``model_dir``; returns (version, its folder)."""
    found = client.get_experiment_by_name("model-loading-tests")
    run = client.create_run(found.experiment_id, tags=tags)
    if estimator:
        client.log_param(run.info.run_id, "estimator", estimator)
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    version = model_registry.register_version(
        client, name=name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
        description="loading test", tags={},
    )  # fmt: skip
    return str(version.version), _local(run.info.artifact_uri) / "model"


class _Payload:
    """Unpickling this creates the marker file (as any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tamper_to_pickle(folder: Path, marker: Path) -> None:
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    meta["flavors"]["sklearn"].update(serialization_format="pickle", pickled_model="model.pkl")
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    (folder / "model.pkl").write_bytes(pickle.dumps(_Payload(marker)))


@pytest.fixture
def tampered(client, model_name, trained_model_dir, shipped_spec, tmp_path):
    """(version, marker): a version with our provenance whose MLmodel was rewritten to pickle."""
    version, folder = _version(client, model_name, trained_model_dir, tags=training_provenance(shipped_spec))
    marker = tmp_path / "pwned"
    _tamper_to_pickle(folder, marker)
    return version, marker


def test_mlflows_own_loader_runs_the_tampered_pickle_so_the_attack_is_real(mlflow_conn, model_name, tampered):
    import mlflow.sklearn

    version, marker = tampered
    with MlflowHook().session():
        mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
    assert marker.exists()


def test_validation_refuses_a_tampered_pickle_model_before_unpickling(
    mlflow_conn, model_name, tampered, small_batch, shipped_spec
):
    from airflow.sdk.exceptions import AirflowFailException

    from cmms_mlflow.tracking.model_evaluation import validate_candidate

    version, marker = tampered
    with MlflowHook().session() as client:
        model_registry.transition(client, model_name, version, "Staging")
        with pytest.raises(UntrustedModelError, match=r"serialization_format: 'pickle'") as caught:
            validate_candidate(
                client, name=model_name, version=version, holdout_uri=small_batch["splits"]["holdout"]["uri"],
                target=shipped_spec.target, spec_name=shipped_spec.name,
                policy={"metric": "f1", "threshold": 0.0, "min_improvement": 0.0, "allow_promotion": True},
            )  # fmt: skip
    assert isinstance(caught.value, AirflowFailException)  # a retry loads the same artifact
    assert not marker.exists()


def test_scoring_refuses_a_tampered_pickle_champion_and_mlflows_switch_is_off(
    mlflow_conn, model_name, tampered, tmp_path
):
    import mlflow.sklearn
    from mlflow.exceptions import MlflowException

    from cmms_mlflow.hooks.client_context import pickle_loading_disabled
    from cmms_mlflow.tracking.champion_scoring import load_champion

    version, marker = tampered
    with MlflowHook().session() as client:
        model_registry.promote(
            client, model_name, version, expected_champion=None, lock_dir=tmp_path, audit={}
        )
        with pytest.raises(UntrustedModelError, match="refused before deserializing"):
            load_champion(client, model_name)
        with (
            pickle_loading_disabled(),
            pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"),
        ):
            mlflow.sklearn.load_model(f"models:/{model_name}/{version}")
    assert not marker.exists()
    assert os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION") is None  # never process-wide


def test_types_trusted_only_by_the_artifacts_own_mlmodel_are_refused(
    mlflow_conn, client, model_name, trained_model_dir, shipped_spec
):
    """A skops file holding ``os.system`` (as a FunctionTransformer's func), with the MLmodel listing it
    as trusted: MLflow's loader believes the MLmodel; ours trusts only the estimator's own types."""
    import mlflow.sklearn
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from cmms_mlflow.tracking.model_loading import load_version

    version, folder = _version(client, model_name, trained_model_dir, tags=training_provenance(shipped_spec))
    skops.io.dump(FunctionTransformer(func=os.system), folder / "model.skops")
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    untrusted = skops.io.get_untrusted_types(file=folder / "model.skops")
    meta["flavors"]["sklearn"]["skops_trusted_types"] = untrusted
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    with MlflowHook().session() as session:
        assert mlflow.sklearn.load_model(f"models:/{model_name}/{version}").func is os.system
        with pytest.raises(UntrustedModelError, match="outside the estimator's trusted list.*system"):
            load_version(session, model_name, version)


def test_versions_without_this_packages_provenance_are_refused_unless_allowed(
    mlflow_conn, client, model_name, trained_model_dir, shipped_spec
):
    from cmms_mlflow.tracking.model_loading import load_version

    foreign, _ = _version(client, model_name, trained_model_dir, tags={})
    ours, _ = _version(client, model_name, trained_model_dir, tags=training_provenance(shipped_spec))
    no_estimator, _ = _version(client, model_name, trained_model_dir, tags={}, estimator="")
    with MlflowHook().session() as session:
        with pytest.raises(UntrustedModelError, match=r"no 'model_spec' tag.*airflow\.dag_id"):
            load_version(session, model_name, foreign)
        assert load_version(session, model_name, foreign, allow_unverified=True).predict_proba  # still skops
        with pytest.raises(
            UntrustedModelError, match=r"trained by spec 'predictive_maintenance', not 'ai4i'"
        ):
            load_version(session, model_name, ours, spec_name="ai4i")
        assert load_version(session, model_name, ours, spec_name=shipped_spec.name).predict_proba
        with pytest.raises(UntrustedModelError, match="names no known estimator"):
            load_version(session, model_name, no_estimator, allow_unverified=True)
        # A version that claims our run but serves another run's artifact.
        foreign_run = client.get_run(client.get_model_version(model_name, foreign).run_id)
        our_run_id = client.get_model_version(model_name, ours).run_id
        other = client.create_model_version(
            model_name, f"{foreign_run.info.artifact_uri}/model", run_id=our_run_id
        )
        with pytest.raises(UntrustedModelError, match="is not an artifact of its run"):
            load_version(session, model_name, str(other.version))


def test_scoring_takes_asset_events_only_for_models_of_its_spec(
    mlflow_conn, client, trained_model_dir, shipped_spec, tmp_path
):
    from cmms_mlflow.operators import MlflowBatchScoreOperator

    ours, foreign = f"pm_ours_{uuid.uuid4().hex[:6]}", f"pm_foreign_{uuid.uuid4().hex[:6]}"
    for name, tags in ((ours, training_provenance(shipped_spec)), (foreign, {"model_spec": "someone_else"})):
        version, _ = _version(client, name, trained_model_dir, tags=tags)
        model_registry.promote(client, name, version, expected_champion=None, lock_dir=tmp_path, audit={})
    operator = MlflowBatchScoreOperator(
        task_id="score", spec=shipped_spec.to_dict(), model_name="fallback_model", risk_threshold=0.5
    )
    named = [shipped_spec.registered_model, foreign, ours, "bad$name", "pm_missing_model", ours]
    context = {"triggering_asset_events": {"a": [SimpleNamespace(extra={"model_name": n}) for n in named]}}
    with MlflowHook().session() as session:
        assert operator.models_to_score(context, session) == [shipped_spec.registered_model, ours]
        assert operator.models_to_score({"triggering_asset_events": {}}, session) == ["fallback_model"]
    assert operator.load_options(ours) == {"spec_name": shipped_spec.name, "allow_unverified": False}
    assert operator.load_options(shipped_spec.registered_model)["spec_name"] is None


_TRUSTED_TYPE_LISTS = """
import json, sys
import airflow.sdk, mlflow, sklearn.ensemble  # a task process: Airflow's shims, MLflow, scikit-learn
if sys.argv[1] == "fast":
    from cmms_mlflow.tracking.model_loading import import_skops
    import_skops()
else:
    import skops.io
import skops.io._trusted_types as t
print(json.dumps({k: v for k, v in vars(t).items() if k.endswith("TYPE_NAMES")}, sort_keys=True))
"""


def test_the_fast_skops_import_trusts_exactly_what_skops_own_import_trusts():
    """import_skops (used to load and, since issue 13, to save models) replaces skops' scan of every
    loaded module by an index: skops must come out with the same default trusted-type names,
    including the module each NumPy/SciPy ufunc is named after, as its own import in the same process."""
    import json
    import subprocess
    import sys

    lists = {}
    for how in ("fast", "plain"):
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", _TRUSTED_TYPE_LISTS, how],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        lists[how] = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(lists["plain"]["NUMPY_UFUNC_TYPE_NAMES"]) > 50  # the scan did find the ufuncs
    assert lists["fast"] == lists["plain"]


# XGBoost and LightGBM: the same skops artifact, the same guarantees.

BOOSTED = {"n_estimators": 30, "learning_rate": 0.3, "early_stopping_rounds": 5}


@pytest.fixture(scope="module")
def boosted_model_dirs(tmp_path_factory, mlflow_store, small_batch, shipped_spec) -> dict[str, Path]:
    """The artifact folder of one real XGBoost and one real LightGBM model logged by the training code."""
    from mlflow import MlflowClient

    from cmms_mlflow.hooks.client_context import client_settings
    from cmms_mlflow.tracking.training_run import log_training_run

    client = MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)
    folders = {}
    with client_settings({"MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}):
        experiment_id = MlflowHook().get_or_create_experiment(client, "model-loading-tests")
        for kind in ("xgboost", "lightgbm"):
            trained = log_training_run(
                client, experiment_id=experiment_id, manifest=small_batch, spec=shipped_spec,
                estimator=kind, hyperparameters=BOOSTED, tags=training_provenance(shipped_spec),
                run_name=kind,
            )  # fmt: skip
            logged = client.search_logged_models(
                experiment_ids=[experiment_id], filter_string=f"source_run_id = '{trained['run_id']}'"
            )[0]
            folders[kind] = tmp_path_factory.mktemp(kind) / "model"
            shutil.copytree(_local(logged.artifact_location), folders[kind])
    return folders


@pytest.mark.parametrize("kind", ["xgboost", "lightgbm"])
def test_boosted_models_load_only_through_skops_and_refuse_every_tampering(
    mlflow_conn, client, model_name, boosted_model_dirs, shipped_spec, small_batch, kind, tmp_path
):
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    from cmms_mlflow.tracking.model_loading import load_version
    from cmms_pm.data import read_split
    from cmms_pm.training import base_classifier

    source = boosted_model_dirs[kind]
    meta = yaml.safe_load((source / "MLmodel").read_text())
    assert meta["flavors"]["sklearn"]["serialization_format"] == "skops"
    requirements = (source / "requirements.txt").read_text()
    assert ("xgboost" if kind == "xgboost" else "lightgbm==") in requirements
    tags = training_provenance(shipped_spec)
    good, _ = _version(client, model_name, source, tags=tags, estimator=kind)
    pickled, pickled_dir = _version(client, model_name, source, tags=tags, estimator=kind)
    system, system_dir = _version(client, model_name, source, tags=tags, estimator=kind)
    marker = tmp_path / "pwned"
    _tamper_to_pickle(pickled_dir, marker)
    skops.io.dump(FunctionTransformer(func=os.system), system_dir / "model.skops")
    meta = yaml.safe_load((system_dir / "MLmodel").read_text())
    meta["flavors"]["sklearn"]["skops_trusted_types"] = skops.io.get_untrusted_types(
        file=system_dir / "model.skops"
    )
    (system_dir / "MLmodel").write_text(yaml.safe_dump(meta))
    holdout = read_split(small_batch["splits"]["holdout"]["uri"])
    with MlflowHook().session() as session:
        model = load_version(session, model_name, good, spec_name=shipped_spec.name)
        # The booster itself (calibrated or not: auto decides on the validation split's Brier score).
        assert type(base_classifier(model)).__module__.startswith(kind)
        proba = model.predict_proba(holdout)[:, 1]
        assert ((proba >= 0) & (proba <= 1)).all() and proba.std() > 0
        with pytest.raises(UntrustedModelError, match=r"serialization_format: 'pickle'"):
            load_version(session, model_name, pickled)
        with pytest.raises(UntrustedModelError, match="outside the estimator's trusted list.*system"):
            load_version(session, model_name, system)
    assert not marker.exists()


def _rewrite_skops(path: Path, change) -> None:
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, change(name, source.read(name)))
    path.write_bytes(out.getvalue())


def test_a_lightgbm_model_text_that_aborts_its_parser_is_refused_not_fatal(
    mlflow_conn, client, model_name, boosted_model_dirs, shipped_spec
):
    """LightGBM 4.7 calls std::terminate on a malformed tree in its model text (a tampered artifact
    would kill the task process and every retry): the loader's child process dies instead."""
    from cmms_mlflow.tracking.model_loading import load_version

    version, folder = _version(
        client, model_name, boosted_model_dirs["lightgbm"], tags=training_provenance(shipped_spec),
        estimator="lightgbm",
    )  # fmt: skip
    _rewrite_skops(
        folder / "model.skops",
        lambda name, data: (
            data.replace(b"split_feature=", b"split_feature=99 ") if name == "schema.json" else data
        ),
    )
    with MlflowHook().session() as session, pytest.raises(UntrustedModelError, match="killed a test process"):
        load_version(session, model_name, version)


def test_a_corrupted_xgboost_booster_is_refused_as_unreadable(
    mlflow_conn, client, model_name, boosted_model_dirs, shipped_spec
):
    from cmms_mlflow.tracking.model_loading import load_version

    version, folder = _version(
        client, model_name, boosted_model_dirs["xgboost"], tags=training_provenance(shipped_spec),
        estimator="xgboost",
    )  # fmt: skip
    _rewrite_skops(folder / "model.skops", lambda name, data: b"{garbage" if name.endswith(".bin") else data)
    with (
        MlflowHook().session() as session,
        pytest.raises(UntrustedModelError, match="not a readable skops file"),
    ):
        load_version(session, model_name, version)


@pytest.mark.parametrize("kind", ["random_forest", "lightgbm"])
def test_an_artifact_changed_after_training_is_refused_by_the_digest_training_recorded(
    mlflow_conn, client, model_name, trained_model_dir, boosted_model_dirs, shipped_spec, kind, monkeypatch
):
    """Training records the SHA-256 of the skops data file (run tag ``model_data_sha256``); the
    loader compares it before parsing. A version whose tag matches loads without the child-process
    trial; one whose file changed afterwards (here LightGBM's parser-aborting text, or a forest
    re-dumped with another tree) is refused before its content is parsed, in this process."""
    from cmms_mlflow.tracking import model_loading
    from cmms_mlflow.tracking.model_loading import MODEL_DIGEST_TAG, file_sha256, load_version

    def no_child(*args, **kwargs):
        raise AssertionError("a version with a recorded digest needs no child-process trial")

    monkeypatch.setattr(model_loading, "_survives_loading", no_child)
    source = trained_model_dir if kind == "random_forest" else boosted_model_dirs[kind]
    tags = {**training_provenance(shipped_spec), MODEL_DIGEST_TAG: file_sha256(source / "model.skops")}
    good, _ = _version(client, model_name, source, tags=tags, estimator=kind)
    changed, folder = _version(client, model_name, source, tags=tags, estimator=kind)
    if kind == "lightgbm":
        change = lambda name, data: (  # noqa: E731
            data.replace(b"split_feature=", b"split_feature=99 ") if name == "schema.json" else data
        )
    else:  # a different but valid archive: still skops, still the trusted types
        change = lambda name, data: data + b" " if name == "schema.json" else data  # noqa: E731
    _rewrite_skops(folder / "model.skops", change)
    with MlflowHook().session() as session:
        model = load_version(session, model_name, good, spec_name=shipped_spec.name)
        assert hasattr(model, "predict_proba")
        with pytest.raises(UntrustedModelError, match="changed after training"):
            load_version(session, model_name, changed)


def test_training_records_the_digest_of_the_data_file_it_logged(client, trained_model_dir):
    from cmms_mlflow.tracking.model_loading import MODEL_DIGEST_TAG, file_sha256

    run = next(
        r for r in client.search_runs(
            [client.get_experiment_by_name("model-loading-tests").experiment_id],
            filter_string="attributes.run_name = 'trusted'",
        )
    )  # fmt: skip
    assert run.data.tags[MODEL_DIGEST_TAG] == file_sha256(trained_model_dir / "model.skops")
