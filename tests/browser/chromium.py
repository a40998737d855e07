"""Debian's Chromium, which Playwright drives instead of a browser build of its own.

Playwright's ``playwright install`` downloads browsers from outside the package
registries; Debian's ``chromium`` package is reachable everywhere the suite runs.
"""

from pathlib import Path

from tests.services import apt_install, require

CHROMIUM = Path("/usr/bin/chromium")
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
    if not CHROMIUM.exists() and not (apt_install("chromium") and CHROMIUM.exists()):
        require("chromium is not installed and `apt-get install -y chromium` did not install it")
    return str(CHROMIUM)
