"""The CLEVR-style tokeniser and the vocabularies."""

import json

import pytest

from pipeline.data.text import (
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Vocabulary,
    load_question_vocabulary,
    tokenize_text,
)
from pipeline.errors import DataError


def test_tokens_are_lower_case_words_and_punctuation():
    assert tokenize_text("What color is the large cube?") == [
        "what", "color", "is", "the", "large", "cube", "?"
    ]  # fmt: skip
    text = "There is a small cube behind the cylinder; what material is it?"
    tokens = tokenize_text(text)
    assert tokens[5:9] == ["behind", "the", "cylinder", ";"]
    assert tokens[-1] == "?"
    assert tokenize_text("Are there cubes,  spheres or\tcylinders?") == [
        "are", "there", "cubes", ",", "spheres", "or", "cylinders", "?"
    ]  # fmt: skip


def test_every_punctuation_mark_is_its_own_token():
    assert tokenize_text("cube's size?!") == ["cube", "'", "s", "size", "?", "!"]
    assert tokenize_text("") == []
    assert tokenize_text("  \n ") == []


def test_question_vocabulary_reserves_pad_and_unk():
    vocabulary = Vocabulary.build(["cube", "what", "?", "cube"], SPECIAL_TOKENS)
    assert vocabulary.words == ("<pad>", "<unk>", "?", "cube", "what")
    assert vocabulary.index["<pad>"] == PAD_ID == 0
    assert vocabulary.index["<unk>"] == UNK_ID == 1
    assert vocabulary.encode(["what", "zebra", "cube", "?"]) == [4, UNK_ID, 3, 2]
    assert len(vocabulary) == 5


def test_a_vocabulary_without_unk_rejects_unseen_words():
    answers = Vocabulary.build(["yes", "no", "3", "yes"])
    assert answers.words == ("3", "no", "yes")
    assert answers.encode(["no"]) == [1]
    with pytest.raises(DataError, match="'maybe' is not in the vocabulary"):
        answers.encode(["maybe"])


def test_save_and_load_round_trip(tmp_path):
    vocabulary = Vocabulary.build(["red", "cube"], SPECIAL_TOKENS)
    path = tmp_path / "vocab_question.json"
    vocabulary.save(path)
    assert json.loads(path.read_text()) == ["<pad>", "<unk>", "cube", "red"]
    assert load_question_vocabulary(path) == vocabulary
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"words": []}', "JSON list of strings"),
        ('["<pad>", "<unk>", "cube", "cube"]', "lists a word twice"),
        ('["cube", "<pad>", "<unk>"]', "must start with"),
        ("[", "not a vocabulary file"),
    ],
)
def test_bad_vocabulary_files(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_question_vocabulary(path)


def test_missing_vocabulary_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_question_vocabulary(tmp_path / "nope.json")
