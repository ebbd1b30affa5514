"""The demo on real CLEVR: a model trained offline on mini-CLEVR answers the release's own test
images and questions in a real Chromium, reading every word.

"There is a purple object on the left side of the purple thing that is in front of the matte
thing that is to the left of the red metallic object; what is its material?" is CLEVR_test
question 2, about CLEVR_test_000002.png (a Blender render, RGBA). The model's vocabulary is
built, as in the default run, from generated mini-CLEVR train questions, which speak CLEVR's 82
words; the real test images get features from the very backbone of the training features. The
page must show the answer the API gives, every step, and no word marked unknown; all ten real
questions must read without an unknown word through the API.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests

from pipeline.clevr.world import CLEVR_ANSWERS
from pipeline.config import ExtractConfig, GenerateConfig, TokenizeConfig
from pipeline.data.tokenization import tokenize
from pipeline.minclevr.generate import generate
from pipeline.vision.features import extract_features
from tests.conftest import REAL_CLEVR_SAMPLE, TINY_GRID
from tests.integration.demo_server import demo_settings, server_process, train_tiny_model
from tests.integration.test_demo_browser import start_browser

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not REAL_CLEVR_SAMPLE.is_dir(), reason="the real CLEVR test sample is not at hand"
    ),
]

TRAIN_IMAGES = 300  # enough generated questions for CLEVR's 82 words (test_minclevr_vocabulary)
IMAGE = 2
SCREENSHOT_COPY = Path("/tmp/demo_real_clevr.png")


def real_questions() -> list[dict]:
    path = REAL_CLEVR_SAMPLE / "questions" / "CLEVR_test_questions.json"
    return json.loads(path.read_text())["questions"]


def distinct_colours(browser) -> int:
    """How many distinct RGB values the picked-image canvas shows (a blank canvas: 1)."""
    return browser.execute_script(
        "const c = document.getElementById('picked-image');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const seen = new Set();"
        "for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);"
        "return seen.size;"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The demo's URL, serving the 10 real test images with a model trained on mini-CLEVR."""
    root = tmp_path_factory.mktemp("demo_real")
    generate(
        GenerateConfig(
            output_dir=str(root / "mini-clevr"),
            num_images={"train": TRAIN_IMAGES, "val": 8},
            refexps_per_image=0,
        )
    )
    tokenize(
        TokenizeConfig(
            questions_dir=str(root / "mini-clevr" / "questions"),
            output_dir=str(root / "tokens"),
            summary_path=str(root / "tokenize.json"),
            vqa_splits=("train", "val"),
            ref_splits=(),
        ),
        num_steps=9,
        grid=(TINY_GRID, TINY_GRID),
    )
    images = root / "images"  # mini-CLEVR's train and val beside the real test images
    images.mkdir()
    for split in ("train", "val"):
        (images / split).symlink_to(root / "mini-clevr" / "images" / split)
    shutil.copytree(REAL_CLEVR_SAMPLE / "images" / "test", images / "test")
    extract_features(
        ExtractConfig(
            images_dir=str(images),
            output_dir=str(root / "features"),
            splits=("train", "val", "test"),
            backbone="resnet18",
            input_height=64,
            input_width=64,
            shard_size=128,
            decode_workers=0,
            calibration_images=16,
        )
    )
    model = train_tiny_model(root, root / "work")
    settings = demo_settings(root, model, split="test", images_dir=str(images))
    with server_process(settings, root / "server.log") as url:
        yield url, root


def test_every_real_question_reads_without_an_unknown_word(server) -> None:
    url, _ = server
    for question in real_questions():
        reply = requests.post(
            f"{url}/api/ask",
            json={"image_id": question["image_index"], "question": question["question"]},
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        reasoning = reply.json()
        assert reasoning["unknown_words"] == [], question["question"]
        assert reasoning["answer"] in CLEVR_ANSWERS
        assert (reasoning["image_width"], reasoning["image_height"]) == (480, 320)


def test_the_page_answers_a_real_image_and_question(server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = server
    question = next(q for q in real_questions() if q["image_index"] == IMAGE)["question"]
    browser = start_browser(root / f"chromium-profile-{tmp_path.name}")
    try:
        browser.set_page_load_timeout(60)
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert len(browser.find_elements(By.CSS_SELECTOR, "#gallery .thumb")) == 10
        browser.find_element(By.CSS_SELECTOR, f'.thumb[data-id="{IMAGE}"]').click()
        wait.until(lambda b: b.find_element(By.ID, "picked-label").text == f"Image {IMAGE} of test")
        wait.until(lambda b: distinct_colours(b) > 1000)  # the real render, painted

        browser.find_element(By.ID, "question").send_keys(question)
        browser.find_element(By.ID, "ask").click()
        wait.until(lambda b: b.find_element(By.ID, "result").is_displayed())
        expected = requests.post(
            f"{url}/api/ask", json={"image_id": IMAGE, "question": question}, timeout=60
        ).json()
        assert browser.find_element(By.ID, "answer").text == expected["answer"]
        assert not browser.find_element(By.ID, "unknown-words").is_displayed()
        assert browser.find_elements(By.CSS_SELECTOR, ".word.unknown") == []
        cards = browser.find_elements(By.CSS_SELECTOR, "#steps .step")
        assert len(cards) == len(expected["steps"]) > 0
        words = [w.text for w in cards[0].find_elements(By.CSS_SELECTOR, ".word")]
        assert words == [w["text"] for w in expected["words"]]
        assert "metallic" in words and ";" in words  # CLEVR's own words, read as known
        assert not browser.find_element(By.ID, "error").is_displayed()
        screenshot = tmp_path / "demo_real_clevr.png"
        assert browser.save_screenshot(str(screenshot))
        shutil.copyfile(screenshot, SCREENSHOT_COPY)
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert severe == []
    finally:
        browser.quit()
