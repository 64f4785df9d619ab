"""P5 — time to first model: fresh clone → first Production model with README's first command.

Clones this checkout's committed HEAD into a temporary folder, runs ``make demo`` there (its
own .venv from the warm package cache, its own .airflow/.mlflow/.data) and reports the time of
each step and whether the demo ended with a model in Production. Uncommitted changes are not in
the clone.

    source scripts/env.sh && python bench/first_model.py
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib import PROJECT_DIR, VENV_BIN, table  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cmms-first-model-"))
    clone = work / "checkout"
    # The clone must not see this checkout's venv or Airflow/MLflow settings.
    path = ":".join(p for p in os.environ.get("PATH", "").split(":") if p and p != VENV_BIN)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_", "CMMS_", "VIRTUAL_ENV"))
    }
    env["PATH"] = path
    dirty = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        started = time.perf_counter()
        subprocess.run(["git", "clone", "-q", str(PROJECT_DIR), str(clone)], check=True, env=env)
        cloned = time.perf_counter()
        demo = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True)
        done = time.perf_counter()
        output = demo.stdout + demo.stderr
        (work / "demo.out").write_text(output)
        installed = re.search(r"Installed with (\w+) in (\d+) s", output)
        production = re.search(r"stage:\s+Production", output) is not None
        success = demo.returncode == 0 and production
        rows = [
            ["git clone", cloned - started],
            [
                f"make install ({installed.group(1)})" if installed else "make install",
                installed and float(installed.group(2)),
            ],
            ["make demo (total, incl. install)", done - cloned],
            ["fresh clone -> first Production model", done - started],
        ]
        print(
            table(
                "P5 time to first model: fresh clone -> `make demo` (README's first command), "
                "warm package cache"
                + (" [working tree has uncommitted changes: the clone has HEAD only]" if dirty else ""),
                ["step", "seconds"],
                rows,
            )
        )
        verdict = "first model in Production" if success else "FAILED"
        print(f"Result: {verdict} (make demo exit {demo.returncode})")
        if not success:
            print(output[-3000:])
        return 0 if success else 1
    finally:
        if args.keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
