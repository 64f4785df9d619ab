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
   → ``cmms_pm.estimators.trusted_types(kind)``: the estimator's, plus the two scikit-learn
   calibration wrappers every version since issue 19 carries), never from the artifact;
3. downloads the ``MLmodel`` file alone and refuses anything but the sklearn flavor in skops
   format with a plain data-file name and no ``code`` folder, before the data file is fetched;
4. compares the data file's SHA-256 with the one training recorded (run tag
   ``model_data_sha256``) before parsing anything: an artifact changed after training is refused.
   A version without the tag (trained before it existed) whose library parses its booster in
   native code (XGBoost, LightGBM) is loaded once in a child process first instead, so that a
   file that crashes the parser is refused rather than killing the task (and every retry of it);
5. loads the data file with ``skops.io.load(trusted=…)`` — never pickle — while MLflow's own
   switch ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` reads ``false`` in this thread, so an MLflow
   loader called by mistake refuses too.

Every refusal is :class:`~cmms_mlflow.exceptions.UntrustedModelError` (a retry loads the same
artifact, so it fails the task for good).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from cmms_mlflow.exceptions import (
    artifacts_pruned,
    model_has_untrusted_types,
    model_not_skops,
    model_without_provenance,
)
from cmms_mlflow.hooks.client_context import pickle_loading_disabled
from cmms_mlflow.integrations.assets import SPEC_TAG
from cmms_pm.registry_plan import PRUNED, PRUNING, RETENTION_TAG

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

    from cmms_pm.estimators import ESTIMATORS, trusted_types

    skops_io = import_skops()
    from skops.io.exceptions import UntrustedTypesFoundException

    version = str(version)
    mv = client.get_model_version(name, version)
    if (mv.tags or {}).get(RETENTION_TAG) in (PRUNING, PRUNED):
        raise artifacts_pruned(name, version)
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
    trusted = trusted_types(kind)  # the estimator's and the calibration wrapper's, nothing else
    root = client.get_model_version_download_uri(name, version).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp, pickle_loading_disabled():
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp)
        data_file = _skops_data_file(name, version, Path(mlmodel))
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{data_file}", dst_path=str(data_dir))
        recorded = run.data.tags.get(MODEL_DIGEST_TAG) if run is not None else None
        if recorded:
            _check_digest(name, version, path, recorded)
        elif ESTIMATORS[kind].requirements:  # native-code parser and no digest: try it in a child
            _survives_loading(name, version, path, trusted)
        try:
            with quiet_airflow_shims():
                return skops_io.load(path, trusted=trusted)
        except UntrustedTypesFoundException as err:
            untrusted = sorted(set(skops_io.get_untrusted_types(file=path)) - set(trusted))
            raise model_has_untrusted_types(name, version, untrusted) from err
        except Exception as err:  # not a skops archive (e.g. a pickle renamed), corrupt zip
            raise model_not_skops(
                name, version, f"its data file is not a readable skops file ({err})"
            ) from err


#: Run tag (copied to the version) holding the SHA-256 of the model's skops data file as training
#: wrote it (``cmms_mlflow.tracking.training_run``). The loader compares before it parses anything: an
#: artifact changed after training is refused whatever its content.
MODEL_DIGEST_TAG = "model_data_sha256"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(name: str, version: str, path: str, recorded: str) -> None:
    found = file_sha256(path)
    if found != recorded.strip().lower():
        raise model_not_skops(
            name,
            version,
            f"its data file's SHA-256 {found[:16]}... is not the {recorded[:16]!r}... recorded when it "
            "was trained (the artifact was changed after training)",
        )


def model_data_digest(client: Any, model_id: str) -> str:
    """SHA-256 of the skops data file of a just-logged model (its id, ``m-...``): what
    :data:`MODEL_DIGEST_TAG` records. The MLmodel names the file and must pass the same checks.
    Read from the logged model's artifact location (a ``models:/m-.../MLmodel`` URI would be read
    as a registered model's name and version)."""
    import mlflow.artifacts

    uri = client.get_logged_model(model_id).artifact_location.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/MLmodel", dst_path=tmp)
        data_file = _skops_data_file(uri, "new", Path(mlmodel))
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        return file_sha256(
            mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/{data_file}", dst_path=str(data_dir))
        )


#: Seconds a child process may take to load a model of a native-code library (see _survives_loading).
TRIAL_LOAD_TIMEOUT = 300
_TRIAL_LOAD = """
import json, sys
import skops.io
try:
    skops.io.load(sys.argv[1], trusted=json.loads(sys.argv[2]))
except Exception as err:  # refused or unreadable: the caller's own load reports it
    print(type(err).__name__, str(err)[:500])
"""


def _survives_loading(name: str, version: str, path: str, trusted: list[str]) -> None:
    """Load ``path`` once in a child process first: a model whose booster is parsed in native code
    (XGBoost's UBJSON, LightGBM's model text) could take the task process down with it. LightGBM
    4.7 calls ``std::terminate`` on some malformed trees instead of raising, so a tampered file
    would kill every retry of the task; here it is refused. The child gets the same trusted types
    and never unpickles (skops only); an exception there is left for the caller's own load."""
    import subprocess

    try:
        out = subprocess.run(
            [sys.executable, "-c", _TRIAL_LOAD, str(path), json.dumps(trusted)],
            capture_output=True,
            text=True,
            timeout=TRIAL_LOAD_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise model_not_skops(
            name, version, f"loading its data file did not finish in {TRIAL_LOAD_TIMEOUT} s"
        ) from err
    if out.returncode != 0:
        tail = " ".join(out.stderr.strip().splitlines()[-2:])[-300:]
        raise model_not_skops(
            name, version, f"loading its data file killed a test process (exit {out.returncode}): {tail}"
        )


@contextmanager
def quiet_airflow_shims() -> Iterator[None]:
    """Silence Airflow's deprecated-import warnings while skops (de)serializes a model.

    skops looks functions up by name in every loaded module (``pickle.whichmodule``); Airflow's
    compatibility shims answer each lookup with a ``DeprecatedImportWarning``, ~1,200 log lines
    per save or load in a task log.
    """
    with warnings.catch_warnings():
        try:
            from airflow.utils.deprecation_tools import DeprecatedImportWarning
        except ImportError:  # outside Airflow
            pass
        else:
            warnings.simplefilter("ignore", DeprecatedImportWarning)
        yield


def import_skops() -> ModuleType:
    """``skops.io``, imported quietly and in well under a second in a task process.

    Importing it builds skops' default trusted types, which finds the module of each of ~400
    NumPy/SciPy ufuncs by scanning every loaded module (``pickle.whichmodule``): a task process
    has ~3,500 modules, so 1.4 million lookups (5-7 s) and ~1,200 Airflow shim warnings. The scan
    is replaced, for the import only, by one index of the loaded modules' names that gives the
    same answer: the first module in ``sys.modules`` order whose attribute is the object (modules
    with a ``__getattr__`` are still asked, in their place in that order).
    """
    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]

    finder = _IndexSkopsLookups()
    sys.meta_path.insert(0, finder)
    try:
        with quiet_airflow_shims():
            import skops.io
    finally:
        sys.meta_path.remove(finder)
        if finder.utils is not None:
            finder.utils.whichmodule = finder.utils.whichmodule.original
    return skops.io


class _IndexSkopsLookups:
    """Import hook: swaps ``skops.io._utils.whichmodule`` for the indexed one as soon as that
    module has run (the package's ``__init__`` builds the trusted types right after)."""

    def __init__(self) -> None:
        self.utils: Any = None  # skops.io._utils once loaded (skops ships no types)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "skops.io._utils":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader  # patched on this one instance, which typeshed's Loader forbids
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            module.whichmodule = _IndexedWhichModule(module.whichmodule)
            self.utils = module

        loader.exec_module = exec_module
        return spec


class _IndexedWhichModule:
    """``whichmodule(obj, name)`` answered from an index of the loaded modules (see import_skops)."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.built_for = -1
        self.first: dict[tuple[str, int], int] = {}
        self.order: list[tuple[str, ModuleType]] = []
        self.dynamic: list[int] = []  # positions of modules that answer through __getattr__

    def _build(self) -> None:
        self.order = [
            (name, module)
            for name, module in sys.modules.copy().items()
            if module is not None and name not in ("__main__", "__mp_main__")
        ]
        self.first, self.dynamic = {}, []
        for position, (_, module) in enumerate(self.order):
            namespace = getattr(module, "__dict__", None)
            if type(module) is not ModuleType or namespace is None or "__getattr__" in namespace:
                self.dynamic.append(position)
                continue
            for attr, value in list(namespace.items()):
                self.first.setdefault((attr, id(value)), position)
        self.built_for = len(sys.modules)

    def __call__(self, obj: Any, name: str) -> str:
        if getattr(obj, "__module__", None) is not None or "." in name:
            return self.original(obj, name)
        if len(sys.modules) != self.built_for:
            self._build()
        position = self.first.get((name, id(obj)), len(self.order))
        # A module with __getattr__ (or not a plain module) before that one may answer first.
        for candidate in self.dynamic:
            if candidate >= position:
                break
            try:
                if getattr(self.order[candidate][1], name, None) is obj:
                    return self.order[candidate][0]
            except (AttributeError, ImportError):
                continue
        return self.order[position][0] if position < len(self.order) else "__main__"


def _skops_data_file(name: str, version: str, mlmodel: Path) -> str:
    """The data file named by an ``MLmodel`` that passes the checks, or ``UntrustedModelError``."""
    import yaml

    try:
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise model_not_skops(name, version, f"its MLmodel file is unreadable ({err})") from err
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict):
        flavors = {}
    sklearn = flavors.get("sklearn")
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
