"""The spec file a scaffold writes for a person to review: the name checks, YAML blocks with
comments, and the write that replaces a spec only with one the DAG factory loads.

Shared by the flat scaffold (:mod:`cmms_pm.scaffold`) and the time-series one
(:mod:`cmms_pm.timeseries.telemetry_scaffold`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmms_pm.exceptions import ScaffoldError
from cmms_pm.spec import MODEL_NAME_PATTERN, SPEC_NAME_PATTERN, SPEC_SCHEMA, load_spec, load_specs

#: Schema defaults shown commented out at the end of a generated spec, so a reviewer sees them.
SHOWN_DEFAULTS = ("schedule", "promotion", "drift")
# Characters that end a line in YAML; never let them into a comment.
LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def check_name(name: str) -> None:
    if re.fullmatch(SPEC_NAME_PATTERN, name) is None or re.fullmatch(MODEL_NAME_PATTERN, name) is None:
        raise ScaffoldError(
            f"name {name!r} must match {SPEC_NAME_PATTERN}: a lower-case letter, then up to 59 lower-case "
            "letters, digits or underscores (it names the DAGs <name>_training and <name>_scoring, "
            "the registered model and the experiment)"
        )


def check_model_name_free(name: str, folder: Path, spec_path: Path) -> None:
    """Two specs with one registered model are both refused at parse time: refuse to make the second."""
    if not folder.is_dir():
        return
    specs, _errors = load_specs(folder)
    for spec in specs:
        if spec.registered_model == name and Path(spec.path).name != spec_path.name:
            raise ScaffoldError(f"registered model {name!r} is {spec.path}'s already; choose another name")


def source_path(file: Path) -> tuple[str, bool]:
    """The spec's ``source.path``: relative to the data root when the file is under it, else absolute
    (a relative path in a spec is read relative to the data root, not the current folder)."""
    from cmms_pm.batch import data_root

    root = data_root()
    if "://" not in root:
        try:
            return file.resolve().relative_to(Path(root).resolve()).as_posix(), True
        except ValueError:
            pass
    return str(file.absolute()), False


def schema_default(key: str) -> Any:
    schema = SPEC_SCHEMA["properties"][key]
    if "properties" in schema:
        return {name: sub["default"] for name, sub in schema["properties"].items() if "default" in sub}
    return schema["default"]


def comments(*lines: str) -> str:
    return "\n".join(("# " + LINE_BREAKS.sub("?", line)).rstrip() for line in lines)


def dump(values: Mapping[str, Any]) -> str:
    """``values`` as block YAML: readable Unicode, but escaped (``\\N``, ``\\L``) when a value holds a
    control character or a Unicode line break (PyYAML would write it raw, or fold a NEL)."""
    import yaml

    values = dict(values)
    text = yaml.safe_dump(values, sort_keys=False, allow_unicode=True, width=100)
    if LINE_BREAKS.search(text.replace("\n", "")) or yaml.safe_load(text) != values:
        text = yaml.safe_dump(values, sort_keys=False, allow_unicode=False, width=100)
    return text


def write_checked(text: str, spec_path: Path) -> None:
    """Write ``text`` to ``spec_path`` only once :func:`load_spec` loads it as the DAG factory will:
    first as ``<name>.yaml`` in a hidden folder beside it (spec discovery never looks there), then
    moved into place in one step, so a parse at any moment sees the old spec or the new one."""
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".new-model-", dir=spec_path.parent))
    try:
        staged = staging / spec_path.name
        staged.write_text(text, encoding="utf-8")
        load_spec(staged)
        os.replace(staged, spec_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_round_trip(text: str, values: Mapping[str, Any], spec_path: Path) -> None:
    """The YAML must read back to exactly the values meant (quoting of names from the file)."""
    import yaml

    loaded = yaml.safe_load(text)
    if loaded != dict(values):
        differ = sorted(key for key in {*loaded, *values} if loaded.get(key) != values.get(key))
        raise ScaffoldError(f"{spec_path}: the generated YAML does not read back to the values of {differ}")
