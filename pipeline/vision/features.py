"""The `extract` stage: every CLEVR image → ResNet C4 features in resumable HDF5 shards.

Before the SNMN can answer "Are there more cubes than spheres?" about image 42 of val, each image is
encoded once (every image present: a split may be any subset of CLEVR, its indices with gaps, and
the manifest lists which indices have features; the stages that read them skip the rest):
decoded and resized in worker processes (pipeline/vision/images.py) while the truncated ResNet
(pipeline/vision/backbone.py) runs on the previous batch, and written shard by shard
(pipeline/data/shards.py). A rerun skips the shards already finished, so a killed run loses at
most the shard in progress; a shard whose images changed since (even at the same size) is redone. A
run holds the writer lock of output_dir throughout (pipeline/locks.py): a second `snmn extract` into
the same folder stops at once with one line instead of rewriting the first one's manifest.

On a GPU the forward runs in bf16 autocast with channels-last tensors; an out-of-memory error
halves the forward batch and goes on. With num_workers > 1 or a ray_address, shards are spread
over Ray actors (one GPU each, the model loaded once per actor); otherwise everything runs in
this process, no cluster. `random` weights get BatchNorm statistics from the first images of the
first split (saved beside the features) and a loud NOT PRETRAINED mark in the logs and manifests;
features beyond float16's range are an error, never inf.
Shapes: B batch, H×W input, h×w feature grid, C channels.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import ExtractConfig, from_dict, to_dict
from pipeline.data.shards import (
    FORMAT,
    ShardSpec,
    ShardWriter,
    inputs_sha256,
    manifest_path,
    plan_shards,
    read_manifest,
    remove_leftovers,
    reusable_entries,
    verify_manifest,
    write_manifest,
)
from pipeline.devices import resolve_device
from pipeline.distributed import run_on_actors
from pipeline.errors import ConfigError, DataError
from pipeline.locks import writer_lock
from pipeline.progress import Progress
from pipeline.tables import atomic_path, write_atomic
from pipeline.vision.backbone import (
    CHANNELS,
    ConvFourBackbone,
    WeightsInfo,
    build_backbone,
    calibrate_batchnorm,
    grid_size,
    state_digest,
)
from pipeline.vision.images import DecodedImages, decoding_loader, list_split_images, load_image

log = logging.getLogger("snmn.extract")
FLOAT16_MAX = 65504.0
CALIBRATION_FILE = "backbone_random_calibrated.pt"
NOT_PRETRAINED = (
    "FEATURES ARE NOT PRETRAINED: extract.weights is 'random' (BatchNorm calibrated on the data); "
    "answers will be far below published results. Use 'imagenet' or a state_dict file instead."
)


@dataclass(frozen=True)
class ExtractSummary:
    images: int  # extracted by this run
    reused: int  # in shards kept from an earlier run
    seconds: float  # extracting them (decode ‖ forward → shards)
    setup_seconds: float  # listing images, building the backbone, calibration, planning
    bytes_written: int

    def line(self) -> str:
        rate = self.images / max(self.seconds, 1e-9)
        return (
            f"extract: {self.images} images in {self.seconds:.1f} s ({rate:.1f} images/s; setup "
            f"{self.setup_seconds:.1f} s), {self.bytes_written / 1e9:.3f} GB written, "
            f"{self.reused} images reused"
        )


@dataclass
class SplitPlan:
    """One split: where its shards go, its manifest as it grows, the shards still to extract."""

    folder: Path
    manifest: dict[str, Any]
    todo: list[ShardSpec] = field(default_factory=list)
    bytes_written: int = 0

    def record(self, entry: dict[str, Any]) -> None:
        """A shard finished: list it and rewrite the manifest (atomically)."""
        self.bytes_written += entry["bytes"]
        shards = [e for e in self.manifest["shards"] if e["number"] != entry["number"]] + [entry]
        self.manifest["shards"] = sorted(shards, key=lambda e: e["number"])
        covered = sum(e["count"] for e in self.manifest["shards"])
        self.manifest["complete"] = covered == self.manifest["num_images"]
        write_manifest(self.folder / "manifest.json", self.manifest)


def extract_features(config: ExtractConfig) -> ExtractSummary:
    """Extract every split of `config` that is not already on disk; returns what was done."""
    started = time.perf_counter()
    images = {split: list_split_images(config.images_dir, split) for split in config.splits}
    folders = _writable_folders(config)
    with writer_lock(config.output_dir):  # held until every manifest is final
        device = resolve_device(config.device, "extract.device")
        set_cpu_threads(device)
        backbone, info = build_backbone(config.backbone, config.weights, config.seed)
        if not info.pretrained:
            info = _calibrate(backbone, info, config, images[config.splits[0]], device)
            for line in ("=" * 72, NOT_PRETRAINED, "=" * 72):
                log.warning(line)
        digest = state_digest(backbone)
        plans = [
            _plan_split(config, split, images[split], folders[split], info, digest)
            for split in config.splits
        ]
        todo = sum(shard.count for plan in plans for shard in plan.todo)
        progress = Progress(todo, "images", "extract")
        reused = sum(len(split_images) for split_images in images.values()) - progress.total
        if config.num_workers > 1 or config.ray_address:
            _run_on_ray(config, backbone, plans, progress)
        else:
            extractor = Extractor(backbone, device, config.dtype, config.batch_size)
            for plan in plans:
                for entry in extract_shards(extractor, plan.todo, plan.folder, config, progress):
                    plan.record(entry)
        written = sum(plan.bytes_written for plan in plans)
        setup = time.perf_counter() - started - progress.elapsed()
        summary = ExtractSummary(progress.done, reused, progress.elapsed(), setup, written)
        log.info(summary.line())
        return summary


def verify_features(config: ExtractConfig) -> int:
    """Check every shard of every split against its manifest, and against the images it was
    extracted from (their sha256 now); DataError listing the problems."""
    problems, shards = [], 0
    for split in config.splits:
        path = manifest_path(config.output_dir, split)
        manifest = read_manifest(path) or {}
        paths = {i: p.absolute() for i, p in list_split_images(config.images_dir, split).items()}
        planned = plan_shards(split, paths, manifest.get("shard_size", config.shard_size))
        problems += verify_manifest(path, planned)
        shards += len(manifest.get("shards", []))
    for problem in problems:
        log.error(problem)
    if problems:
        raise DataError(f"{len(problems)} feature problem(s); first: {problems[0]}")
    log.info(f"extract --verify: {shards} shards of {len(config.splits)} splits match")
    return shards


# ---------------------------------------------------------------------------------------------
# Decoding and the forward pass
# ---------------------------------------------------------------------------------------------


class Extractor:
    """The backbone on its device: uint8 images [B, H, W, 3] → features [B, h, w, C] (numpy)."""

    def __init__(
        self, backbone: ConvFourBackbone, device: torch.device, dtype: str, batch_size: int
    ) -> None:
        self.device = device
        self.backbone = backbone.to(device).to(memory_format=torch.channels_last).eval()
        self.dtype = getattr(torch, dtype)
        self.forward_batch = batch_size  # halved for good on every out-of-memory error

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, where: str) -> np.ndarray:
        images = images.to(self.device, non_blocking=True)
        outputs, start = [], 0
        while start < len(images):
            chunk = images[start : start + self.forward_batch]
            try:
                outputs.append(self._forward(chunk, where))
            except torch.OutOfMemoryError:
                if self.forward_batch == 1:
                    raise
                self.forward_batch //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning(f"extract: out of memory; forward batch halved to {self.forward_batch}")
                continue
            start += len(chunk)
        return torch.cat(outputs).cpu().numpy()  # [B, h, w, C]

    def _forward(self, images: torch.Tensor, where: str) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            features = self.backbone(images)  # [b, C, h, w]
        features = features.float().permute(0, 2, 3, 1)  # [b, h, w, C]
        peak = features.abs().amax().item()
        limit = FLOAT16_MAX if self.dtype == torch.float16 else math.inf
        if not peak <= limit:  # also catches nan
            raise DataError(
                f"{where}: features overflow {self.dtype} (max |x| = {peak:.4g}); use pretrained "
                f"or calibrated weights, or extract.dtype float32"
            )
        return features.to(self.dtype).contiguous()


def extract_shards(
    extractor: Extractor,
    shards: list[ShardSpec],
    folder: Path,
    config: ExtractConfig,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """Extract `shards` of one split in order, yielding each finished shard's manifest entry.

    One DataLoader covers all of them, so decoding runs ahead across shard boundaries."""
    if not shards:
        return
    paths = [path for shard in shards for path in shard.paths]
    indices = [index for shard in shards for index in shard.image_indices]
    batches, offset = [], 0
    for shard in shards:  # batches never straddle two shards
        for start in range(0, shard.count, config.batch_size):
            stop = min(start + config.batch_size, shard.count)
            batches.append(list(range(offset + start, offset + stop)))
        offset += shard.count
    dataset = DecodedImages(paths, indices, config.input_height, config.input_width)
    on_cpu = extractor.device.type == "cpu"
    loader = decoding_loader(dataset, batches, config.decode_workers, network_on_cpu=on_cpu)
    grid = grid_size(config.input_height, config.input_width)
    feature_shape = (*grid, extractor.backbone.channels)
    loaded = iter(loader)
    for shard in shards:
        attrs = {"split": shard.split, "backbone": config.backbone, "weights": config.weights}
        with (
            atomic_path(folder / shard.file_name) as temporary,
            ShardWriter(temporary, shard, feature_shape, config.dtype, attrs) as writer,
        ):
            while writer.written < shard.count:
                images = next(loaded)  # [B, H, W, 3] uint8
                if isinstance(images, str):
                    raise DataError(images)
                written = shard.image_indices[writer.written : writer.written + len(images)]
                where = f"{shard.split} images {written[0]}..{written[-1]}"
                writer.write(extractor(images, where))
                if progress is not None:
                    progress.advance(len(images))
            entry = writer.finish(shard.inputs_sha256)
        yield entry


# ---------------------------------------------------------------------------------------------
# Planning: folders, calibration, which shards remain
# ---------------------------------------------------------------------------------------------


def _writable_folders(config: ExtractConfig) -> dict[str, Path]:
    """Create output_dir/{split}; ConfigError naming the folder if it cannot be written."""
    folders = {}
    for split in config.splits:
        folder = Path(config.output_dir).absolute() / split
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"extract.output_dir: cannot create {folder}: {error.strerror}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"extract.output_dir: {folder} is not writable")
        folders[split] = folder
    return folders


def _calibrate(
    backbone: ConvFourBackbone,
    info: WeightsInfo,
    config: ExtractConfig,
    images: dict[int, Path],
    device: torch.device,
) -> WeightsInfo:
    """BatchNorm statistics of random weights from the first images of the first split; saved
    (the statistics only: the weights follow from the seed) next to the features, so a rerun
    uses exactly the same ones even where the calibration pass is not bit-reproducible (GPU)."""
    sample = list(images.items())[: config.calibration_images]  # (image index, path)
    meta = {
        "backbone": config.backbone,
        "seed": config.seed,
        "input_size": [config.input_height, config.input_width],
        "images": inputs_sha256(tuple(str(path) for _, path in sample)),
    }
    split = config.splits[0]
    description = f"{info.description}, BatchNorm calibrated on {len(sample)} {split} images"
    saved_path = Path(config.output_dir) / CALIBRATION_FILE
    try:
        saved = torch.load(saved_path, map_location="cpu", weights_only=True)
        if saved["meta"] == meta:
            backbone.trunk.load_state_dict(saved["state"], strict=False)
            log.info(f"extract: BatchNorm calibration reused from {saved_path}")
            return WeightsInfo(info.source, description, pretrained=False)
    except (OSError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError):
        pass  # missing or unusable: calibrate again
    backbone.to(device)
    batches = (
        torch.stack(
            [
                torch.from_numpy(load_image(path, config.input_height, config.input_width, index))
                for index, path in sample[start : start + config.batch_size]
            ]
        ).to(device)
        for start in range(0, len(sample), config.batch_size)
    )
    calibrate_batchnorm(backbone, batches)
    backbone.cpu()
    statistics = {k: v for k, v in backbone.trunk.state_dict().items() if _is_bn_statistic(k)}
    calibration = {"meta": meta, "state": statistics}
    write_atomic(saved_path, lambda temporary: torch.save(calibration, temporary))
    return WeightsInfo(info.source, description, pretrained=False)


def _is_bn_statistic(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _plan_split(
    config: ExtractConfig,
    split: str,
    images: dict[int, Path],
    folder: Path,
    info: WeightsInfo,
    digest: str,
) -> SplitPlan:
    """Settings that define the features; shards kept from an earlier run; the rest to do."""
    grid = grid_size(config.input_height, config.input_width)
    channels = CHANNELS[config.backbone]
    settings = {
        "format": FORMAT,
        "split": split,
        "num_images": len(images),
        "backbone": config.backbone,
        "backbone_output": "torchvision ResNet layer3 (C4, stride 16)",
        "weights": info.source,
        "weights_description": info.description,
        "weights_sha256": digest,
        "pretrained": info.pretrained,
        "input_size": [config.input_height, config.input_width],
        "grid_size": list(grid),
        "feature_shape": [*grid, channels],
        "dtype": config.dtype,
        "shard_size": config.shard_size,
        "layout": "features [n, H, W, C] channels-last, one image per chunk; image_index [n], "
        "also listed by each shard's image_indices",
    }
    absolute = {index: path.absolute() for index, path in images.items()}
    shards = plan_shards(split, absolute, config.shard_size)
    kept = reusable_entries(read_manifest(folder / "manifest.json"), folder, settings, shards)
    removed = remove_leftovers(folder, split, keep={entry["file"] for entry in kept.values()})
    manifest = {**settings, "warning": NOT_PRETRAINED} if not info.pretrained else dict(settings)
    manifest["complete"] = len(kept) == len(shards)
    manifest["shards"] = [kept[number] for number in sorted(kept)]
    write_manifest(folder / "manifest.json", manifest)
    plan = SplitPlan(folder, manifest, [shard for shard in shards if shard.number not in kept])
    log.info(
        f"extract {split}: {len(images)} images (indices {min(images)}..{max(images)}) in "
        f"{len(shards)} shards; {len(kept)} done before, "
        f"{len(plan.todo)} to do" + (f"; removed {len(removed)} stale files" if removed else "")
    )
    return plan


def set_cpu_threads(device: torch.device) -> None:
    """On a CPU, one intra-op thread per available core (decoding workers mostly sleep)."""
    if device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


# ---------------------------------------------------------------------------------------------
# Ray fan-out: one actor per GPU, shards handed out as actors become free
# ---------------------------------------------------------------------------------------------


class ShardWorker:
    """A Ray actor's state: the backbone (weights sent once by the driver) on this worker's GPU."""

    def __init__(self, config: dict[str, Any], trunk_state: dict[str, torch.Tensor]) -> None:
        self.config = from_dict(ExtractConfig, config)
        backbone, _ = build_backbone(self.config.backbone, "random", self.config.seed)
        backbone.trunk.load_state_dict(trunk_state)
        device = resolve_device(self.config.device, "extract.device")
        self.extractor = Extractor(backbone, device, self.config.dtype, self.config.batch_size)

    def run(self, shard: ShardSpec, folder: str) -> dict[str, Any]:
        return next(extract_shards(self.extractor, [shard], Path(folder), self.config))


def _run_on_ray(
    config: ExtractConfig, backbone: ConvFourBackbone, plans: list[SplitPlan], progress: Progress
) -> None:
    """Every shard still to do, on a pool of `extract.num_workers` Ray actors (one GPU each
    where the cluster has GPUs), the finished ones recorded as they come back."""
    todo = [(plan, shard) for plan in plans for shard in plan.todo]

    def finished(index: int, entry: dict[str, Any]) -> None:
        plan, shard = todo[index]
        plan.record(entry)
        progress.advance(shard.count)

    trunk_state = {k: v.cpu() for k, v in backbone.trunk.state_dict().items()}
    run_on_actors(
        ShardWorker,
        (to_dict(config), trunk_state),
        [(shard, str(plan.folder)) for plan, shard in todo],
        num_actors=config.num_workers,
        address=config.ray_address,
        want_gpu=config.device != "cpu",
        on_result=finished,
    )
