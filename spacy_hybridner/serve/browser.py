"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium:
for the end-to-end test of the page and the screenshot script."""

import shutil
from pathlib import Path
from typing import Tuple

BROWSER_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver",)
INSTALL_HINT = "apt-get install chromium chromium-driver (as root; .ci/run does it in CI)"


def _find(names: Tuple[str, ...], candidates: Tuple[str, ...]) -> str:
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return ""


def chromium_paths() -> Tuple[str, str]:
    """The Chromium binary and chromedriver. Raises FileNotFoundError saying how to install them."""
    browser = _find(("chromium", "chromium-browser"), BROWSER_PATHS)
    driver = _find(("chromedriver",), DRIVER_PATHS)
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        raise FileNotFoundError(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    return browser, driver


def headless_chromium(user_data_dir: Path, window_size: Tuple[int, int] = (1200, 900)):
    """A Selenium WebDriver on headless Chromium with a fresh profile in ``user_data_dir``,
    no network services of its own (no sync, updates, QUIC, first-run pages).
    RETURNS (selenium.webdriver.Chrome): quit it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={window_size[0]},{window_size[1]}",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)
