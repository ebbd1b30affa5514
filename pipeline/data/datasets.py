"""Training batches: tokenised questions (Parquet, read once) joined with image features (HDF5).

A batch for "Is there a red cube left of the sphere?" holds its token ids, length, answer id,
expert layout (Find, Transform, Filter, DescribeOne, NoOp…) and the [H, W, C] features of its
image; a CLEVR-Ref batch holds the target cell and box offsets instead of the answer. The
tables are read into arrays once. Batches are fetched whole (`__getitems__`), so no per-question
Python collation runs, and their features stay in the store's float16 until `to_device`
(pipeline/runtime/inference.py) makes them float32 on the training device: half the bytes to
gather and to copy. Where the features live is `features_storage`:

- `page_cache`: read per batch from the shards (FeatureStore.read_batch, one preadv per image
  or run of adjacent images) into a fresh tensor, pinned when the device is a GPU so that the
  copy to it is asynchronous. The OS page cache holds the store once per machine for all
  workers; a store larger than RAM is read from disk the same way.
- `device`: the whole split copied once onto the training device (a GPU's memory; on the CPU,
  the process's own RAM) in the store's row order and gathered there with one index_select by
  row (FeatureStore.rows_of: image index → row); refused in one line when it does not fit.

A split may be a subset of CLEVR whose features cover only some of the images its questions ask
about (a partial download): `rows_with_features` are the questions whose image has features, the
only ones training draws and evaluation scores; the others are counted, never read.

Order: `EpochBatchSampler` shuffles every epoch with a seed-derived permutation, deals it out to
the ranks and cuts fixed-size batches; from a step number alone it knows where it is, so a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.schema import TOKENS_FORMAT
from pipeline.data.shards import FeatureStore, manifest_path
from pipeline.devices import free_memory_bytes
from pipeline.errors import ConfigError, DataError
from pipeline.tables import padded, read_parquet
from snmn.boxes import BoxGrid
from snmn.layout import NOOP

RESIDENT_PIECE = 512  # images read at a time when loading a split onto a device
CPU = torch.device("cpu")
COLUMNS = [
    "image_index",
    "tokens",
    "length",
    "answer_id",
    "layout",
    "target_cell",
    "offsets",
    "bbox",
    "question_type",
    "family",
]


@dataclass
class QuestionTable:
    """One split's questions as arrays (N questions, S = longest question, T steps)."""

    split: str
    image_index: np.ndarray  # [N] int64
    tokens: np.ndarray  # [N, S] int64, 0-padded
    lengths: np.ndarray  # [N] int64
    answers: np.ndarray  # [N] int64, -1 where unknown (test split)
    layouts: np.ndarray  # [N, T] int64, -1 rows where the question has no program
    target_cells: np.ndarray  # [N] int64, -1 for VQA rows
    offsets: np.ndarray  # [N, 4] float32, NaN for VQA rows
    boxes: np.ndarray  # [N, 4] float32 [x, y, w, h], NaN for VQA rows
    question_types: list[str | None]
    families: np.ndarray  # [N] int64, -1 when unknown
    box_grid: BoxGrid  # the H×W cells and the image pixels that target_cells / offsets refer to

    def __len__(self) -> int:
        return len(self.lengths)


def read_question_table(tokens_dir: str | Path, split: str, num_steps: int) -> QuestionTable:
    """Read `{tokens_dir}/{split}.parquet` into arrays."""
    path = Path(tokens_dir) / f"{split}.parquet"
    table = read_parquet(path, columns=COLUMNS)
    size = table.num_rows
    layouts = padded(table["layout"], width=num_steps, fill=-1).astype(np.int64)
    if size and layouts.shape[1] != num_steps:
        raise DataError(f"{tokens_dir}/{split}.parquet: layouts are not {num_steps} steps long")
    has_layout = table["layout"].is_valid().to_numpy(zero_copy_only=False)
    layouts[~has_layout] = -1
    return QuestionTable(
        split=split,
        image_index=table["image_index"].to_numpy().astype(np.int64),
        tokens=padded(table["tokens"]).astype(np.int64),
        lengths=table["length"].to_numpy().astype(np.int64),
        answers=_filled(table["answer_id"], -1),
        layouts=layouts.reshape(size, num_steps),
        target_cells=_filled(table["target_cell"], -1),
        offsets=_boxes(table["offsets"]),
        boxes=_boxes(table["bbox"]),
        question_types=table["question_type"].to_pylist(),
        families=_filled(table["family"], -1),
        box_grid=_box_grid(path, table.schema.metadata or {}),
    )


def model_box_grid(table: QuestionTable, feature_height: int, feature_width: int) -> BoxGrid:
    """The table's box grid, checked against the model's H×W feature grid."""
    grid = table.box_grid
    if (grid.grid_height, grid.grid_width) != (feature_height, feature_width):
        raise DataError(
            f"{table.split} tokens place boxes on a {grid.grid_height}×{grid.grid_width} grid, "
            f"the model's features are {feature_height}×{feature_width}; rerun `snmn tokenize`"
        )
    return grid


def _box_grid(path: Path, metadata: dict[bytes, bytes]) -> BoxGrid:
    """The grid `snmn tokenize` placed the boxes on: (H, W) cells over (height, width) pixels."""
    try:
        written = json.loads(metadata[b"snmn"])
        found = written.get("format", "none")
        grid_height, grid_width = written["grid"]
        image_height, image_width = written["image_size"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DataError(f"{path}: no grid / image_size metadata; rerun `snmn tokenize`") from None
    if found != TOKENS_FORMAT:
        raise DataError(
            f"{path}: written by another `snmn tokenize` (format {found}, this one reads "
            f"{TOKENS_FORMAT}); rerun it"
        )
    return BoxGrid(grid_height, grid_width, image_height, image_width)


def _filled(column, fill: int) -> np.ndarray:
    return column.fill_null(fill).to_numpy().astype(np.int64)


def _boxes(column) -> np.ndarray:
    values = padded(column, width=4, fill=0).astype(np.float32)
    values[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return values


class QuestionDataset(Dataset):
    """Questions of one split with their image features; items are whole batches of tensors."""

    def __init__(
        self,
        questions: QuestionTable,
        features_dir: str | Path,
        storage: str = "page_cache",  # or "device" (the module docstring)
        device: torch.device = CPU,
        read_threads: int = 1,  # page_cache: FeatureStore.read_batch's threads
    ) -> None:
        self.questions = questions
        self.store = FeatureStore(manifest_path(features_dir, questions.split))
        has_features = np.isin(questions.image_index, self.store.image_indices)  # [N]
        self.rows_with_features = np.flatnonzero(has_features)  # [M] question rows
        self.store.check_shards()  # every shard checked here, not first in a DataLoader worker
        self.pin_memory = device.type == "cuda" and storage == "page_cache"
        self.read_threads = read_threads
        self.dtype = torch.from_numpy(np.empty(0, self.store.dtype)).dtype  # the store's
        self.resident = resident_features(self.store, device) if storage == "device" else None

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return self.store.shape  # (H, W, C)

    @property
    def questions_skipped(self) -> int:
        """Questions whose image has no features (never drawn nor scored)."""
        return len(self.questions) - len(self.rows_with_features)

    def require_questions(self) -> None:
        """DataError unless some question of the split has its image's features."""
        if len(self.rows_with_features):
            return
        q = self.questions
        first = f" (the first asks about image {q.image_index[0]})" if len(q) else ""
        raise DataError(
            f"{self.store.manifest_path}: none of the {len(q):,} {q.split} questions has its "
            f"image's features{first}; extract the images they ask about"
        )

    def skipped_line(self) -> str:
        """What was skipped, for the log: "skipped 3 of 60 train questions: ..." ("" if none)."""
        if not self.questions_skipped:
            return ""
        rows = np.setdiff1d(np.arange(len(self.questions)), self.rows_with_features)
        return (
            f"skipped {self.questions_skipped:,} of {len(self.questions):,} "
            f"{self.questions.split} questions: their images have no features in "
            f"{self.store.manifest_path} (the first: image {self.questions.image_index[rows[0]]})"
        )

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        q = self.questions
        longest = int(q.lengths[rows].max())
        return {
            "rows": torch.from_numpy(rows),
            "tokens": torch.from_numpy(q.tokens[rows, :longest]),  # [B, S]
            "lengths": torch.from_numpy(q.lengths[rows]),  # [B]
            "features": self.features(q.image_index[rows]),  # [B, H, W, C] float16
            "answers": torch.from_numpy(q.answers[rows]),  # [B]
            "layouts": torch.from_numpy(q.layouts[rows]),  # [B, T]
            "target_cells": torch.from_numpy(q.target_cells[rows]),  # [B]
            "offsets": torch.from_numpy(q.offsets[rows]),  # [B, 4]
        }

    def features(self, images: np.ndarray) -> torch.Tensor:
        """[B, H, W, C] features of `images` [B] in the store's dtype (see the module docstring)."""
        if self.resident is not None:
            rows = torch.from_numpy(self.store.rows_of(images))  # [B] rows of the store
            return self.resident.index_select(0, rows.to(self.resident.device))
        batch = torch.empty(
            (len(images), *self.store.shape),
            dtype=self.dtype,
            pin_memory=self.pin_memory,
        )
        self.store.read_batch(images, batch.numpy(), self.read_threads)
        return batch


def resident_features(store: FeatureStore, device: torch.device) -> torch.Tensor:
    """The whole split on `device`: [N, H, W, C] in the store's dtype and row order (row r is
    image store.image_indices[r]), read shard-sized piece by piece; ConfigError when it would
    leave less than a tenth of the device's free memory."""
    needed = len(store) * store.image_bytes
    free = free_memory_bytes(device)
    if needed > 0.9 * free:
        raise ConfigError(
            f"features_storage device: the {len(store):,} images of {store.manifest_path} need "
            f"{needed / 1e9:.1f} GB but {device} has {free / 1e9:.1f} GB free; "
            "use features_storage page_cache"
        )
    piece = np.empty((min(len(store), RESIDENT_PIECE), *store.shape), dtype=store.dtype)
    resident = torch.empty(
        (len(store), *store.shape), dtype=torch.from_numpy(piece).dtype, device=device
    )
    for start in range(0, len(store), RESIDENT_PIECE):
        rows = np.arange(start, min(start + RESIDENT_PIECE, len(store)))
        store.read_rows(rows, piece[: len(rows)])
        resident[start : start + len(rows)].copy_(torch.from_numpy(piece[: len(rows)]))
    return resident


def identity_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batches arrive whole from `__getitems__`; nothing to collate."""
    return batch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Endless fixed-size batches for one rank, reshuffled every epoch, resumable at any step.

    Epoch e's order is a permutation seeded by (seed, e); rank r takes every world_size-th
    element, so the ranks' shares are disjoint and together form a global batch of
    `batch_size * world_size`. The last incomplete batch of an epoch is dropped (static shapes).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        start_step: int,
        rows: np.ndarray | None = None,
    ) -> None:
        """`rows`: draw only these question rows (a curriculum stage); None = all `size`."""
        self.rows = None if rows is None else torch.as_tensor(rows, dtype=torch.int64)
        self.size = size if rows is None else len(rows)
        self.batch_size = batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batches_per_epoch = self.size // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise DataError(
                f"{self.size} questions are fewer than one global batch of "
                f"{batch_size * world_size}"
            )
        self.start_step = start_step

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            epoch, offset = divmod(step, self.batches_per_epoch)
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(self.size, generator=generator)[self.rank :: self.world_size]
            if self.rows is not None:
                order = self.rows[order]
            for batch in range(offset, self.batches_per_epoch):
                yield order[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()
                step += 1

    def __len__(self) -> int:  # one epoch
        return self.batches_per_epoch


class CurriculumBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of short questions first, then longer ones, then all of them.

    "What color is the metal cylinder?" (Find, DescribeOne) before "Is there a brown thing left
    of the small brown rubber sphere?" (five modules): stage k lasts `stage_steps[k]` iterations
    and draws only `stage_rows[k]`; after the last stage every question is drawn (every one of
    `drawn`, if given). Resumable at any step, like EpochBatchSampler.
    """

    def __init__(
        self,
        size: int,
        stage_rows: list[np.ndarray],
        stage_steps: list[int],
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        start_step: int,
        drawn: np.ndarray | None = None,
    ) -> None:
        """`drawn`: the rows drawn after the last stage; None = all `size`."""
        shared = dict(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
        self.stages: list[tuple[int, EpochBatchSampler]] = []  # (iterations left, sampler)
        begin = 0
        for rows, steps in zip(stage_rows, stage_steps, strict=True):
            done = min(max(0, start_step - begin), steps)
            sampler = EpochBatchSampler(size, **shared, start_step=done, rows=rows)
            self.stages.append((steps - done, sampler))
            begin += steps
        self.all = EpochBatchSampler(
            size, **shared, start_step=max(0, start_step - begin), rows=drawn
        )

    def __iter__(self) -> Iterator[list[int]]:
        for steps, sampler in self.stages:
            yield from itertools.islice(iter(sampler), steps)
        yield from self.all

    def __len__(self) -> int:  # one epoch of all questions
        return len(self.all)


def layout_sizes(layouts: np.ndarray) -> np.ndarray:
    """Modules other than NoOp in each expert layout ([N, T] → [N]); -1 where there is none."""
    sizes = (layouts != NOOP).sum(axis=1)
    return np.where(layouts[:, 0] < 0, -1, sizes)


def evaluation_rows(rows: np.ndarray, rank: int, world_size: int, limit: int = 0) -> list[int]:
    """This rank's disjoint share of the first `limit` (0 = all) of `rows` (a dataset's
    rows_with_features), with no padding."""
    total = len(rows) if limit <= 0 else min(len(rows), limit)
    return rows[rank:total:world_size].tolist()
