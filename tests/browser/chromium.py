"""Debian's Chromium, which Playwright drives instead of a browser build of its own.

Playwright's ``playwright install`` downloads browsers from outside the package
registries; Debian's ``chromium`` package is reachable everywhere the suite runs.
"""

import os
import subprocess
from pathlib import Path

from tests.services import require

CHROMIUM = Path("/usr/bin/chromium")
APT_WAIT_S = 600  # the package and its libraries are ~100 MB on a cold machine
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB; Chromium needs more
    "--no-first-run",
    "--disable-background-networking",  # nothing but the server under test is contacted
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str:
    """Chromium's path; installs Debian's package when it is missing (this needs root)."""
    if not CHROMIUM.exists() and not _install_chromium():
        require("chromium is not installed and `apt-get install -y chromium` did not install it")
    return str(CHROMIUM)


def _install_chromium() -> bool:
    """``apt-get install``, and once more after ``apt-get update`` if the lists were stale."""
    for steps in ([["install", "-y", "chromium"]], [["update"], ["install", "-y", "chromium"]]):
        if all(_apt_get(*step) for step in steps):
            return CHROMIUM.exists()
    return False


def _apt_get(*arguments: str) -> bool:
    try:
        done = subprocess.run(
            ["apt-get", *arguments],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            timeout=APT_WAIT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
