"""Image features on disk: HDF5 shards, one manifest per split, and a lazy reader.

When training answers "How many cylinders are behind the red cube?" for image 4217 of train, the
data loader asks `FeatureStore(".../train/manifest.json")` for that image's [H, W, C]
features. They live in ``train/train_00008.h5`` (the 9th run of shard_size 512 images, here
4096..4607): dataset `features` [n, H, W, C] float16, channels last, one image per chunk,
uncompressed, and dataset `image_index` [n]. The reader uses that layout: an image is one
`os.preadv` of its chunk's bytes into the batch (benchmarks/loader_speed.py times it against
h5py's reads).

A split may be any subset of CLEVR (a partial download, a filtered split): its images need not
run 0..N-1. Each manifest entry lists its shard's `image_indices` (ascending; the shards in
order, so the whole split's indices ascend too), and the store maps an image index to its row
(its position among them) with one `np.searchsorted`. `FeatureStore.image_indices` are the
images that have features; asking for any other is a DataError naming the manifest and the
index. Manifests of format /2 (rows were image indices) are refused with a line that says to
rerun `snmn extract`.

A shard is written under a temporary name in its folder and renamed when complete
(`pipeline.tables.atomic_path`, like every file of the pipeline), then entered in the manifest
(file, image indices, count, size, sha256, and `inputs_sha256` over the bytes of its images). A
rerun keeps a shard only if the manifest lists it with the same settings, inputs and checksum, so
a killed run leaves no half shard and loses at most the shard in progress, and an image edited in
place (even at the same size) has its shard extracted again.
`verify_manifest` re-checks every checksum and, given the planned shards, every inputs digest.

`FeatureStore` checks each shard's size and sha256 against the manifest the first time it opens
it (once per shard per process, about 0.15 s for a 200 MB shard of 512 train images; never
per read), so training or evaluating on a damaged shard stops with one line naming it. A copy of
the store sent to a DataLoader worker (forked or pickled) remembers which shards were already
checked and does not hash them again.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import DataError
from pipeline.tables import TEMPORARY_SUFFIX, write_json_atomic

MANIFEST_NAME = "manifest.json"
IOV_MAX = 1024  # buffers one os.preadv may fill (Linux)
# /3: each shard lists its image indices (a split may have gaps); /2: inputs_sha256 covers the
# images' bytes, rows are image indices 0..N-1; /1: inputs digests of names and sizes
FORMAT = "snmn-features/3"
REPAIR_HINT = (
    "; run `snmn extract --verify` to list every damaged shard, then `snmn extract` to rewrite them"
)


@dataclass(frozen=True)
class ShardSpec:
    """Images `image_indices` (ascending) of a split at `paths`, bound for one file, and the
    digest of their bytes when they were planned (`inputs_sha256`)."""

    split: str
    number: int
    image_indices: tuple[int, ...]
    paths: tuple[str, ...]
    inputs_sha256: str

    @property
    def count(self) -> int:
        return len(self.paths)

    @property
    def first_index(self) -> int:
        return self.image_indices[0]

    @property
    def last_index(self) -> int:
        return self.image_indices[-1]

    @property
    def file_name(self) -> str:
        return f"{self.split}_{self.number:05d}.h5"


def plan_shards(split: str, images: dict[int, Path], shard_size: int) -> list[ShardSpec]:
    """Cut a split's images (image index → path) into shards of shard_size consecutive images
    in index order, each with the digest of its images' bytes as they are now, before any of
    them is decoded."""
    indices = sorted(images)
    shards = []
    for number, start in enumerate(range(0, len(indices), shard_size)):
        chunk = tuple(indices[start : start + shard_size])
        paths = tuple(str(images[index]) for index in chunk)
        shards.append(ShardSpec(split, number, chunk, paths, inputs_sha256(paths)))
    return shards


def inputs_sha256(paths: tuple[str, ...]) -> str:
    """sha256 over each image's file name and the sha256 of its bytes: an image renamed or
    edited in place (even at the same size) changes it, so its shard is extracted again.

    Taken when the shards are planned: an image changed while the run decodes it leaves the
    old digest behind, and the next run redoes its shard. Hashing CLEVR's PNGs (~200 KB each)
    costs little next to decoding them."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            image_sha256 = file_sha256(path)
        except OSError as error:
            raise DataError(f"{path}: cannot read image ({error.strerror or error})") from None
        digest.update(f"{Path(path).name}\t{image_sha256}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ShardWriter:
    """Writes one shard's HDF5 file at `path`, batch by batch; `finish()` closes it and returns
    its manifest entry. `path` is the temporary name of `atomic_path`, which renames the file
    when the block ends and deletes it if the block raises (an error, a KeyboardInterrupt), so
    nothing half-written remains (a SIGKILL leaves it; the rerun removes it)::

        with atomic_path(folder / shard.file_name) as temporary:
            with ShardWriter(temporary, shard, feature_shape, "float16", attrs) as writer:
                writer.write(features)  # [b, H, W, C], until all shard.count images are in
                entry = writer.finish(shard.inputs_sha256)
    """

    def __init__(
        self,
        path: Path,
        shard: ShardSpec,
        feature_shape: tuple[int, int, int],
        dtype: str,
        attrs: dict[str, Any],
    ) -> None:
        self.shard = shard
        self.path = path
        self.written = 0
        self.file = h5py.File(path, "w")
        self.features = self.file.create_dataset(
            "features",
            shape=(shard.count, *feature_shape),
            dtype=dtype,
            chunks=(1, *feature_shape),
        )
        self.file.create_dataset("image_index", data=np.array(shard.image_indices, np.int64))
        for key, value in attrs.items():
            self.file.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        self.finished = False

    def __enter__(self) -> ShardWriter:
        return self

    def write(self, features: np.ndarray) -> None:
        """Append features [b, H, W, C] of the next b images."""
        self.features[self.written : self.written + len(features)] = features
        self.written += len(features)

    def finish(self, inputs_sha256: str) -> dict[str, Any]:
        """Close the complete file; its manifest entry (DataError if images are missing)."""
        if self.written != self.shard.count:
            final_path = self.path.with_name(self.shard.file_name)
            raise DataError(f"{final_path}: wrote {self.written} of {self.shard.count} images")
        self.file.close()
        self.finished = True
        return {
            "file": self.shard.file_name,
            "number": self.shard.number,
            "first_index": self.shard.first_index,
            "last_index": self.shard.last_index,
            "count": self.shard.count,
            "image_indices": list(self.shard.image_indices),
            "bytes": self.path.stat().st_size,
            "sha256": file_sha256(self.path),
            "inputs_sha256": inputs_sha256,
        }

    def __exit__(self, *exc_info: Any) -> None:
        if not self.finished:
            self.file.close()


# ---------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------


def manifest_path(output_dir: str | Path, split: str) -> Path:
    return Path(output_dir) / split / MANIFEST_NAME


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None if there is none; DataError if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: manifest is not valid JSON ({error})") from None


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Write a split's manifest atomically (indented JSON)."""
    write_json_atomic(manifest, path)


def reusable_entries(
    manifest: dict[str, Any] | None, folder: Path, settings: dict[str, Any], shards: list[ShardSpec]
) -> dict[int, dict[str, Any]]:
    """Shard number → manifest entry of every finished shard that can be kept as it is: same
    settings, same inputs, file present with the recorded size and sha256."""
    if manifest is None or any(manifest.get(key) != value for key, value in settings.items()):
        return {}
    wanted = {shard.number: shard for shard in shards}
    kept = {}
    for entry in manifest.get("shards", []):
        shard = wanted.get(entry.get("number"))
        path = folder / str(entry.get("file"))
        if (
            shard is not None
            and entry.get("file") == shard.file_name
            and entry.get("image_indices") == list(shard.image_indices)
            and entry.get("count") == shard.count
            and path.is_file()
            and path.stat().st_size == entry.get("bytes")
            and entry.get("inputs_sha256") == shard.inputs_sha256
            and file_sha256(path) == entry.get("sha256")
        ):
            kept[shard.number] = entry
    return kept


def remove_leftovers(folder: Path, split: str, keep: set[str]) -> list[str]:
    """Delete temporary files and shard files of this split that the new manifest won't list."""
    removed = []
    for path in folder.iterdir():
        is_temp = path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)
        is_stale_shard = path.name.startswith(f"{split}_") and path.suffix == ".h5"
        if is_temp or (is_stale_shard and path.name not in keep):
            path.unlink()
            removed.append(path.name)
    return removed


def verify_manifest(path: str | Path, shards: list[ShardSpec] | None = None) -> list[str]:
    """Every problem of a split's features, one line each (empty list: all shards verified).

    With `shards`, the split's images as planned now, each shard's inputs digest is checked too:
    a shard extracted from images that have changed since is reported."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        return [f"{path}: manifest not found (run `snmn extract` first)"]
    try:
        problems = _shard_problems(path, manifest)
        if shards is not None:
            problems += _input_problems(path, manifest, shards)
        return problems
    except (KeyError, TypeError) as error:
        return [f"{path}: malformed manifest ({type(error).__name__}: {error})"]


def shard_file_problem(shard_path: Path, entry: dict[str, Any]) -> str | None:
    """What is wrong with one shard file against its manifest entry (missing, size, sha256)."""
    if not shard_path.is_file():
        return f"{shard_path}: missing"
    size = shard_path.stat().st_size
    if size != entry["bytes"]:
        return f"{shard_path}: {size} bytes, manifest says {entry['bytes']}"
    actual = file_sha256(shard_path)
    if actual != entry["sha256"]:
        return (
            f"{shard_path}: sha256 {actual[:12]}… differs from the manifest's "
            f"{entry['sha256'][:12]}…"
        )
    return None


def _shard_problems(path: Path, manifest: dict[str, Any]) -> list[str]:
    problems = []
    covered = sum(entry["count"] for entry in manifest["shards"])
    if not manifest.get("complete") or covered != manifest["num_images"]:
        problems.append(
            f"{path}: incomplete: shards cover {covered} of {manifest['num_images']} images"
        )
    previous = -1  # the last image index of the shards before
    for entry in sorted(manifest["shards"], key=lambda e: e["first_index"]):
        shard_path = path.parent / entry["file"]
        if (problem := _indices_problem(entry, previous)) is not None:
            problems.append(f"{shard_path}: {problem}")
        previous = max(entry.get("image_indices") or [previous])
        if (problem := shard_file_problem(shard_path, entry)) is not None:
            problems.append(problem)
    return problems


def _indices_problem(entry: dict[str, Any], previous: int) -> str | None:
    """What is wrong with a manifest entry's image_indices (None: `count` ascending indices,
    all above `previous`, the last index of the shards before it)."""
    indices = entry.get("image_indices")
    if not isinstance(indices, list) or len(indices) != entry["count"]:
        return f"the manifest lists no image_indices for its {entry['count']} images"
    steps = np.diff(np.array([previous, *indices], dtype=np.int64))
    if (steps <= 0).any():
        return "image_indices not ascending, or shared with another shard"
    return None


def _input_problems(path: Path, manifest: dict[str, Any], shards: list[ShardSpec]) -> list[str]:
    """Shards whose images are no longer those they were extracted from."""
    if manifest.get("format") != FORMAT:  # its inputs digests are of another kind
        return [
            f"{path}: format {manifest.get('format')!r}, not {FORMAT!r}: its inputs digests do "
            "not cover the images' bytes; rerun `snmn extract`"
        ]
    problems = []
    images = sum(shard.count for shard in shards)
    if images != manifest["num_images"]:
        problems.append(
            f"{path}: lists {manifest['num_images']} images, the image folder now holds "
            f"{images}; rerun `snmn extract`"
        )
    planned = {shard.number: shard for shard in shards}
    for entry in sorted(manifest["shards"], key=lambda e: e["first_index"]):
        shard = planned.get(entry["number"])
        same_images = shard is not None and entry.get("image_indices") == list(shard.image_indices)
        if not same_images or entry.get("inputs_sha256") != shard.inputs_sha256:
            last = entry["last_index"]
            problems.append(
                f"{path.parent / entry['file']}: images {entry['first_index']}..{last} changed "
                "since it was extracted (inputs sha256 differs); rerun `snmn extract`"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


@dataclass
class ShardReader:
    """One open shard: a file descriptor and, per image, the byte offset of its chunk."""

    fd: int
    offsets: np.ndarray  # [count] int64: the shard's i-th image is `image_bytes` bytes from here


class FeatureStore:
    """image index → features [H, W, C] of one split, read from its shards.

    The split's images are `image_indices` [N] (ascending, gaps allowed: a subset of CLEVR);
    image image_indices[r] is row r of the store, the r-th image of the shards in order.

    Every image is one uncompressed HDF5 chunk (ShardWriter), so reading it is one `os.preadv`
    of its bytes at the chunk's offset, straight into the caller's array: `read_batch` sorts a
    batch's images by position in their file and reads adjacent ones in one call. The OS page
    cache keeps each shard once per machine, shared by every process that reads it (the N
    training workers of a node hold one copy, and none of it counts in their resident memory);
    a store larger than RAM is read from disk the same way.

    Shards are opened lazily, on first use in each process: a store created before a
    DataLoader forks its workers (or pickled into them) opens its own files in every worker.
    Opening a shard first checks its size and sha256 against the manifest, once per shard: the
    set of checked shards travels with the store into forked or unpickled copies. The chunk
    offsets come from the shard's HDF5 chunk index (h5py), read once per shard and process.
    """

    def __init__(self, manifest_path: str | Path) -> None:
        self.manifest_path = Path(manifest_path)
        manifest = read_manifest(self.manifest_path)
        if manifest is None:
            raise DataError(f"{self.manifest_path}: manifest not found (run `snmn extract`)")
        if manifest.get("format") != FORMAT:
            raise DataError(
                f"{self.manifest_path}: format {manifest.get('format')!r}, this version reads "
                f"{FORMAT!r} (shards list their image indices); rerun `snmn extract`"
            )
        if not manifest.get("complete"):
            raise DataError(f"{self.manifest_path}: features incomplete (rerun `snmn extract`)")
        self.manifest = manifest
        try:
            self.entries = sorted(manifest["shards"], key=lambda entry: entry["first_index"])
            counts = [entry["count"] for entry in self.entries]
            self.starts = np.cumsum([0, *counts[:-1]], dtype=np.int64)  # [shards] first rows
            self.image_indices = np.array(  # [N] ascending: row → image index
                [index for entry in self.entries for index in entry["image_indices"]], np.int64
            )
            self.shape = tuple(manifest["feature_shape"])  # (H, W, C)
            self.dtype = np.dtype(manifest["dtype"])
            self.pretrained = bool(manifest["pretrained"])
        except (KeyError, TypeError) as error:
            raise DataError(
                f"{self.manifest_path}: malformed manifest ({type(error).__name__}: {error}); "
                "rerun `snmn extract`"
            ) from None
        if len(self.image_indices) != sum(counts) or (np.diff(self.image_indices) <= 0).any():
            raise DataError(
                f"{self.manifest_path}: malformed manifest (shards' image_indices do not ascend "
                "or do not match their counts); rerun `snmn extract`"
            )
        self.image_bytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._readers: dict[int, ShardReader] = {}  # shard position in self.entries → reader
        self._checked: set[str] = set()  # shard files whose size and sha256 matched
        self._pools: dict[int, ThreadPoolExecutor] = {}  # read_batch's threads, by their number
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.image_indices)

    def rows_of(self, images: np.ndarray) -> np.ndarray:
        """Rows [B] of image indices `images` [B]; DataError naming the first image that has no
        features in this store."""
        images = np.asarray(images, dtype=np.int64)
        rows = np.searchsorted(self.image_indices, images)  # [B]
        found = rows < len(self.image_indices)
        found[found] = self.image_indices[rows[found]] == images[found]
        if not found.all():
            missing = int(images[np.argmin(found)])
            raise DataError(
                f"{self.manifest_path}: no features for image index {missing} (the store holds "
                f"{len(self)} images; `image_indices` lists them)"
            )
        return rows

    def __getitem__(self, image_index: int) -> np.ndarray:
        """Features [H, W, C] of one image."""
        features = np.empty((1, *self.shape), dtype=self.dtype)
        self.read_batch(np.array([image_index]), features)
        return features[0]

    def read_batch(self, images: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
        """Features of `images` [B] (image indices, repeats allowed) into `out` [B, H, W, C]
        (C-contiguous, the store's dtype), row i for images[i]; with `threads` > 1 the batch
        is cut into that many parts read at once (reads from disk overlap; preadv releases the
        GIL). DataError if one of the images has no features here."""
        self.read_rows(self.rows_of(images), out, threads)

    def read_rows(self, rows: np.ndarray, out: np.ndarray, threads: int = 1) -> None:
        """read_batch by the store's rows [B] (0..N-1) instead of image indices."""
        rows = np.asarray(rows, dtype=np.int64)
        if out.shape != (len(rows), *self.shape) or out.dtype != self.dtype:
            raise ValueError(f"out must be {(len(rows), *self.shape)} {self.dtype}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not len(rows):
            return
        if rows.min() < 0 or rows.max() >= len(self):
            bad = rows.min() if rows.min() < 0 else rows.max()
            raise IndexError(f"{self.manifest_path}: row {bad} out of range 0..{len(self) - 1}")
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for shard in np.unique(shard_of).tolist():
            self._reader(shard)  # opened here, in this thread: the parts only read
        parts = [part for part in np.array_split(np.arange(len(rows)), threads) if len(part)]
        if len(parts) == 1:
            self._read_open_rows(rows, out)
            return

        def read_part(part: np.ndarray) -> None:  # consecutive positions of the batch
            self._read_open_rows(rows[part], out[part[0] : part[-1] + 1])

        list(self._thread_pool(len(parts)).map(read_part, parts))

    def _read_open_rows(self, rows: np.ndarray, out: np.ndarray) -> None:
        """read_rows' work for rows whose shards are open."""
        unique, first_position, position_of = np.unique(
            rows, return_index=True, return_inverse=True
        )
        buffers = out.reshape(len(rows), self.image_bytes // self.dtype.itemsize).view(np.uint8)
        shard_of = np.searchsorted(self.starts, unique, side="right") - 1
        run: list[memoryview] = []  # buffers of adjacent chunks, read by one preadv
        run_shard, run_start, run_end = -1, 0, 0  # the run's shard and byte range in its file
        together = zip(unique.tolist(), shard_of.tolist(), first_position.tolist(), strict=True)
        for row, shard, position in together:
            offset = int(self._readers[shard].offsets[row - self.starts[shard]])
            if run and (shard != run_shard or offset != run_end or len(run) == IOV_MAX):
                self._read_run(run_shard, run_start, run)
                run = []
            if not run:
                run_shard, run_start, run_end = shard, offset, offset
            run.append(memoryview(buffers[position]))
            run_end += self.image_bytes
        self._read_run(run_shard, run_start, run)
        repeats = np.flatnonzero(first_position[position_of] != np.arange(len(rows)))
        out[repeats] = out[first_position[position_of[repeats]]]  # asked for twice: read once

    def load_all(self) -> np.ndarray:
        """The whole split in RAM, by row: [N, H, W, C] (e.g. 15k val images at 14×14×1024 ≈
        6 GB); row r holds image image_indices[r]."""
        features = np.empty((len(self), *self.shape), dtype=self.dtype)
        self.read_rows(np.arange(len(self)), features)
        return features

    def check_shards(self) -> None:
        """Open (and so check) every shard now: before DataLoader workers start, a damaged shard
        then fails here in one line rather than in a worker, and the workers hash nothing."""
        for shard in range(len(self.entries)):
            self._reader(shard)

    def close(self) -> None:
        for reader in self._readers.values():
            os.close(reader.fd)
        for pool in self._pools.values():
            pool.shutdown()
        self._readers, self._pools = {}, {}

    def _read_run(self, shard: int, offset: int, rows: list[memoryview]) -> None:
        entry = self.entries[shard]
        try:
            got = os.preadv(self._readers[shard].fd, rows, offset)
        except OSError as error:
            raise self._damaged(entry, "cannot read its features", error) from None
        if got != len(rows) * self.image_bytes:
            raise self._damaged(entry, "cannot read its features", OSError("short read"))

    def _thread_pool(self, threads: int) -> ThreadPoolExecutor:
        pool = self._pools.get(threads)
        if pool is None:
            pool = self._pools[threads] = ThreadPoolExecutor(threads, "read_batch")
        return pool

    def _reader(self, shard: int) -> ShardReader:
        if self._pid != os.getpid():  # forked: the parent's files and threads are not ours
            self._readers, self._pools, self._pid = {}, {}, os.getpid()
        reader = self._readers.get(shard)
        if reader is None:
            reader = self._open(self.entries[shard])
            self._readers[shard] = reader
        return reader

    def _open(self, entry: dict[str, Any]) -> ShardReader:
        """The shard's file and chunk offsets, its size and sha256 checked first (once per
        shard), its HDF5 layout checked against what ShardWriter writes."""
        path = self.manifest_path.parent / entry["file"]
        if entry["file"] not in self._checked:
            problem = shard_file_problem(path, entry)
            if problem is not None:
                raise DataError(f"{problem}{REPAIR_HINT}")
            self._checked.add(entry["file"])
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise self._damaged(entry, "not a readable HDF5 file", error) from None
        with handle:
            try:
                features = handle["features"]
                shape = features.shape
            except (OSError, KeyError) as error:
                raise self._damaged(entry, "no readable `features` dataset", error) from None
            if shape != (entry["count"], *self.shape):
                raise DataError(
                    f"{path}: features of shape {shape}, expected "
                    f"{(entry['count'], *self.shape)} from {self.manifest_path}{REPAIR_HINT}"
                )
            offsets = self._chunk_offsets(path, features)
        return ShardReader(os.open(path, os.O_RDONLY), offsets)

    def _chunk_offsets(self, path: Path, features: h5py.Dataset) -> np.ndarray:
        """[count] byte offset of each image's chunk; DataError unless every image is one
        whole, unfiltered chunk of the store's dtype (how ShardWriter writes them)."""
        count = features.shape[0]
        offsets = np.full(count, -1, dtype=np.int64)
        layout_ok = (
            features.chunks == (1, *self.shape)
            and features.dtype == self.dtype
            and features.id.get_num_chunks() == count
        )
        if layout_ok:

            def record(chunk: Any) -> None:
                nonlocal layout_ok
                if chunk.filter_mask or chunk.size != self.image_bytes:
                    layout_ok = False
                else:
                    offsets[chunk.chunk_offset[0]] = chunk.byte_offset

            features.id.chunk_iter(record)
        if not layout_ok or (offsets < 0).any():
            raise DataError(
                f"{path}: its features are not stored one uncompressed image per chunk, as "
                f"`snmn extract` writes them{REPAIR_HINT}"
            )
        return offsets

    def _damaged(self, entry: dict[str, Any], what: str, error: Exception) -> DataError:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        path = self.manifest_path.parent / entry["file"]
        return DataError(f"{path}: {what} ({reason}){REPAIR_HINT}")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": {}, "_pools": {}}
