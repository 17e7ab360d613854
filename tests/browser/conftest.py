"""Browser tests: Debian's `chromium`, driven headless by Playwright (the Python package only; Playwright's own
browser download is not used). Without either, every test here is skipped with a message that says how to get it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("HISTOSYNTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HERE = Path(__file__).resolve().parent


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).is_file():
        return (f"no chromium at {CHROMIUM}: install Debian's package (`make browser-deps` as root; .ci/run runs it) "
                "or set HISTOSYNTH_CHROMIUM to a Chromium binary")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (--no-sandbox: CI runs as root)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()
