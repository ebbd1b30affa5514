"""mini-CLEVR speaks CLEVR's language: its train questions use exactly CLEVR's 82 words.

"There is a big shiny ball; what is its color?" must read to a model trained offline as it
reads to one trained on the release: the question vocabulary that `snmn tokenize` builds from a
generated train split is the release's, word for word, the referring expressions use no other
word, and the answer vocabulary is CLEVR's 28 answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.clevr.world import CLEVR_ANSWERS, CLEVR_QUESTION_WORDS
from pipeline.config import GenerateConfig, TokenizeConfig
from pipeline.data.text import SPECIAL_TOKENS
from pipeline.data.tokenization import tokenize
from pipeline.minclevr.generate import generate

TRAIN_IMAGES = 300  # the default settings otherwise; the rarest phrasing ("anything else") 3 times


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory) -> tuple[Path, dict]:
    """The default run's first 300 train images (same settings, seed 0), tokenised."""
    root = tmp_path_factory.mktemp("language")
    generate(
        GenerateConfig(output_dir=str(root / "mini-clevr"), num_images={"train": TRAIN_IMAGES})
    )
    config = TokenizeConfig(
        questions_dir=str(root / "mini-clevr" / "questions"),
        output_dir=str(root / "tokens"),
        summary_path=str(root / "tokenize.json"),
        vqa_splits=("train",),
        ref_splits=("loc_train",),
    )
    return Path(config.output_dir), tokenize(config, num_steps=9, grid=(10, 15))


def test_the_train_questions_use_exactly_clevrs_words(tokenized):
    tokens, summary = tokenized
    words = json.loads((tokens / "vocab_question.json").read_text())
    assert words[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert words[len(SPECIAL_TOKENS) :] == list(CLEVR_QUESTION_WORDS)
    assert summary["splits"]["train"]["questions"] == TRAIN_IMAGES * 10


def test_the_referring_expressions_use_no_other_word(tokenized):
    _, summary = tokenized
    assert summary["splits"]["loc_train"]["rows"] > 0
    assert summary["splits"]["loc_train"]["unknown_tokens"] == 0


def test_the_answers_are_clevrs_28(tokenized):
    tokens, summary = tokenized
    assert json.loads((tokens / "vocab_answer.json").read_text()) == sorted(CLEVR_ANSWERS)
    assert summary["vocabulary"]["answers"] == 28
