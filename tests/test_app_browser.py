"""The app in a real browser (Debian's chromium via Playwright): every tab opens, intake works by clicks.

Screenshots go to a temporary folder; their paths are printed (``pytest -s``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from app_helpers import running_app  # noqa: E402

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
TABS = ("Subject", "Recipes", "Run", "Results", "Report", "Data")

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"),
                                reason=f"{CHROMIUM} not installed (apt-get install chromium); required in CI")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    yield from running_app(home, None)


def test_click_through_tabs_and_take_in_a_demo_subject(app_url, tmp_path):
    shots: list[Path] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app_url, wait_until="load")
            page.get_by_role("tab", name="Subject").wait_for(timeout=30_000)

            def shot(name: str) -> None:
                path = tmp_path / f"{len(shots):02d}-{name}.png"
                page.screenshot(path=str(path), full_page=True)
                shots.append(path)

            # without consent: the reason shows up, nothing is taken in
            page.get_by_label("…or a demo subject (LFW)").click()
            page.get_by_role("option", name="Naomi_Watts").click()
            page.get_by_role("button", name="Take in photos").click()
            page.get_by_text("consent is required").first.wait_for(timeout=30_000)
            shot("subject-no-consent")
            page.get_by_label("The person in these photos consented").check()
            page.get_by_role("button", name="Take in photos").click()
            page.get_by_text("accepted", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("training and").first.wait_for(timeout=60_000)
            shot("subject-intake")
            for tab in TABS[1:]:
                page.get_by_role("tab", name=tab).click()
                shot(tab.lower())
            page.get_by_role("button", name="What is stored?").click()
            page.get_by_text("files stored").first.wait_for(timeout=30_000)
            shot("data")
        finally:
            browser.close()
    for path in shots:
        print(f"screenshot: {path}")
        assert path.stat().st_size > 5_000
