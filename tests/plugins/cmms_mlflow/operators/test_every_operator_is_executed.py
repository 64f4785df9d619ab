"""Every operator of plugins/cmms_mlflow/operators/ has an ``execute(context)`` test in the fast tier:
``test_<module>_execute.py`` beside this file names it. A new operator without one fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from airflow.sdk import BaseOperator

import cmms_mlflow.operators as package
from cmms_mlflow.operators.base import MlflowBaseOperator

HERE = Path(__file__).resolve().parent


def operator_classes() -> dict[str, type]:
    """Concrete operators defined in the package (bases without their own work are left out)."""
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseOperator):
                continue
            if (
                issubclass(cls, MlflowBaseOperator)
                and cls.execute_mlflow is MlflowBaseOperator.execute_mlflow
            ):
                continue  # a base: MlflowBaseOperator, MlflowDecisionOperator
            found[name] = cls
    return found


def test_every_operator_has_an_execute_test_in_the_file_of_its_module():
    classes = operator_classes()
    assert len(classes) >= 19, sorted(classes)  # the scan sees the package
    missing = []
    for name, cls in sorted(classes.items()):
        test_file = HERE / f"test_{cls.__module__.rsplit('.', 1)[1]}_execute.py"
        if not test_file.exists() or name not in test_file.read_text():
            missing.append(f"{name} ({cls.__module__}): no test in {test_file.name}")
    assert not missing, "operators without an execute(context) test:\n" + "\n".join(missing)


def test_the_execute_tests_belong_to_the_fast_tier(request):
    """tests/tiers.py marks them ``fast``: no service fixture, no slow mark, no DAG run. (The
    folder also holds the operators' heavier tests, e.g. test_operator_runs.py; those may be slow.)"""
    here = [
        item
        for item in request.session.items
        if Path(item.path).parent == HERE and Path(item.path).name.endswith("_ops_execute.py")
    ]
    assert here, "nothing collected beside this file"
    not_fast = [item.nodeid for item in here if item.get_closest_marker("fast") is None]
    assert not not_fast, f"not in the fast tier: {not_fast}"
