"""The demo page in a real headless Chromium: pick an image, ask a question with an unknown word,
read the answer and the steps, upload a PNG; a screenshot is kept (tmp_path and /tmp/demo.png).

Driven by Selenium over Debian's chromium + chromium-driver (same version, one package source):
WebDriver clicks and types like a user and waits on the page's own state, which a raw DevTools
client would have to re-implement. A missing browser, driver or selenium FAILS the test with the
install line (CI installs them); it never skips.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.integration.demo_server import demo_settings, server_process, train_tiny_model

IMAGE = 3
QUESTION = "Are there more cubes than zorblax spheres?"
SCREENSHOT_COPY = Path("/tmp/demo.png")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1700",
]
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium"


def start_browser(profile: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed; install the browser test tools: {INSTALL}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = "chromium" if browser is None else "chromedriver"
        pytest.fail(f"{missing} not found on PATH; install the browser test tools: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@pytest.fixture(scope="module")
def page(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """(browser on the demo page, the server URL)."""
    work = tmp_path_factory.mktemp("demo_browser")
    settings = demo_settings(tiny_data, train_tiny_model(tiny_data, work))
    with server_process(settings, work / "server.log") as url:
        browser = start_browser(work / "chromium-profile")
        try:
            browser.set_page_load_timeout(60)
            browser.get(url)
            yield browser, url
        finally:
            browser.quit()


def test_the_page_shows_the_answer_and_every_step(page, tiny_data: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, url = page
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    assert "resnet18" in browser.find_element(By.ID, "model-info").text
    thumbnails = browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")
    assert len(thumbnails) == 12  # the first page of the 16 val images
    browser.find_element(By.CSS_SELECTOR, f'.thumb[data-id="{IMAGE}"]').click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#suggestions .suggestion"))
    assert browser.find_element(By.ID, "picked-label").text == f"Image {IMAGE} of val"

    browser.find_element(By.ID, "question").send_keys(QUESTION)
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda b: b.find_element(By.ID, "result").is_displayed())
    expected = requests.post(
        f"{url}/api/ask", json={"image_id": IMAGE, "question": QUESTION}
    ).json()
    assert browser.find_element(By.ID, "answer").text == expected["answer"]
    unknown = browser.find_element(By.ID, "unknown-words")
    assert unknown.is_displayed() and "zorblax" in unknown.text
    cards = browser.find_elements(By.CSS_SELECTOR, "#steps .step")
    assert [card.find_element(By.TAG_NAME, "h3").text.split(" (")[0] for card in cards] == [
        f"Step {step['step']}: {step['module']}" for step in expected["steps"]
    ]
    folded = ", ".join(str(step) for step in expected["folded_steps"])
    assert (
        f"NoOp step(s) folded away (steps {folded})" in browser.find_element(By.ID, "folded").text
    )
    words = cards[0].find_elements(By.CSS_SELECTOR, ".word")
    assert [w.text for w in words] == [w["text"] for w in expected["words"]]
    assert [w.text for w in cards[0].find_elements(By.CSS_SELECTOR, ".word.unknown")] == ["zorblax"]
    assert f"stack depth after the step: {expected['steps'][0]['stack_depth']}" in cards[0].text
    heat = browser.execute_script(  # the overlay makes the step's picture differ from the photo
        "const a = document.querySelector('#steps canvas');"
        "const b = document.createElement('canvas');"
        "b.width = a.width; b.height = a.height;"
        "b.getContext('2d').drawImage(document.getElementById('picked-image'), 0, 0, a.width, "
        "a.height);"
        "const x = a.getContext('2d').getImageData(0, 0, a.width, a.height).data;"
        "const y = b.getContext('2d').getImageData(0, 0, a.width, a.height).data;"
        "let differ = 0; for (let i = 0; i < x.length; i += 4) differ += x[i] !== y[i];"
        "return differ / (x.length / 4);"
    )
    assert heat > 0.05

    screenshot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(screenshot))
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    assert screenshot.stat().st_size > 10_000

    png = tiny_data / "mini-clevr" / "images" / "val" / f"CLEVR_val_{IMAGE:06d}.png"
    browser.find_element(By.ID, "upload").send_keys(str(png))
    wait.until(
        lambda b: (
            b.find_element(By.ID, "picked-label").text.startswith("Uploaded")
            and not b.find_element(By.ID, "result").is_displayed()
        )
    )
    browser.find_element(By.ID, "ask").click()
    wait.until(lambda b: b.find_element(By.ID, "result").is_displayed())
    assert browser.find_element(By.ID, "answer").text == expected["answer"]
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.find_element(By.ID, "next-page").click()
    wait.until(lambda b: b.find_element(By.ID, "page-label").text == "13–16 of 16")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")) == 4
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []  # no script error, no blocked resource (CSP), no failed request
