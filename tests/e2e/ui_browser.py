"""Debian's headless Chromium driven by Playwright for the UI test, and its screenshots.

Playwright comes from PyPI (the dev extra) and never downloads a browser: it launches the system
Chromium that `.ci/run` installs with apt. Without one the UI test is skipped, unless
``ML_PLATFORM_REQUIRE_BROWSER=1`` (set in CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_ENV = "ML_PLATFORM_REQUIRE_BROWSER"
SCREENSHOTS_ENV = "ML_PLATFORM_UI_SCREENSHOTS"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in CI, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip the calling test when Chromium or Playwright is missing (fail in CI instead)."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not missing:
        return
    reason = "the UI test needs " + " and ".join(missing)
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires the browser")
    pytest.skip(reason)


@contextmanager
def chromium_page(profile: Path) -> Iterator[Page]:
    """A page in a fresh headless Chromium with the empty user-data directory ``profile``."""
    from playwright.sync_api import sync_playwright

    profile.mkdir(parents=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            context.close()


class Screenshots:
    """Full-page screenshots numbered in the order taken, copied to ``$ML_PLATFORM_UI_SCREENSHOTS``
    when that is set (a CI artifact directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []
        print(f"UI screenshots: {directory}")

    def take(self, page: Page, name: str) -> Path:
        path = self.directory / f"{len(self.taken) + 1:02d}_{name}.png"
        page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        copy_to = os.environ.get(SCREENSHOTS_ENV)
        if copy_to:
            Path(copy_to).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy_to)
        return path

    @contextmanager
    def on_failure(self, page: Page) -> Iterator[None]:
        """Keep a screenshot of the page a failing block left the browser on."""
        try:
            yield
        except BaseException:
            with suppress(Exception):  # the page or browser may be what failed
                self.take(page, "failure")
            raise
