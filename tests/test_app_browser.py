"""The app in a real browser (Debian's chromium via Playwright): every tab opens and works by clicks.

Intake of a demo subject, a run of the control alone, its results, report and W&B note, the stored data
and its erasure. Screenshots go to a temporary folder; their paths are printed (``pytest -s``).
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
IMAGES_LOADED = "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK) and not os.environ.get("CI"),
                                reason=f"{CHROMIUM} not installed (apt-get install chromium); required in CI")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    yield from running_app(home, {"WANDB_MODE": "offline", "WANDB_DIR": str(home / "wandb")})


def test_click_through_every_tab_intake_run_report_and_erase(app_url, tmp_path):
    shots: list[Path] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app_url, wait_until="load")
            page.get_by_role("tab", name="Subject").wait_for(timeout=30_000)
            page.get_by_text("Not signed in").first.wait_for(timeout=30_000)

            def shot(name: str) -> None:
                page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy images load
                page.wait_for_function(IMAGES_LOADED, timeout=30_000)
                path = tmp_path / f"{len(shots):02d}-{name}.png"
                page.screenshot(path=str(path), full_page=True)
                shots.append(path)

            def tab(name: str) -> None:
                page.get_by_role("tab", name=name).click()

            # without consent: the reason shows up, nothing is taken in
            page.get_by_label("…or a demo subject (LFW)").click()
            page.get_by_role("option", name="Naomi_Watts").click()
            page.get_by_role("button", name="Take in photos").click()
            page.get_by_text("consent is required").first.wait_for(timeout=30_000)
            shot("subject-no-consent")
            page.locator(".toast-close").first.click()
            page.get_by_label("The person in these photos consented").check()
            page.get_by_role("button", name="Take in photos").click()
            page.get_by_text("training and").first.wait_for(timeout=60_000)
            shot("subject-intake")

            tab("Recipes")  # untick lora: the control alone, and its parameters leave the YAML
            page.get_by_text("rank:").first.wait_for(timeout=30_000)
            shot("recipes")
            page.get_by_label("lora", exact=True).uncheck()
            page.get_by_text("rank:").wait_for(state="detached", timeout=30_000)

            for name, button, shows, seconds in (  # each tab: press its button, wait for its result, screenshot
                    ("Run", "Run comparison", "Run finished", 300),
                    ("Results", "Show results", "none (control)", 60),
                    ("Report", "Prepare downloads", "stays on the server that runs this app", 60),
                    ("Data", "What is stored?", "files stored", 30)):
                tab(name)
                page.get_by_role("button", name=button).click()
                page.get_by_text(shows).first.wait_for(timeout=seconds * 1000)
                shot(name.lower())
            page.get_by_role("button", name="Erase now").click()
            page.get_by_text("Verification: ok").first.wait_for(timeout=120_000)
            shot("data-erased")
        finally:
            browser.close()
    for path in shots:
        print(f"screenshot: {path}")
        assert path.stat().st_size > 5_000


def test_provider_tab_grades_the_questionnaire_audits_uploads_and_erases_them(app_url, tmp_path):
    """Issue #15: fill part of the questionnaire, upload headshots/selfies/holdout, grade; questions and letters
    appear; the uploads are this session's data (Data tab) and go with Erase now."""
    lfw = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "demo" / "Colin_Powell"
    photos = {n: lfw / f"Colin_Powell_{n:04d}.jpg" for n in range(1, 19)}
    if not all(p.is_file() for p in photos.values()):
        pytest.skip(f"no LFW demo photos under {lfw}")
    shot_path = tmp_path / "provider-tab.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(app_url, wait_until="load")
            page.get_by_role("tab", name="Provider").click()
            page.locator("#provider-name").get_by_role("textbox").fill("Example Headshots (fictional)")
            page.locator("#provider-answer-explicit_biometric_consent").get_by_label("no", exact=True).check()
            page.locator("#provider-answer-erasure_on_request").get_by_label("yes", exact=True).check()
            page.locator("#provider-answer-photo_retention_days").get_by_role("textbox").fill("7")
            page.get_by_text("Optional: audit the provider's headshots").click()
            for elem, numbers in (("generated", (1, 2, 3)), ("train", range(1, 7)), ("holdout", (16, 17, 18))):
                page.locator(f"#provider-{elem} input[type=file]").set_input_files([str(photos[n]) for n in numbers])
            page.wait_for_timeout(1500)  # the uploads finish
            page.get_by_role("button", name="Grade the provider").click()
            page.get_by_text("Grade D").first.wait_for(timeout=120_000)  # 2 good, 1 blocker (no consent) -> D
            page.get_by_text("no explicit consent for face processing").first.wait_for(timeout=10_000)
            page.get_by_text("identity.verification_rate").first.wait_for(timeout=10_000)
            letters = page.locator("#provider-letters textarea").input_value()
            assert "Article 17" in letters and "Example Headshots (fictional)" in letters
            assert "[dpia]" in page.locator("#provider-questions textarea").input_value()
            page.screenshot(path=str(shot_path), full_page=True)

            page.get_by_role("tab", name="Data").click()
            page.get_by_role("button", name="What is stored?").click()
            page.get_by_text("files stored").first.wait_for(timeout=30_000)  # only the Provider tab stored any
            page.get_by_role("button", name="Erase now").click()
            page.get_by_text("Verification: ok").first.wait_for(timeout=120_000)
        finally:
            browser.close()
    print(f"screenshot: {shot_path}")
    assert shot_path.stat().st_size > 5_000
