"""Chromium for the browser tests: the distribution's ``/usr/bin/chromium`` (installed by ``make
test`` from scripts/test_services.txt, never ``playwright install``), driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CMMS_CHROMIUM", "/usr/bin/chromium")
#: The flags that work on this machine (no sandbox as root, no background network calls).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def launched() -> Iterator:
    """A running Chromium; each user of it opens a fresh context (an empty profile of its own)."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), (
        f"{CHROMIUM} missing: scripts/install_test_services.sh installs it (make test runs it)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
