"""`make test` gets the programs the suite runs by itself (scripts/install_test_services.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
SCRIPT = PROJECT_DIR / "scripts" / "install_test_services.sh"


pytestmark = pytest.mark.installer


def test_every_program_of_the_list_is_there_after_the_install_step():
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    again = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stderr) == (0, "")  # nothing missing: silent and fast


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to act as nobody"
)
def test_without_root_a_missing_program_is_named_with_the_command_that_installs_it():
    folder = Path(tempfile.mkdtemp(prefix="cmms-services-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        script = Path(shutil.copy(SCRIPT, folder / SCRIPT.name))
        listing = folder / "services.txt"
        listing.write_text("# program package\nno-such-program-cmms  cmms-fake-package   # what needs it\n")
        command = ["runuser", "-u", "nobody", "--", "bash", str(script), str(listing)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert out.returncode == 1
    assert "no-such-program-cmms" in out.stderr
    assert "sudo apt-get install -y cmms-fake-package" in out.stderr
