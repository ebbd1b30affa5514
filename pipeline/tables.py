"""Parquet tables and JSON files, written atomically; list columns read back as padded arrays.

The tokenised questions of a split ("What color is the large cube?" → ids [28, 7, 14, ...],
layout Find, DescribeOne, NoOp, ...) are one Parquet table per split. A table is written to a
hidden temporary name in the same folder and renamed when complete, so a killed run leaves either
the old file or the new one, never half of one. Readers turn the variable-length `tokens` column
into a [N, S] array padded with 0 (<pad>).

Every file of the pipeline that must never be seen half-written goes through `atomic_path` (or
`write_atomic`, built on it): Parquet tables, JSON metrics and manifests, torch weights and
checkpoints, HDF5 feature shards. The temporary name is fixed, `.<name>.partial` (a rerun
overwrites what a killed run left; `snmn extract` deletes such leftovers), so that files written
through it do not depend on the process: torch.save names the records inside its zip file after
the file's stem, here `.<name>`, and a process id in that stem would change the weights' bytes and
sha256 from run to run. Where two runs could write into the same folder (generate, extract),
`pipeline.locks.writer_lock` stops the second one before it writes anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DataError

TEMPORARY_SUFFIX = ".partial"  # data/train/.train_00008.h5.partial while shard 8 is written


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to `path` (folder created) to write to: renamed to `path` when the
    block ends, removed if it raises. For a writer that fills one file over many calls::

        with atomic_path(folder / "train_00008.h5") as temporary, h5py.File(temporary, "w") as f:
            ...  # 512 images, batch by batch
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then rename it to `path`; on any failure remove it."""
    with atomic_path(path) as temporary:
        write(temporary)


def write_parquet_atomic(table: pa.Table, path: str | Path) -> None:
    """Write `table` to `path` (zstd-compressed Parquet) so that no half file ever exists."""
    write_atomic(path, lambda temporary: pq.write_table(table, temporary, compression="zstd"))


def write_json_atomic(data: Any, path: str | Path) -> None:
    """Write `data` as indented JSON (a DVC metrics file, a vocabulary) atomically."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(path, lambda temporary: temporary.write_text(text))


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a table (optionally only `columns`); a missing or corrupt file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read Parquet: {error}") from None


def padded(
    column: pa.Array | pa.ChunkedArray, width: int | None = None, fill: int = 0
) -> np.ndarray:
    """A list column as a [N, width] array, each row left-aligned and filled with `fill`.

    `width` defaults to the longest row; a null row is all `fill`. Rows longer than `width` are
    an error (nothing is silently cut).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    offsets = column.offsets.to_numpy()  # [N + 1], into column.values
    lengths = np.diff(offsets)
    if column.null_count:
        lengths = np.where(column.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    longest = int(lengths.max(initial=0))
    width = longest if width is None else width
    if longest > width:
        raise DataError(f"a row holds {longest} values, more than the width {width}")
    values = column.values.to_numpy(zero_copy_only=False)
    out = np.full((len(column), width), fill, dtype=values.dtype)
    rows = np.repeat(np.arange(len(column)), lengths)
    starts = np.repeat(offsets[:-1], lengths)
    positions = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, positions] = values[starts + positions]
    return out
