"""Loading a registered model version you can trust: skops only, our trusted types, our provenance.

MLflow loads a model the way the artifact's own ``MLmodel`` file says: a ``serialization_format:
pickle`` written there is unpickled (runs code), and even for skops the trusted-types list is
read from the same file. Every load of this package (validation of challenger and champion,
batch scoring) goes through :func:`load_version` instead, which

1. checks the version's provenance unless the spec allows unverified models: its MLflow run was
   written by this package's training step (run tags ``model_spec`` — equal to the expected
   spec when one is given — and ``airflow.dag_id``/``airflow.run_id``), and the version's
   source is that run's logged model;
2. takes the trusted types from the estimator the run says it trained (run param ``estimator``
   → ``cmms_pm.estimators.ESTIMATORS[kind].trusted_types``), never from the artifact;
3. downloads the ``MLmodel`` file alone and refuses anything but the sklearn flavor in skops
   format with a plain data-file name and no ``code`` folder, before the data file is fetched;
4. loads the data file with ``skops.io.load(trusted=…)`` — never pickle — while MLflow's own
   switch ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` reads ``false`` in this thread, so an MLflow
   loader called by mistake refuses too.

Every refusal is :class:`~cmms_mlflow.exceptions.UntrustedModelError` (a retry loads the same
artifact, so it fails the task for good).
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmms_mlflow.assets import SPEC_TAG
from cmms_mlflow.client_context import pickle_loading_disabled
from cmms_mlflow.exceptions import (
    model_has_untrusted_types,
    model_not_skops,
    model_without_provenance,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

#: Run tags every training task writes (``training_run.airflow_tags``): the Airflow run that made it.
PROVENANCE_TAGS = ("airflow.dag_id", "airflow.run_id")
_DATA_FILE = re.compile(r"[A-Za-z0-9_.-]{1,100}\.skops")


def provenance_problems(
    client: MlflowClient, version: ModelVersion, run: Run | None, spec_name: str | None
) -> list[str]:
    """Why ``version`` is not a model this package's pipeline trained (``[]``: it is)."""
    if run is None:
        return ["the version names no MLflow run"]
    tags = run.data.tags
    problems = []
    spec = tags.get(SPEC_TAG)
    if not spec:
        problems.append(f"its run {run.info.run_id!r} has no {SPEC_TAG!r} tag")
    elif spec_name is not None and spec != spec_name:
        problems.append(f"its run was trained by spec {spec!r}, not {spec_name!r}")
    missing = [t for t in PROVENANCE_TAGS if not tags.get(t)]
    if missing:
        problems.append(f"its run has no {missing!r} tags (not written by an Airflow training task)")
    source = version.source or ""
    if source.startswith("models:/m-"):
        logged = client.get_logged_model(source.removeprefix("models:/"))
        if logged.source_run_id != run.info.run_id:
            problems.append(
                f"its source {source!r} was logged by run {logged.source_run_id!r}, not {run.info.run_id!r}"
            )
    elif not source.startswith(run.info.artifact_uri.rstrip("/") + "/"):
        problems.append(f"its source {source!r} is not an artifact of its run {run.info.run_id!r}")
    return problems


def load_version(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    spec_name: str | None = None,
    allow_unverified: bool = False,
) -> Any:
    """The scikit-learn model of ``name`` version ``version``, loaded only if it can be trusted.

    ``spec_name``: the spec the version must have been trained by (``None``: any spec of this
    package). ``allow_unverified`` (a spec's ``loading.allow_unverified_models``) lets a version
    without provenance load — still skops only, still with the estimator's trusted types.
    """
    import mlflow.artifacts

    from cmms_mlflow.training_run import quiet_airflow_shims
    from cmms_pm.estimators import ESTIMATORS

    # Importing skops.io looks up every NumPy/SciPy ufunc in every loaded module (its default
    # trusted types): in a task process that is ~1,200 Airflow shim warnings and ~1.6 s of them.
    with quiet_airflow_shims():
        import skops.io
        from skops.io.exceptions import UntrustedTypesFoundException

    version = str(version)
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id) if mv.run_id else None
    problems = provenance_problems(client, mv, run, spec_name)
    if problems and not allow_unverified:
        raise model_without_provenance(name, version, "; ".join(problems))
    if problems:
        log.warning("Loading unverified %s v%s (allowed by the spec): %s", name, version, "; ".join(problems))
    kind = (run.data.params.get("estimator") or run.data.tags.get("estimator")) if run is not None else None
    if kind not in ESTIMATORS:
        raise model_not_skops(
            name,
            version,
            f"its run names no known estimator (param 'estimator' = {kind!r}) to trust types of",
        )
    trusted = list(ESTIMATORS[kind].trusted_types)
    root = client.get_model_version_download_uri(name, version).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp, pickle_loading_disabled():
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp)
        data_file = _skops_data_file(name, version, Path(mlmodel))
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{data_file}", dst_path=str(data_dir))
        try:
            with quiet_airflow_shims():
                return skops.io.load(path, trusted=trusted)
        except UntrustedTypesFoundException as err:
            untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(trusted))
            raise model_has_untrusted_types(name, version, untrusted) from err
        except Exception as err:  # not a skops archive (e.g. a pickle renamed), corrupt zip
            raise model_not_skops(
                name, version, f"its data file is not a readable skops file ({err})"
            ) from err


def _skops_data_file(name: str, version: str, mlmodel: Path) -> str:
    """The data file named by an ``MLmodel`` that passes the checks, or ``UntrustedModelError``."""
    import yaml

    try:
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise model_not_skops(name, version, f"its MLmodel file is unreadable ({err})") from err
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    sklearn = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(sklearn, dict):
        raise model_not_skops(name, version, "its MLmodel has no sklearn flavor")
    fmt = sklearn.get("serialization_format", "pickle")
    if fmt != "skops":
        raise model_not_skops(name, version, f"its MLmodel says serialization_format: {fmt!r}")
    data_file = sklearn.get("pickled_model")
    if not isinstance(data_file, str) or not _DATA_FILE.fullmatch(data_file):
        raise model_not_skops(name, version, f"its MLmodel names the data file {data_file!r}")
    if sklearn.get("code") or (
        isinstance(flavors.get("python_function"), dict) and flavors["python_function"].get("code")
    ):
        raise model_not_skops(name, version, "its MLmodel ships a code folder (added to sys.path on load)")
    return data_file
