"""Does the data loader keep up with training, and what does a worker hold in memory?

Training on "How many cylinders are behind the red cube?" gathers, for every batch, the
features of its questions' images. This script writes a feature store of the sizes given
(random float16 features, shards as `snmn extract` writes them, 10 questions per image) and
prints, in one run:

- questions/s and GB/s of every way of gathering a batch, in the training process: `page_cache`
  (FeatureStore.read_batch from the OS page cache, the default), `page_cache cold` (the same
  with the shards evicted from the page cache before the timed pass: a store larger than RAM),
  both also with 4 threads reading each batch (`train.features_read_threads`), `device` on the
  CPU (the split in the process's RAM, one index_select), `page_cache` through one DataLoader
  worker process (the batch pickled back), and, for comparison, the readers this replaced: h5py
  one image at a time (warm and cold) and numpy fancy indexing of an in-RAM copy, made float32
  as they used to be;
- the training step's questions/s at the model sizes given (the official ones by default), on
  a batch already in memory;
- with `--ray-workers 1 2`: each Ray Train worker's memory (RSS, its anonymous part, its file
  part, PSS) before the dataset, after 40 page_cache batches, and with the split on the device.

    python benchmarks/loader_speed.py                       # 1,500 images of 14x14x1024
    python benchmarks/loader_speed.py --images 5000 --ray-workers 1 2   # a 2 GB store
    python benchmarks/loader_speed.py --params params.yaml --feature-shape 10 15 256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader

from pipeline.config import Config, TrainConfig, load_config
from pipeline.data.datasets import QuestionDataset, QuestionTable, identity_collate
from pipeline.data.shards import FORMAT, ShardSpec, ShardWriter, manifest_path, write_manifest
from pipeline.runtime.inference import to_device
from pipeline.tables import atomic_path
from pipeline.training.loop import backward
from snmn.boxes import BoxGrid
from snmn.config import ModelConfig
from snmn.ema import ModelEMA
from snmn.losses import decayed_parameters
from snmn.model import SNMN

SPLIT = "train"
QUESTIONS_PER_IMAGE = 10
SHARD_SIZE = 512  # extract.shard_size's default
VOCAB, ANSWERS, LENGTH = 90, 28, 20  # CLEVR-like question words, answers, question length


# ---------------------------------------------------------------------------------------------
# A synthetic store and its questions
# ---------------------------------------------------------------------------------------------


def write_store(features_dir: Path, images: int, shape: tuple[int, int, int]) -> None:
    """`images` random float16 feature maps [H, W, C] in shards of SHARD_SIZE, as extract does."""
    folder = manifest_path(features_dir, SPLIT).parent
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for number, first in enumerate(range(0, images, SHARD_SIZE)):
        count = min(SHARD_SIZE, images - first)
        names = tuple(f"CLEVR_{SPLIT}_{index:06d}.png" for index in range(first, first + count))
        indices = tuple(range(first, first + count))
        shard = ShardSpec(SPLIT, number, indices, names, inputs_sha256="synthetic")
        with (
            atomic_path(folder / shard.file_name) as temporary,
            ShardWriter(temporary, shard, shape, "float16", {"split": SPLIT}) as writer,
        ):
            for start in range(0, count, 64):
                size = min(64, count - start)
                writer.write(rng.random((size, *shape), dtype=np.float32).astype(np.float16))
            entries.append(writer.finish(shard.inputs_sha256))
    manifest = {"format": FORMAT, "num_images": images, "complete": True, "dtype": "float16"}
    manifest |= {"feature_shape": list(shape), "pretrained": False, "backbone": "synthetic"}
    write_manifest(manifest_path(features_dir, SPLIT), manifest | {"shards": entries})


def question_table(images: int, shape: tuple[int, int, int]) -> QuestionTable:
    """QUESTIONS_PER_IMAGE questions per image, with random tokens, answers and layouts."""
    count = images * QUESTIONS_PER_IMAGE
    rng = np.random.default_rng(1)
    return QuestionTable(
        split=SPLIT,
        image_index=np.repeat(np.arange(images), QUESTIONS_PER_IMAGE),
        tokens=rng.integers(1, VOCAB, (count, LENGTH)),
        lengths=np.full(count, LENGTH),
        answers=rng.integers(0, ANSWERS, count),
        layouts=np.tile(np.array([1, 2, 3, 4, 0, 0, 0, 0, 0]), (count, 1)),
        target_cells=np.full(count, -1),
        offsets=np.full((count, 4), np.nan, dtype=np.float32),
        boxes=np.full((count, 4), np.nan, dtype=np.float32),
        question_types=[None] * count,
        families=np.full(count, -1),
        box_grid=BoxGrid(shape[0], shape[1]),
    )


# ---------------------------------------------------------------------------------------------
# Gathering rates
# ---------------------------------------------------------------------------------------------


def random_batches(table: QuestionTable, batch_size: int, count: int) -> list[list[int]]:
    rng = np.random.default_rng(2)
    return [rng.choice(len(table), batch_size, replace=False).tolist() for _ in range(count)]


def questions_per_s(gather, batches: list[list[int]], before_timing=None) -> float:
    """Questions per second of `gather(rows)` over `batches`, timed on a second pass (the first
    one warms caches and allocators); `before_timing()` runs between the two."""
    for rows in batches:
        gather(rows)
    if before_timing is not None:
        before_timing()
    start = time.perf_counter()
    for rows in batches:
        gather(rows)
    return sum(len(rows) for rows in batches) / (time.perf_counter() - start)


def evict_from_page_cache(features_dir: Path) -> None:
    """Drop the shards' pages from the OS page cache (no root needed for clean pages)."""
    for shard in manifest_path(features_dir, SPLIT).parent.glob("*.h5"):
        fd = os.open(shard, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def h5py_per_image(features_dir: Path, table: QuestionTable):
    """The reader this replaced: one h5py read per image, stacked, made float32."""
    folder = manifest_path(features_dir, SPLIT).parent
    shards = [h5py.File(path, "r")["features"] for path in sorted(folder.glob("*.h5"))]

    def gather(rows: list[int]) -> np.ndarray:
        images = table.image_index[rows]
        parts = [shards[i // SHARD_SIZE][i % SHARD_SIZE] for i in images.tolist()]
        return np.stack(parts).astype(np.float32)

    return gather


def numpy_in_ram(dataset: QuestionDataset, table: QuestionTable):
    """The in-RAM reader this replaced: numpy fancy indexing of a private copy, made float32."""
    everything = dataset.store.load_all()

    def gather(rows: list[int]) -> np.ndarray:
        return everything[table.image_index[rows]].astype(np.float32)

    return gather


def through_a_loader_process(dataset: QuestionDataset, batches: list[list[int]]) -> float:
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=identity_collate, num_workers=1)
    iterator = iter(loader)
    next(iterator)  # start-up (the worker process) is not throughput
    start = time.perf_counter()
    for _ in iterator:
        pass
    return sum(len(rows) for rows in batches[1:]) / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# The training step
# ---------------------------------------------------------------------------------------------


def model_config(params: str | None, shape: tuple[int, int, int]) -> tuple[ModelConfig, Config]:
    config = load_config(params) if params else Config()
    model = dataclasses.replace(
        config.model if params else ModelConfig(),
        feature_height=shape[0],
        feature_width=shape[1],
        feature_dim=shape[2],
        vocab_size=VOCAB,
        num_answers=ANSWERS,
        task="vqa",
    )
    return model, dataclasses.replace(config, model=model)


def step_questions_per_s(config: Config, batch: dict[str, torch.Tensor], steps: int) -> float:
    """forward + backward + clip + Adam + EMA on one batch already in memory."""
    model = SNMN(config.model)
    ema = ModelEMA(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    decayed, _ = decayed_parameters(model)
    batch = to_device(batch, torch.device("cpu"))
    backward(model, config, "vqa", batch, 0, decayed)  # warm-up
    start = time.perf_counter()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        backward(model, config, "vqa", batch, step, decayed)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 8.0)
        optimizer.step()
        ema.update(model)
    return steps * len(batch["rows"]) / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# Memory of Ray Train workers
# ---------------------------------------------------------------------------------------------


def memory_mb() -> dict[str, float]:
    """This process's Rss, its anonymous and file parts, and Pss, in MB."""
    fields = {"Rss": "rss", "Anonymous": "anon", "Pss": "pss"}
    values = {}
    with open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name in fields:
                values[fields[name]] = int(rest.split()[0]) / 1024
    values["file"] = values["rss"] - values["anon"]
    return values


def memory_worker(loop_config: dict[str, Any], worker: dict[str, Any], checkpoints: Any) -> None:
    """On every Ray Train worker: memory before the dataset, after 40 page_cache batches of
    this rank's questions, and with the split on the (CPU) device; written as JSON."""
    train = loop_config["config"]["train"]
    features_dir, out = Path(train["features_dir"]), Path(loop_config["memory_dir"])
    torch.set_num_threads(1)
    shape = tuple(json.loads(manifest_path(features_dir, SPLIT).read_text())["feature_shape"])
    images = json.loads(manifest_path(features_dir, SPLIT).read_text())["num_images"]
    table = question_table(images, shape)
    figures = {"before": memory_mb()}
    dataset = QuestionDataset(table, features_dir, "page_cache")
    for rows in random_batches(table, 64, 40 + worker["rank"])[worker["rank"] :]:
        dataset.__getitems__(rows)
    figures["page_cache"] = memory_mb()
    resident = QuestionDataset(table, features_dir, "device")
    resident.__getitems__(list(range(64)))
    figures["device"] = memory_mb()
    out.joinpath(f"rank{worker['rank']}.json").write_text(json.dumps(figures))


def ray_worker_memory(features_dir: Path, runs_dir: Path, workers: int) -> list[dict]:
    from pipeline.distributed import fit

    train = TrainConfig(features_dir=str(features_dir), runs_dir=str(runs_dir), num_workers=workers)
    memory_dir = runs_dir / f"memory-{workers}"
    memory_dir.mkdir(parents=True)
    config = Config(train=dataclasses.replace(train, batch_size=64))

    def worker_main(loop_config, worker, checkpoints):  # the memory dir travels with it
        memory_worker({**loop_config, "memory_dir": str(memory_dir)}, worker, checkpoints)

    fit(config, f"loader-memory-{workers}", {}, worker_main)
    return [json.loads((memory_dir / f"rank{rank}.json").read_text()) for rank in range(workers)]


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--feature-shape", type=int, nargs=3, default=(14, 14, 1024))
    parser.add_argument("--params", help="take the model sizes from here (default: official)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ray-workers", type=int, nargs="*", default=[])
    parser.add_argument("--work-dir", help="default: a temporary folder, removed at the end")
    args = parser.parse_args()
    shape = tuple(args.feature_shape)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        features_dir = Path(work) / "features"
        started = time.perf_counter()
        write_store(features_dir, args.images, shape)
        os.sync()  # written back: the page cache holds clean pages, as after `snmn extract`
        table = question_table(args.images, shape)
        image_bytes = int(np.prod(shape)) * 2
        print(
            f"store: {args.images:,} images of {shape} float16 = "
            f"{args.images * image_bytes / 1e9:.2f} GB, {len(table):,} questions "
            f"(written in {time.perf_counter() - started:.0f} s); batch {args.batch_size}, "
            "one thread"
        )
        page_cache = QuestionDataset(table, features_dir, "page_cache")
        threaded = QuestionDataset(table, features_dir, read_threads=4)
        resident = QuestionDataset(table, features_dir, "device")
        batches = random_batches(table, args.batch_size, args.batches)
        rates = {
            "page_cache": questions_per_s(page_cache.__getitems__, batches),
            "page_cache cold (from disk)": questions_per_s(
                page_cache.__getitems__, batches, lambda: evict_from_page_cache(features_dir)
            ),
            "page_cache, 4 read threads": questions_per_s(threaded.__getitems__, batches),
            "page_cache, 4 read threads, cold": questions_per_s(
                threaded.__getitems__, batches, lambda: evict_from_page_cache(features_dir)
            ),
            "device (CPU RAM)": questions_per_s(resident.__getitems__, batches),
            "page_cache via 1 loader process": through_a_loader_process(page_cache, batches),
            "before: h5py per image, float32": questions_per_s(
                h5py_per_image(features_dir, table), batches
            ),
            "before: h5py per image, float32, cold": questions_per_s(
                h5py_per_image(features_dir, table),
                batches,
                lambda: evict_from_page_cache(features_dir),
            ),
            "before: numpy in RAM, float32": questions_per_s(
                numpy_in_ram(page_cache, table), batches
            ),
        }
        model, config = model_config(args.params, shape)
        batch = page_cache.__getitems__(batches[0])
        step = step_questions_per_s(config, batch, args.steps)
        print(
            f"training step ({'params' if args.params else 'official'} model sizes): "
            f"{step:,.0f} questions/s"
        )
        for name, rate in rates.items():
            print(
                f"  {name:34s} {rate:9,.0f} questions/s {rate * image_bytes / 1e9:6.2f} GB/s "
                f"= {rate / step:7.1f} x the step"
            )
        for workers in args.ray_workers:
            figures = ray_worker_memory(features_dir, Path(work) / "runs", workers)
            for rank, memory in enumerate(figures):
                print(
                    f"  {workers} Ray Train worker(s), rank {rank}: "
                    + " | ".join(
                        f"{when} RSS {m['rss']:,.0f} MB (anon {m['anon']:,.0f}, file "
                        f"{m['file']:,.0f}) PSS {m['pss']:,.0f}"
                        for when, m in memory.items()
                    )
                )
            for when in ("page_cache", "device"):
                total = sum(memory[when]["pss"] for memory in figures)
                print(f"  {workers} worker(s), {when}: PSS of all workers {total:,.0f} MB")


if __name__ == "__main__":
    main()
