"""The tokenise stage: CLEVR questions and CLEVR-Ref expressions → one Parquet table per split.

"What color is the large cube?" (train, image 12, answer "red", program scene → filter_size →
filter_shape → unique → query_color) becomes one row: its token ids, the answer id of "red", the
expert layout Find, DescribeOne, NoOp × 7 (T = 9) and its question type query_attribute. A CLEVR-Ref
row ("the large cube left of the sphere") also carries its box [x, y, w, h], the grid cell holding
the box centre and the box's four offsets from that cell (the paper's box output).

Words get ids from the vocabulary split (train) only; an unseen word is <unk>, counted in the
summary. Answers always get ids among CLEVR's 28 answers (CLEVR_ANSWERS: yes, no, 0-10, the
attribute values), whatever the data holds, so the answer head has CLEVR's 28 outputs in every
run. A question with a malformed program, an empty or overlong text, a missing training answer
or an answer outside CLEVR's 28 stops the stage with one line naming the file and the question,
and so does a questions file with no question at all or a vocabulary split whose every question
was dropped (the vocabularies would be empty); nothing is written until every split has been
read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.clevr.functions import QUESTION_TYPES
from pipeline.clevr.readers import Question, iter_questions, paused_gc, questions_info
from pipeline.clevr.world import CLEVR_ANSWERS
from pipeline.config import TokenizeConfig
from pipeline.data.schema import BOX, SCHEMA, TOKENS_FORMAT
from pipeline.data.text import SPECIAL_TOKENS, TOKEN_PATTERN, UNK_ID, Vocabulary
from pipeline.errors import ConfigError, DataError
from pipeline.tables import write_json_atomic, write_parquet_atomic
from snmn.layout import MODULE_NAMES, LayoutError, pad_layout, program_to_layout

_STRUCTURE = itemgetter(0, 1)  # ProgramNode → (function, inputs)


@dataclass
class _Layouts:
    """Expert layouts by program structure: most questions share a handful of shapes."""

    num_steps: int
    cache: dict[tuple, tuple[bytes | None, int]] = field(default_factory=dict)

    def get(self, program: tuple, path: Path, index: int) -> tuple[bytes | None, int]:
        """(padded module ids as bytes, or None when longer than T; number of modules)."""
        key = tuple(map(_STRUCTURE, program))  # ((function, inputs), ...)
        known = self.cache.get(key)
        if known is None:
            try:
                modules = program_to_layout(key)
            except LayoutError as error:
                raise DataError(f"{path}: question {index}: {error}") from None
            fits = len(modules) <= self.num_steps
            ids = bytes(pad_layout(modules, self.num_steps)) if fits else None
            known = self.cache[key] = (ids, len(modules))
        return known


def tokenize(config: TokenizeConfig, num_steps: int, grid: tuple[int, int]) -> dict[str, Any]:
    """Write {split}.parquet for every split, the three vocabularies and the summary JSON.

    `num_steps` is T (layouts are padded to it); `grid` is the (H, W) feature grid of the boxes.
    Returns the summary (also written to `config.summary_path`).
    """
    splits = _split_paths(config)
    _check(config, num_steps, grid)
    with paused_gc():  # millions of small objects, no cycles
        return _tokenize(config, splits, num_steps, grid)


def _tokenize(
    config: TokenizeConfig,
    splits: dict[str, tuple[Path, bool]],
    num_steps: int,
    grid: tuple[int, int],
) -> dict[str, Any]:
    layouts = _Layouts(num_steps)
    path, is_ref = splits[config.vocab_split]
    encoding = _encode(config.vocab_split, path, is_ref, config, layouts)
    words, answers = encoding.vocabularies()
    metadata = {
        "format": TOKENS_FORMAT,
        "dataset_version": str(questions_info(path).get("version", "")),  # "1.0": CLEVR
        "num_steps": num_steps,
        "grid": list(grid),  # (H, W) cells
        "image_size": [config.image_height, config.image_width],
        "vocab_split": config.vocab_split,
        "modules": list(MODULE_NAMES),
        "num_words": len(words),
        "num_answers": len(answers),
    }
    schema = SCHEMA.with_metadata({"snmn": json.dumps(metadata)})
    tables = {config.vocab_split: encoding.table(schema, answers, grid, config)}
    counts = {config.vocab_split: encoding.counts}
    for split, (path, is_ref) in splits.items():
        if split != config.vocab_split:
            encoding = _encode(split, path, is_ref, config, layouts, words)
            tables[split] = encoding.table(schema, answers, grid, config)
            counts[split] = encoding.counts
    del encoding  # the questions themselves are no longer needed

    # every split read and checked: only now write anything
    output_dir = Path(config.output_dir)
    for split, table in tables.items():
        write_parquet_atomic(table, output_dir / f"{split}.parquet")
        print(f"tokenize: {split}: {_describe(counts[split])}", flush=True)
    words.save(output_dir / "vocab_question.json")
    answers.save(output_dir / "vocab_answer.json")
    write_json_atomic(list(MODULE_NAMES), output_dir / "vocab_layout.json")
    summary = {
        "vocabulary": {"words": len(words), "answers": len(answers), "modules": len(MODULE_NAMES)},
        "splits": counts,
    }
    write_json_atomic(summary, config.summary_path)
    return summary


def _split_paths(config: TokenizeConfig) -> dict[str, tuple[Path, bool]]:
    """split → (questions file, is a CLEVR-Ref split)."""
    splits: dict[str, tuple[Path, bool]] = {}
    for names, is_ref in ((config.vqa_splits, False), (config.ref_splits, True)):
        for split in names:
            if split in splits:
                raise ConfigError(f"tokenize: split {split!r} is listed twice")
            path = Path(config.questions_dir) / f"{config.dataset}_{split}_questions.json"
            splits[split] = (path, is_ref)
    return splits


def _check(config: TokenizeConfig, num_steps: int, grid: tuple[int, int]) -> None:
    named = set(config.vqa_splits) | set(config.ref_splits)
    if config.vocab_split not in named:
        raise ConfigError(f"tokenize.vocab_split: {config.vocab_split!r} is not a listed split")
    if config.vqa_splits and config.vocab_split not in config.vqa_splits:
        raise ConfigError("tokenize.vocab_split: must be a VQA split (its answers are the classes)")
    if config.max_question_tokens < 1:
        raise ConfigError("tokenize.max_question_tokens: must be at least 1")
    if config.image_width < 1 or config.image_height < 1:
        raise ConfigError("tokenize.image_width/image_height: must be positive")
    if num_steps < 1 or min(grid) < 1:
        raise ConfigError(f"model: need T >= 1 and a non-empty grid, got T={num_steps}, {grid}")


# ---------------------------------------------------------------------------------------------
# One split
# ---------------------------------------------------------------------------------------------


@dataclass
class _SplitEncoding:
    """The columns of one split, built question by question, and its counts."""

    split: str
    path: Path
    is_ref: bool
    num_steps: int
    word_ids: dict[str, int]  # provisional ids when this split builds the vocabulary
    token_values: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    layout_values: bytearray = field(default_factory=bytearray)  # T module ids per layout
    layout_lengths: list[int | None] = field(default_factory=list)
    kept: list[Question] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def vocabularies(self) -> tuple[Vocabulary, Vocabulary]:
        """Word vocabulary of this (the vocabulary) split, ids made final; CLEVR's answers."""
        if not self.kept:  # every question dropped: the vocabularies would be empty
            raise DataError(
                f"{self.path}: all {self.counts['questions']} questions were dropped "
                "(layout longer than T), so the vocabularies would be empty; raise "
                "model.num_steps or choose another tokenize.vocab_split"
            )
        words = Vocabulary.build(self.word_ids, SPECIAL_TOKENS)
        remap = np.empty(len(self.word_ids), np.int32)  # provisional id → final id
        for word, provisional in self.word_ids.items():
            remap[provisional] = words.index[word]
        self.token_values = remap[np.asarray(self.token_values, np.int64)]
        self.word_ids = words.index
        return words, Vocabulary.build(CLEVR_ANSWERS)

    def table(
        self,
        schema: pa.Schema,
        answers: Vocabulary,
        grid: tuple[int, int],
        config: TokenizeConfig,
    ) -> pa.Table:
        kept = self.kept
        rows = len(kept)
        token_values = np.asarray(self.token_values, np.int32)
        token_offsets = np.zeros(rows + 1, np.int32)
        np.cumsum(self.lengths, out=token_offsets[1:])
        unknown = token_values == UNK_ID
        self.counts["unknown_tokens"] = int(unknown.sum())
        rows_of_tokens = np.repeat(np.arange(rows), self.lengths)
        self.counts["questions_with_unknown_tokens"] = int(np.unique(rows_of_tokens[unknown]).size)

        answer_texts = [None if self.is_ref else q.answer for q in kept]
        answer_ids = [None if a is None else answers.index[a] for a in answer_texts]
        has_layout = np.array([n is not None for n in self.layout_lengths], bool)
        layout_offsets = np.zeros(rows + 1, np.int32)
        np.cumsum(has_layout * self.num_steps, out=layout_offsets[1:])
        boxes = _box_columns(self.path, kept, grid, config) if self.is_ref else _no_boxes(rows)
        columns = {
            "question_index": pa.array([q.question_index for q in kept], pa.int64()),
            "position": pa.array([q.index for q in kept], pa.int64()),
            "split": pa.array([self.split] * rows, pa.string()),
            "image_index": pa.array([q.image_index for q in kept], pa.int64()),
            "image_filename": pa.array([q.image_filename for q in kept], pa.string()),
            "question": pa.array([q.text for q in kept], pa.string()),
            "tokens": pa.ListArray.from_arrays(token_offsets, pa.array(token_values)),
            "length": pa.array(self.lengths, pa.int32()),
            "answer": pa.array(answer_texts, pa.string()),
            "answer_id": pa.array(answer_ids, pa.int32()),
            "layout": pa.ListArray.from_arrays(
                layout_offsets,
                pa.array(np.frombuffer(self.layout_values, np.int8)),
                mask=pa.array(~has_layout),
            ),
            "layout_length": pa.array(self.layout_lengths, pa.int8()),
            "family": pa.array([q.family for q in kept], pa.int32()),
            "question_type": pa.array(
                [
                    None if q.program is None else QUESTION_TYPES.get(q.program[-1].function)
                    for q in kept
                ],
                pa.string(),
            ),
            **boxes,
        }
        return pa.Table.from_pydict(columns, schema=schema)


class _NewWords(dict):
    """word → id while the vocabulary split is read: an unseen word gets the next id."""

    def __missing__(self, word: str) -> int:
        self[word] = new_id = len(self)
        return new_id


class _KnownWords(dict):
    """word → id of a finished vocabulary: an unseen word is <unk>."""

    def __missing__(self, word: str) -> int:
        return UNK_ID


def _encode(
    split: str,
    path: Path,
    is_ref: bool,
    config: TokenizeConfig,
    layouts: _Layouts,
    words: Vocabulary | None = None,
) -> _SplitEncoding:
    """Read and encode one split; without `words` this split builds the vocabularies."""
    if words is None:
        word_ids: dict[str, int] = _NewWords((t, i) for i, t in enumerate(SPECIAL_TOKENS))
    else:
        word_ids = _KnownWords(words.index)
    encoding = _SplitEncoding(split, path, is_ref, layouts.num_steps, word_ids)
    word_id = word_ids.__getitem__
    findall = TOKEN_PATTERN.findall
    max_tokens = config.max_question_tokens
    token_values, lengths = encoding.token_values, encoding.lengths
    layout_values, layout_lengths = encoding.layout_values, encoding.layout_lengths
    kept = encoding.kept
    dropped = 0
    for question in iter_questions(path):
        tokens = findall(question.text.lower())
        if not 0 < len(tokens) <= max_tokens:
            raise DataError(f"{path}: question {question.index}: {_length_problem(tokens, config)}")
        if question.program is None:
            layout_lengths.append(None)
        else:
            ids, num_modules = layouts.get(question.program, path, question.index)
            if ids is None:
                dropped += 1
                _drop_long(path, question.index, num_modules, layouts.num_steps, config, dropped)
                continue
            layout_values += ids
            layout_lengths.append(num_modules)
        token_values += map(word_id, tokens)
        lengths.append(len(tokens))
        kept.append(question)
    if not kept and not dropped:
        kind = "ref_splits" if is_ref else "vqa_splits"
        raise DataError(
            f"{path}: no questions in the file; regenerate it, or leave {split!r} out of "
            f"tokenize.{kind}"
        )
    if not is_ref:  # a CLEVR-Ref answer field is ignored
        _check_answers(path, kept, needs_every_answer=words is None)
    encoding.counts = {
        "questions": len(kept) + dropped,
        "rows": len(kept),
        "dropped_long_layouts": dropped,
        "without_program": layout_lengths.count(None),
        "max_length": max(lengths, default=0),
    }
    return encoding


def _length_problem(tokens: list[str], config: TokenizeConfig) -> str:
    if not tokens:
        return "empty question"
    return (
        f"question has {len(tokens)} tokens, more than "
        f"tokenize.max_question_tokens={config.max_question_tokens}"
    )


def _drop_long(
    path: Path, index: int, num_modules: int, num_steps: int, config: TokenizeConfig, count: int
) -> None:
    """A layout longer than T: an error, or (drop_long_layouts) a dropped question.

    The first few drops of a split are printed; the summary counts them all.
    """
    problem = f"expert layout has {num_modules} modules, more than T={num_steps}"
    if not config.drop_long_layouts:
        raise DataError(
            f"{path}: question {index}: {problem} "
            "(tokenize.drop_long_layouts: true drops such questions)"
        )
    if count <= 5:
        print(f"tokenize: {path.name}: dropping question {index}: {problem}")


def _check_answers(path: Path, questions: list[Question], needs_every_answer: bool) -> None:
    """Answers are CLEVR's; the vocabulary split needs every answer, another all or none."""
    answers = frozenset(CLEVR_ANSWERS)
    for q in questions:
        if q.answer is not None and q.answer not in answers:
            raise DataError(
                f"{path}: question {q.index}: answer {q.answer!r} is not one of CLEVR's "
                f"{len(answers)} answers (yes, no, 0-10, a color, shape, material or size)"
            )
    missing = [q.index for q in questions if q.answer is None]
    if not missing or len(missing) == len(questions) and not needs_every_answer:
        return
    why = "the vocabulary split needs every answer" if needs_every_answer else "others have one"
    raise DataError(f"{path}: question {missing[0]}: missing answer ({why})")


# ---------------------------------------------------------------------------------------------
# CLEVR-Ref boxes on the feature grid
# ---------------------------------------------------------------------------------------------


def encode_boxes(
    boxes: np.ndarray, image_size: tuple[int, int], grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:  # image_size (height, width) pixels, grid (H, W) cells
    """Boxes [N, 4] as [x, y, w, h] pixels → (target cells [N], offsets [N, 4] in grid units).

    A pixel p sits at grid coordinate p / stride − 0.5 (stride = image size / grid size), so cell
    (row, column) has its centre at (row, column). x2 = x + w − 1 (inclusive pixels); the target
    cell is the rounded box centre (half to even), clamped to the grid; the offsets are
    (x1 − xc, y1 − yc, x2 − xc, y2 − yc). snmn/boxes.py decodes with the same convention.
    """
    height, width = image_size
    rows, cols = grid
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    stride_x, stride_y = width / cols, height / rows
    x1 = boxes[:, 0] / stride_x - 0.5
    y1 = boxes[:, 1] / stride_y - 0.5
    x2 = (boxes[:, 0] + boxes[:, 2] - 1) / stride_x - 0.5
    y2 = (boxes[:, 1] + boxes[:, 3] - 1) / stride_y - 0.5
    xc = np.clip(np.round((x1 + x2) / 2), 0, cols - 1)
    yc = np.clip(np.round((y1 + y2) / 2), 0, rows - 1)
    cells = (yc * cols + xc).astype(np.int64)
    offsets = np.stack([x1 - xc, y1 - yc, x2 - xc, y2 - yc], axis=1)
    return cells, offsets


def _box_columns(
    path: Path, questions: list[Question], grid: tuple[int, int], config: TokenizeConfig
) -> dict[str, pa.Array]:
    rows = len(questions)
    has_box = np.array([q.bbox is not None for q in questions], bool)
    boxes = np.array([q.bbox for q in questions if q.bbox is not None], np.float64).reshape(-1, 4)
    bad = np.flatnonzero((boxes[:, 2] <= 0) | (boxes[:, 3] <= 0))
    if bad.size:
        question = [q for q in questions if q.bbox is not None][bad[0]]
        raise DataError(f"{path}: question {question.index}: box {list(question.bbox)} has no area")
    cells, offsets = encode_boxes(boxes, (config.image_height, config.image_width), grid)
    all_boxes = np.zeros((rows, 4), np.float32)
    all_boxes[has_box] = boxes
    all_offsets = np.zeros((rows, 4), np.float32)
    all_offsets[has_box] = offsets
    all_cells = np.zeros(rows, np.int32)
    all_cells[has_box] = cells
    missing = pa.array(~has_box)
    return {
        "bbox": _fixed_boxes(all_boxes, missing),
        "target_cell": pa.array(all_cells, pa.int32(), mask=~has_box),
        "offsets": _fixed_boxes(all_offsets, missing),
    }


def _fixed_boxes(values: np.ndarray, missing: pa.Array) -> pa.Array:
    """[N, 4] floats as a list column of 4 floats per row, null where `missing`."""
    offsets = pa.array(np.arange(0, 4 * len(values) + 1, 4, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)), mask=missing)


def _no_boxes(rows: int) -> dict[str, pa.Array]:
    return {
        "bbox": pa.nulls(rows, BOX),
        "target_cell": pa.nulls(rows, pa.int32()),
        "offsets": pa.nulls(rows, BOX),
    }


def _describe(counts: dict[str, int]) -> str:
    return (
        f"{counts['questions']} questions → {counts['rows']} rows; "
        f"{counts['unknown_tokens']} unknown tokens in {counts['questions_with_unknown_tokens']} "
        "questions; "
        f"{counts['dropped_long_layouts']} dropped (layout > T); "
        f"{counts['without_program']} without program"
    )
