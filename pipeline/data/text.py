"""CLEVR-style tokeniser and the vocabularies of questions, answers and modules.

"Is there a red cube; what size is it?" becomes
["is", "there", "a", "red", "cube", ";", "what", "size", "is", "it", "?"]: lower-case, split on
non-word characters, each punctuation mark kept as a token of its own. Word ids come from the
training questions only, after two special tokens: <pad> = 0 fills a batch to its longest
question (the BiLSTM honours lengths, so no start/end tokens are needed) and <unk> = 1 stands for a
word the training questions never used. Answers ("yes", "3", "red") are CLEVR's 28
(pipeline.clevr.world.CLEVR_ANSWERS) in sorted order, with no special tokens; modules keep the
fixed order of snmn.layout.MODULE_NAMES.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataError
from pipeline.tables import write_json_atomic

TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
SPECIAL_TOKENS = (PAD, UNK)


def tokenize_text(text: str) -> list[str]:
    """'What color is the large cube?' → ['what', 'color', 'is', 'the', 'large', 'cube', '?']."""
    return TOKEN_PATTERN.findall(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """Words in id order; `index` maps each back to its id (the first `specials` are reserved)."""

    words: tuple[str, ...]
    specials: tuple[str, ...] = ()
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.words[: len(self.specials)]) != self.specials:
            raise DataError(f"vocabulary must start with {list(self.specials)}")
        index = {word: i for i, word in enumerate(self.words)}
        if len(index) != len(self.words):
            raise DataError("vocabulary lists a word twice")
        object.__setattr__(self, "index", index)

    @classmethod
    def build(cls, words: Iterable[str], specials: tuple[str, ...] = ()) -> Vocabulary:
        """Specials first, then every other distinct word in sorted order (deterministic)."""
        return cls(tuple(specials) + tuple(sorted(set(words) - set(specials))), specials)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of `tokens`; a word outside the vocabulary becomes <unk> (needs UNK in specials)."""
        unknown = self.index.get(UNK)
        tokens = list(tokens)
        ids = [self.index.get(token, unknown) for token in tokens]
        if unknown is None and None in ids:
            raise DataError(f"{tokens[ids.index(None)]!r} is not in the vocabulary")
        return ids  # type: ignore[return-value]

    def save(self, path: str | Path) -> None:
        """A JSON list of the words, position = id, written atomically."""
        write_json_atomic(list(self.words), path)

    @classmethod
    def load(cls, path: str | Path, specials: tuple[str, ...] = ()) -> Vocabulary:
        """Read a vocabulary written by `save` (a JSON list of strings)."""
        path = Path(path)
        try:
            words = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: not a vocabulary file: {error}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(f"{path}: a vocabulary is a JSON list of strings")
        try:
            return cls(tuple(words), specials)
        except DataError as error:
            raise DataError(f"{path}: {error}") from None


def load_question_vocabulary(path: str | Path) -> Vocabulary:
    return Vocabulary.load(path, SPECIAL_TOKENS)
