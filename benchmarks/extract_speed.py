"""How close does feature extraction come to its slower half: decoding or the network?

Before the model can answer "What color is the cylinder left of the cube?", every CLEVR image goes
through PNG decoding + resize (worker processes) and the truncated ResNet. Extraction overlaps
the two, so its rate should approach the slower of them. In one run this script measures
  (a) decode + resize alone, with the same number of worker processes,
  (b) the network's forward alone, on uint8 batches already in memory,
  (c) the full extraction (decode ‖ forward → float16 → HDF5 shards),
and prints the three rates and c / min(a, b) (target >= 0.9) for each of --repeats runs. Also
c / shared, where shared = 1 / (1/a + 1/b) is what a CPU-bound machine reaches when decoding and
the forward pass must share the same cores, and the CPU milliseconds each phase spends per image
(robust to other users of the machine: c ≈ a + b means the pipeline adds no work of its own).
Weights: random with BatchNorm calibrated once, saved to a file, so (c) does no calibration.

Images: copies of the real 480×320 RGBA CLEVR sample (or random PNGs if it is missing).
    python benchmarks/extract_speed.py --images 64 --backbone resnet18 --size 224
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.config import ExtractConfig
from pipeline.devices import resolve_device
from pipeline.vision.backbone import build_backbone, calibrate_batchnorm
from pipeline.vision.features import Extractor, extract_features, set_cpu_threads
from pipeline.vision.images import DecodedImages, decoding_loader, image_name, list_split_images

REAL_SAMPLE = Path("/work/shared/real_clevr_sample/images/test")


def make_images(root: Path, count: int) -> None:
    """`count` CLEVR-named PNGs: the real sample repeated, or random 480×320 RGBA images."""
    folder = root / "images" / "train"
    folder.mkdir(parents=True)
    sources = sorted(REAL_SAMPLE.glob("*.png")) if REAL_SAMPLE.is_dir() else []
    rng = np.random.default_rng(0)
    for index in range(count):
        target = folder / image_name("train", index)
        if sources:
            shutil.copy(sources[index % len(sources)], target)
        else:
            Image.fromarray(rng.integers(0, 256, (320, 480, 4), dtype=np.uint8)).save(target)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def decoded(config: ExtractConfig) -> DecodedImages:
    images = list_split_images(config.images_dir, "train")  # image index → path
    paths = [str(path) for path in images.values()]
    return DecodedImages(paths, list(images), config.input_height, config.input_width)


def save_calibrated_weights(config: ExtractConfig, path: Path) -> None:
    """Random weights with calibrated BatchNorm, as a file: (b) and (c) then skip calibration."""
    backbone, _ = build_backbone(config.backbone, "random", config.seed)
    dataset = decoded(config)
    first = torch.from_numpy(np.stack([dataset[i] for i in range(config.batch_size)]))
    calibrate_batchnorm(backbone, [first])
    torch.save(backbone.trunk.state_dict(), path)


def measure_decode(config: ExtractConfig) -> tuple[float, float]:
    """(a) images/s and CPU ms/image of decode + resize alone, through the pipeline's loader."""
    dataset = decoded(config)
    size = config.batch_size
    batches = [list(range(i, min(i + size, len(dataset)))) for i in range(0, len(dataset), size)]
    on_cpu = resolve_device(config.device, "extract.device").type == "cpu"
    loader = decoding_loader(dataset, batches, config.decode_workers, network_on_cpu=on_cpu)
    start, cpu = time.perf_counter(), cpu_seconds()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start), (cpu_seconds() - cpu) / count * 1e3


def measure_forward(config: ExtractConfig) -> tuple[float, float]:
    """(b) images/s and CPU ms/image of the network alone (normalise, forward, float16 check)."""
    dataset = decoded(config)
    images = torch.from_numpy(np.stack([dataset[i] for i in range(len(dataset))]))  # [N, H, W, 3]
    device = resolve_device(config.device, "extract.device")
    set_cpu_threads(device)
    backbone, _ = build_backbone(config.backbone, config.weights, config.seed)
    extractor = Extractor(backbone, device, config.dtype, config.batch_size)
    extractor(images[: config.batch_size], "warm-up")
    start, cpu = time.perf_counter(), cpu_seconds()
    for first in range(0, len(images), config.batch_size):
        extractor(images[first : first + config.batch_size], "benchmark")
    return len(images) / (time.perf_counter() - start), (cpu_seconds() - cpu) / len(images) * 1e3


def measure_extraction(config: ExtractConfig) -> tuple[float, float]:
    """(c) images/s and CPU ms/image of the whole extraction (CPU includes the ~1 s setup)."""
    cpu = cpu_seconds()
    summary = extract_features(config)
    cpu_ms = (cpu_seconds() - cpu) / summary.images * 1e3
    return summary.images / summary.seconds, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224, help="input height = width")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="runs, one row each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="extract-speed-") as temp:
        root = Path(temp)
        make_images(root, args.images)
        config = ExtractConfig(
            images_dir=str(root / "images"),
            output_dir=str(root / "features"),
            splits=("train",),
            backbone=args.backbone,
            weights=str(root / "weights.pt"),
            input_height=args.size,
            input_width=args.size,
            shard_size=args.shard_size,
            batch_size=args.batch_size,
            decode_workers=args.decode_workers,
            device=args.device,
        )
        save_calibrated_weights(config, root / "weights.pt")
        rows = []
        for repeat in range(args.repeats):  # one row per run: the machine may be shared
            fresh = dataclasses.replace(config, output_dir=str(root / f"features{repeat}"))
            rows.append(
                (measure_decode(config), measure_forward(config), measure_extraction(fresh))
            )
    print(
        f"images {args.images}, {args.backbone} at {args.size}x{args.size}, batch "
        f"{args.batch_size}, {args.decode_workers} decode workers, device "
        f"{resolve_device(args.device, '--device')}, torch threads {torch.get_num_threads()}"
    )
    print(
        "run  images/s: (a) decode  (b) forward  (c) full  c/min(a,b)  c/shared | CPU ms/img a b c"
    )
    ratios = []
    for run, ((decode, cpu_a), (forward, cpu_b), (full, cpu_c)) in enumerate(rows):
        shared = 1 / (1 / decode + 1 / forward)  # a and b each used every core: c must share them
        ratios.append(full / min(decode, forward))
        print(
            f"{run:3d}  {decode:19.1f}  {forward:11.1f}  {full:8.1f}  {ratios[-1]:10.2f}  "
            f"{full / shared:8.2f} | {cpu_a:5.0f} {cpu_b:5.0f} {cpu_c:5.0f}"
        )
    print(f"median c / min(a, b): {sorted(ratios)[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
