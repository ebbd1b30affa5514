"""A ResNet conv4 backbone that sees CLEVR objects, trained offline on the TRAIN scenes.

"What material is the small cyan cylinder?" can only be answered from features in which the cell
under that cylinder says "small, cyan, rubber/metal, cylinder". Random-init ResNets barely do
(benchmarks/probe_features.py probes both), and ImageNet weights need a download. Every CLEVR scene
file lists each object's attributes and position, so this trains the same truncated ResNet that
`snmn extract` runs (pipeline/vision/backbone.py) to name them: each cell of the h×w layer3 grid is
labelled with the object that covers it (visible masks where the scenes have them, a disc around
pixel_coords otherwise), and five 1×1 conv heads (object / empty, colour 8, shape 3, material 2,
size 2) are trained with cross-entropy over the cells. In the attribute losses every object weighs
the same (a small sphere far back is one cell, a large cube in front a dozen), half of it on the
cell under its centre, which must name the object even when a nearer one hides most of it; each
training image is mirrored left to right with probability 1/2 (1,400 images are few, and a mirrored
scene has the same objects). Only images/train and {dataset}_train_scenes.json are read; the last
`holdout_images` train images are kept out of training to report a held-out accuracy (of all object
cells, so a little below the probe's centre cells). Images are decoded once into a uint8 tensor [N,
H, W, 3] at the extractor's input size. A scene whose image is absent (a subset of CLEVR: a partial
download) is skipped, counted in the log and in the metrics (`skipped_scenes`); `max_images` then
takes the first scenes that have an image.

Outputs: the truncated backbone's state_dict (what extract.weights loads), a metrics JSON and a
CSV training curve. A checkpoint written after every epoch lets a killed run resume; the same
seed gives bit-identical weights either way (fixed data order per epoch).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from pipeline.clevr.readers import Scene, read_scenes
from pipeline.clevr.render import object_ids
from pipeline.clevr.world import VALUES
from pipeline.config import ExtractConfig, PretrainConfig, to_dict
from pipeline.devices import resolve_device, resolve_precision
from pipeline.errors import ConfigError, DataError
from pipeline.progress import Progress
from pipeline.tables import write_atomic, write_json_atomic
from pipeline.vision.backbone import STRIDE, ConvFourBackbone, build_backbone, grid_size
from pipeline.vision.images import load_image

log = logging.getLogger("snmn.pretrain")
SPLIT = "train"  # the only split this module ever reads
ATTRIBUTES = ("color", "shape", "material", "size")
HEADS = ("object", *ATTRIBUTES)  # label rows: object (0 empty / 1 object), then each attribute
CENTRE_SHARE = 0.5  # of each object's weight in the attribute losses: on its centre cell
CLASSES = {"object": 2, **{name: len(VALUES[name]) for name in ATTRIBUTES}}
EMPTY = -1  # attribute label of a cell no object covers (ignored by the attribute losses)


# ---------------------------------------------------------------------------------------------
# Cell labels
# ---------------------------------------------------------------------------------------------


def attribute_indices(scene: Scene, where: str) -> np.ndarray:
    """[K, 4] index of each object's colour, shape, material, size in world.VALUES."""
    rows = []
    for k, obj in enumerate(scene.objects):
        row = []
        for name in ATTRIBUTES:
            value = getattr(obj, name)
            if value not in VALUES[name]:
                raise DataError(f"{where}: object {k}: unknown {name} {value!r}")
            row.append(VALUES[name].index(value))
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(len(scene.objects), len(ATTRIBUTES))


def centre_cell(
    pixel_x: float, pixel_y: float, image_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[int, int]:
    """Grid cell (row, col) of an image pixel, for images of image_size (H0, W0) resized to
    input_size (H, W): the cell whose 16×16 input pixels contain it (clipped to the grid)."""
    (height0, width0), (height, width) = image_size, input_size
    rows, cols = grid_size(height, width)
    row = int(pixel_y * height / height0 // STRIDE)
    col = int(pixel_x * width / width0 // STRIDE)
    return min(max(row, 0), rows - 1), min(max(col, 0), cols - 1)


def cell_owners(
    scene: Scene, ids: np.ndarray, input_size: tuple[int, int], min_coverage: float
) -> np.ndarray:
    """[h, w] object index per cell, EMPTY where none. A cell belongs to the object covering most
    of it if that is at least min_coverage; the cell under an object's centre always belongs to
    that object when any of it shows there (small objects are narrower than a cell)."""
    height0, width0 = ids.shape
    rows, cols = grid_size(*input_size)
    num_objects = len(scene.objects)
    row_cell = _pixel_cells(height0, input_size[0], rows)  # [H0]
    col_cell = _pixel_cells(width0, input_size[1], cols)  # [W0]
    cell = row_cell[:, None] * cols + col_cell[None, :]  # [H0, W0]
    counts = np.bincount(
        (cell * (num_objects + 1) + ids).ravel(), minlength=rows * cols * (num_objects + 1)
    ).reshape(rows * cols, num_objects + 1)  # [cells, 1 + K]: ground, then each object
    coverage = counts[:, 1:] / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # [cells, K]
    owners = np.full(rows * cols, EMPTY, dtype=np.int64)
    if num_objects == 0:
        return owners.reshape(rows, cols)
    best = coverage.argmax(axis=1)
    covered = coverage[np.arange(rows * cols), best] >= min_coverage
    owners[covered] = best[covered]
    claims: dict[int, int] = {}  # centre cell → the claiming object showing most there
    for k, obj in enumerate(scene.objects):
        row, col = centre_cell(obj.pixel_coords[0], obj.pixel_coords[1], ids.shape, input_size)
        c = row * cols + col
        if coverage[c, k] > 0 and (c not in claims or coverage[c, k] > coverage[c, claims[c]]):
            claims[c] = k
    for c, k in claims.items():
        owners[c] = k
    return owners.reshape(rows, cols)


def _pixel_cells(pixels: int, input_pixels: int, cells: int) -> np.ndarray:
    """Grid cell of every image pixel along one axis (its centre, resized, divided by 16)."""
    centres = (np.arange(pixels) + 0.5) * input_pixels / pixels
    return np.minimum(centres // STRIDE, cells - 1).astype(np.int64)


def cell_targets(
    scene: Scene,
    image_size: tuple[int, int],
    input_size: tuple[int, int],
    min_coverage: float,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """[5, h, w] int8 labels: row 0 object (1) or empty (0), rows 1-4 the owning object's colour,
    shape, material, size index, EMPTY on empty cells; and [h, w] float32 cell_weights."""
    attributes = attribute_indices(scene, where)  # [K, 4]
    owners = cell_owners(scene, object_ids(scene, image_size, where), input_size, min_coverage)
    labels = np.full((len(HEADS), *owners.shape), EMPTY, dtype=np.int8)
    labels[0] = owners >= 0
    if len(attributes):
        taken = owners >= 0
        labels[1:, taken] = attributes[owners[taken]].T
    return labels, cell_weights(scene, owners, image_size, input_size)


def cell_weights(
    scene: Scene, owners: np.ndarray, image_size: tuple[int, int], input_size: tuple[int, int]
) -> np.ndarray:
    """[h, w] float32 weight of each cell in the attribute losses. Every object weighs 1, however
    many cells it owns (a small sphere far back owns one, a large cube in front a dozen), and
    CENTRE_SHARE of that is on the cell under its centre: the cell that must name the object even
    when a nearer one hides most of it (where the probe reads it, and where attention finds it)."""
    weights = np.zeros(owners.shape, dtype=np.float32)
    for k, obj in enumerate(scene.objects):
        owned = owners == k  # [h, w]
        count = int(owned.sum())
        if count == 0:
            continue
        row, col = centre_cell(obj.pixel_coords[0], obj.pixel_coords[1], image_size, input_size)
        if owned[row, col] and count > 1:
            weights[owned] = (1.0 - CENTRE_SHARE) / (count - 1)
            weights[row, col] = CENTRE_SHARE
        else:
            weights[owned] = 1.0 / count
    return weights


# ---------------------------------------------------------------------------------------------
# The train split in memory
# ---------------------------------------------------------------------------------------------


@dataclass
class SceneImages:
    """Decoded train images [N, H, W, 3] uint8, their cell labels [N, 5, h, w] int8 and the cells'
    weights in the attribute losses [N, h, w] float32."""

    images: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    scenes_sha256: str
    skipped_scenes: int = 0  # scenes whose image file is absent

    def __len__(self) -> int:
        return len(self.images)

    def split(self, count: int) -> tuple[SceneImages, SceneImages]:
        """The first `count` images and the rest."""
        first = SceneImages(self.images[:count], self.labels[:count], self.weights[:count], "")
        rest = SceneImages(self.images[count:], self.labels[count:], self.weights[count:], "")
        return first, rest


def train_paths(config: PretrainConfig) -> tuple[Path, Path]:
    """The only two paths pretraining reads: the train image folder and the train scenes."""
    images = Path(config.images_dir) / SPLIT
    scenes = Path(config.scenes_dir) / f"{config.dataset}_{SPLIT}_scenes.json"
    return images, scenes


def load_scene_images(config: PretrainConfig) -> SceneImages:
    """Decode every (or the first max_images) train image once and label its cells; scenes
    whose image is absent are skipped (counted in `skipped_scenes`)."""
    images_dir, scenes_path = train_paths(config)
    if not scenes_path.is_file():
        raise DataError(f"{scenes_path}: scenes file not found (pretraining reads train scenes)")
    scenes = read_scenes(scenes_path)
    present = [scene for scene in scenes if (images_dir / scene.image_filename).is_file()]
    skipped = len(scenes) - len(present)
    if skipped:
        first = next(s for s in scenes if not (images_dir / s.image_filename).is_file())
        log.info(
            f"pretrain: skipped {skipped} of {len(scenes)} scenes: their images are absent from "
            f"{images_dir} (the first: {first.image_filename})"
        )
    if not present and scenes:
        raise DataError(f"{images_dir}: none of the {len(scenes)} scenes' images is there")
    scenes = present
    if config.max_images:
        scenes = scenes[: config.max_images]
    if not scenes:
        raise DataError(f"{scenes_path}: no scenes")
    input_size = (config.input_height, config.input_width)
    images = np.empty((len(scenes), *input_size, 3), dtype=np.uint8)  # [N, H, W, 3]
    labels = np.empty((len(scenes), len(HEADS), *grid_size(*input_size)), dtype=np.int8)
    weights = np.empty((len(scenes), *grid_size(*input_size)), dtype=np.float32)
    for n, scene in enumerate(scenes):
        where = f"{scenes_path}: scene {scene.index} (image_index {scene.image_index})"
        if scene.split != SPLIT:
            raise DataError(f"{where}: split {scene.split!r}, expected {SPLIT!r}")
        path = images_dir / scene.image_filename
        images[n] = load_image(path, *input_size, scene.image_index)
        with Image.open(path) as image:  # already decoded once: the header is valid
            image_size = (image.height, image.width)
        labels[n], weights[n] = cell_targets(
            scene, image_size, input_size, config.min_coverage, where
        )
    digest = hashlib.sha256(scenes_path.read_bytes()).hexdigest()
    tensors = (torch.from_numpy(array) for array in (images, labels, weights))
    return SceneImages(*tensors, digest, skipped)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class CellHeads(nn.Module):
    """One 1×1 conv over layer3 features → logits of every head, per cell."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, sum(CLASSES.values()), kernel_size=1)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        logits = self.conv(features).float()  # [B, sum(classes), h, w]
        return list(torch.split(logits, list(CLASSES.values()), dim=1))  # each [B, n, h, w]


@dataclass
class Networks:
    """The backbone being trained, its heads, their optimiser and schedule, and the device."""

    backbone: ConvFourBackbone
    heads: CellHeads
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    precision: str

    def logits(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[B, H, W, 3] pixels 0..255 (uint8, or float when jittered) on the CPU → 5 × [B, n, h,
        w] float32 logits on the device."""
        images = images.to(self.device, non_blocking=True)
        enabled = self.precision == "bfloat16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled):
            return self.heads(self.backbone(images))

    def state(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.trunk.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.backbone.trunk.load_state_dict(state["backbone"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def build_networks(config: PretrainConfig, total_steps: int) -> Networks:
    """Random-init backbone (seeded as extract's `random`) and heads; Adam with warm-up and a
    cosine decay to zero over total_steps."""
    device = resolve_device(config.device, "pretrain.device")
    backbone, _ = build_backbone(config.backbone, "random", config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        heads = CellHeads(backbone.channels)
    backbone, heads = backbone.to(device), heads.to(device)
    optimizer = torch.optim.Adam(
        [*backbone.parameters(), *heads.parameters()],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps))
    precision = resolve_precision(config.precision, device)
    return Networks(backbone, heads, optimizer, scheduler, device, precision)


@dataclass
class CellCounts:
    """Correct / labelled cells per head (objects only for the attribute heads)."""

    correct: np.ndarray  # [5]
    total: np.ndarray  # [5]

    @classmethod
    def zero(cls) -> CellCounts:
        return cls(np.zeros(len(HEADS)), np.zeros(len(HEADS)))

    def add(self, logits: list[torch.Tensor], labels: torch.Tensor) -> None:
        for i, head_logits in enumerate(logits):
            valid = labels[:, i] != EMPTY  # [B, h, w]
            predicted = head_logits.argmax(dim=1)  # [B, h, w]
            self.correct[i] += (predicted == labels[:, i])[valid].sum().item()
            self.total[i] += valid.sum().item()

    def accuracy(self) -> dict[str, float]:
        return {
            name: float(self.correct[i] / max(self.total[i], 1)) for i, name in enumerate(HEADS)
        }


def cell_loss(
    logits: list[torch.Tensor], labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Object head: mean cross-entropy over all cells. Attribute heads: cross-entropy weighted by
    cell_weights (each object counts the same), summed over heads. labels [B, 5, h, w],
    weights [B, h, w]."""
    loss = functional.cross_entropy(logits[0], labels[:, 0].long())
    total_weight = weights.sum()
    if total_weight == 0:
        return loss
    for i, head_logits in enumerate(logits[1:], start=1):
        per_cell = functional.cross_entropy(
            head_logits, labels[:, i].long(), ignore_index=EMPTY, reduction="none"
        )  # [B, h, w], 0 on empty cells
        loss = loss + (per_cell * weights).sum() / total_weight
    return loss


@torch.no_grad()
def evaluate(networks: Networks, data: SceneImages, batch_size: int) -> dict[str, float]:
    """Cell accuracy per head on `data` (eval mode)."""
    networks.backbone.eval()
    networks.heads.eval()
    counts = CellCounts.zero()
    for start in range(0, len(data), batch_size):
        labels = data.labels[start : start + batch_size].to(networks.device)
        counts.add(networks.logits(data.images[start : start + batch_size]), labels)
    return counts.accuracy()


def check_extract_settings(pretrain: PretrainConfig, extract: ExtractConfig) -> None:
    """When extract.weights is this backbone's file, it must run at the same depth and size."""
    if Path(extract.weights) != Path(pretrain.output_path):
        return
    for name in ("backbone", "input_height", "input_width"):
        if getattr(extract, name) != getattr(pretrain, name):
            raise ConfigError(
                f"extract.{name} {getattr(extract, name)!r} differs from pretrain.{name} "
                f"{getattr(pretrain, name)!r}, but extract.weights is the pretrained backbone"
            )


@dataclass(frozen=True)
class PretrainSummary:
    train_images: int
    holdout_images: int
    seconds: float  # training, over all runs that resumed one another
    holdout_accuracy: dict[str, float]
    output_path: str


def pretrain_backbone(
    config: PretrainConfig, on_epoch_end: Callable[[int], None] | None = None
) -> PretrainSummary:
    """Train the backbone on the train scenes; write weights, metrics and curve (see module doc).
    `on_epoch_end(epoch)` runs after each epoch's checkpoint (tests use it to stop a run)."""
    if config.horizontal_flip and config.input_width % STRIDE:
        raise ConfigError(
            f"pretrain.horizontal_flip: input_width {config.input_width} is not a multiple of "
            f"{STRIDE}, so a mirrored image's cells would not line up with its labels"
        )
    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads or max(1, len(os.sched_getaffinity(0))))
    try:
        data = load_scene_images(config)
        seconds = time.perf_counter() - started
        share = float((data.labels[:, 0] == 1).float().mean())
        log.info(
            f"pretrain: {len(data)} train images decoded in {seconds:.1f} s "
            f"({share:.1%} of their cells show an object)"
        )
        return _train(config, data, on_epoch_end)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    config: PretrainConfig, data: SceneImages, on_epoch_end: Callable[[int], None] | None
) -> PretrainSummary:
    train_count = len(data) - config.holdout_images
    if train_count < 1:
        raise ConfigError(
            f"pretrain.holdout_images: {config.holdout_images} leaves no training images "
            f"(only {len(data)} train scenes)"
        )
    train, holdout = data.split(train_count)
    steps_per_epoch = math.ceil(train_count / config.batch_size)
    networks = build_networks(config, steps_per_epoch * config.epochs)
    checkpoint_path = _checkpoint_path(config)
    meta = {**to_dict(config), "torch_threads": None, "scenes_sha256": data.scenes_sha256}
    meta["skipped_scenes"] = data.skipped_scenes  # images deleted since: not the same data
    state = _load_checkpoint(checkpoint_path, meta)
    first_epoch, curve, seconds = 0, [], 0.0
    if state is not None:
        networks.load(state)
        first_epoch, curve, seconds = state["epoch"], state["curve"], state["seconds"]
        log.info(f"pretrain: resuming after epoch {first_epoch} from {checkpoint_path}")
    progress = Progress(
        train_count * config.epochs, "images", "pretrain", done=first_epoch * train_count
    )
    log.info(f"pretrain: {config.backbone} on {networks.device.type} in {networks.precision}")
    held_out: dict[str, float] = {}
    for epoch in range(first_epoch, config.epochs):
        epoch_started = time.perf_counter()
        curve += _train_epoch(config, networks, train, epoch, progress)
        held_out = evaluate(networks, holdout, config.batch_size) if holdout else {}
        log.info(f"pretrain: epoch {epoch + 1}/{config.epochs} held-out {_format(held_out)}")
        seconds += time.perf_counter() - epoch_started
        state = {**networks.state(), "meta": meta, "epoch": epoch + 1, "curve": curve}
        state["seconds"] = seconds
        write_atomic(checkpoint_path, lambda temporary, state=state: torch.save(state, temporary))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
    if holdout and not held_out:  # resumed after the last epoch
        held_out = evaluate(networks, holdout, config.batch_size)
    weights = {key: value.cpu() for key, value in networks.backbone.trunk.state_dict().items()}
    write_atomic(config.output_path, lambda temporary: torch.save(weights, temporary))
    metrics = {
        "backbone": config.backbone,
        "input_size": [config.input_height, config.input_width],
        "grid_size": list(grid_size(config.input_height, config.input_width)),
        "train_images": train_count,
        "holdout_images": len(holdout),
        "skipped_scenes": data.skipped_scenes,
        "epochs": config.epochs,
        "train_seconds": round(seconds, 1),
        "images_per_second": round(train_count * config.epochs / max(seconds, 1e-9), 2),
        "precision": networks.precision,
        "object_cell_share": round(float((data.labels[:, 0] == 1).float().mean()), 4),
        "final_loss": curve[-1]["loss"] if curve else None,
        "holdout_accuracy": {name: round(value, 4) for name, value in held_out.items()},
        "weights_sha256": hashlib.sha256(Path(config.output_path).read_bytes()).hexdigest(),
    }
    write_json_atomic(metrics, config.metrics_path)
    curve_csv = _curve_csv(curve)
    write_atomic(config.curve_path, lambda temporary: temporary.write_text(curve_csv))
    checkpoint_path.unlink(missing_ok=True)
    log.info(
        f"pretrain: {seconds:.1f} s of training ({metrics['images_per_second']} images/s); "
        f"held-out {_format(held_out)} -> {config.output_path}"
    )
    return PretrainSummary(train_count, len(holdout), seconds, held_out, config.output_path)


def _train_epoch(
    config: PretrainConfig, networks: Networks, train: SceneImages, epoch: int, progress: Progress
) -> list[dict[str, float]]:
    """One pass over the training images in an order fixed by (seed, epoch); the loss and cell
    accuracy every `log_every` steps and at the end of the epoch, on the progress line."""
    networks.backbone.train()
    networks.heads.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(train), generator=generator)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    rows, counts, window_loss, window_steps = [], CellCounts.zero(), 0.0, 0
    for index in range(steps_per_epoch):
        batch = order[index * config.batch_size : (index + 1) * config.batch_size]
        images, labels = train.images[batch], train.labels[batch]  # [B, H, W, 3], [B, 5, h, w]
        weights = train.weights[batch]  # [B, h, w]
        if config.horizontal_flip:
            images, labels, weights = mirror_some(images, labels, weights, generator)
        if config.photometric_jitter:
            images = jitter_photometry(images, config.photometric_jitter, generator)
        labels, weights = labels.to(networks.device), weights.to(networks.device)
        logits = networks.logits(images)  # 5 × [B, n, h, w]
        loss = cell_loss(logits, labels, weights)
        networks.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        networks.optimizer.step()
        networks.scheduler.step()
        counts.add([head.detach() for head in logits], labels)
        window_loss, window_steps = window_loss + loss.item(), window_steps + 1
        step = epoch * steps_per_epoch + index + 1
        if step % config.log_every == 0 or index == steps_per_epoch - 1:
            accuracy = counts.accuracy()
            rows.append({"step": step, "epoch": epoch + 1, "loss": window_loss / window_steps})
            rows[-1].update(accuracy)
            details = (
                f"epoch {epoch + 1}/{config.epochs} step {step}/{steps_per_epoch * config.epochs} "
                f"loss {rows[-1]['loss']:.3f} cell accuracy {_format(accuracy)}"
            )
            progress.advance(len(batch), details, now=True)
            counts, window_loss, window_steps = CellCounts.zero(), 0.0, 0
        else:
            progress.advance(len(batch))
    return rows


def mirror_some(
    images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror each image left to right with probability 1/2, its cell labels and weights with it:
    a mirrored red cube is still a red cube (the grid must tile the width exactly)."""
    mirrored = torch.rand(len(images), generator=generator) < 0.5  # [B]
    images, labels, weights = images.clone(), labels.clone(), weights.clone()
    images[mirrored] = images[mirrored].flip(2)  # [b, H, W, 3]
    labels[mirrored] = labels[mirrored].flip(3)  # [b, 5, h, w]
    weights[mirrored] = weights[mirrored].flip(2)  # [b, h, w]
    return images, labels, weights


def jitter_photometry(
    images: torch.Tensor, strength: float, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [B, H, W, 3] → float [B, H, W, 3] in 0..255, each image with its own brightness and
    contrast (× U(1-s, 1+s)), gamma (exp U(-s, s)) and, for half of them, a Gaussian blur (σ up to
    2s pixels): a red cube lit more softly, or seen through a softer lens, is still a red cube.
    Hue and saturation stay: colour is a label."""
    count = len(images)
    pixels = images.float().permute(0, 3, 1, 2) / 255  # [B, 3, H, W] in 0..1

    def uniform(low: float, high: float) -> torch.Tensor:  # [B, 1, 1, 1]
        return (low + (high - low) * torch.rand(count, generator=generator)).view(-1, 1, 1, 1)

    pixels = pixels.clamp(1e-4, 1) ** torch.exp(uniform(-strength, strength))
    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    pixels = (pixels - mean) * uniform(1 - strength, 1 + strength) + mean
    pixels = pixels * uniform(1 - strength, 1 + strength)
    sigmas = uniform(0.2, 0.2 + 2 * strength).flatten()  # [B] pixels
    blurred = torch.rand(count, generator=generator) < 0.5  # [B]
    for index in torch.nonzero(blurred).flatten().tolist():
        radius = max(1, math.ceil(2 * float(sigmas[index])))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)  # [K]
        kernel = torch.exp(-(offsets**2) / (2 * float(sigmas[index]) ** 2))
        kernel = kernel / kernel.sum()
        image = pixels[index : index + 1].transpose(0, 1)  # [3, 1, H, W]: channels as batch
        image = functional.conv2d(image, kernel.view(1, 1, 1, -1), padding=(0, radius))
        image = functional.conv2d(image, kernel.view(1, 1, -1, 1), padding=(radius, 0))
        pixels[index] = image.transpose(0, 1)[0]
    return (pixels.clamp(0, 1) * 255).permute(0, 2, 3, 1)  # [B, H, W, 3]


def _warmup_cosine(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over the first 5% of steps, then cosine to 0."""
    warmup = max(1, total_steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _format(accuracy: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.3f}" for name, value in accuracy.items()) or "-"


def _checkpoint_path(config: PretrainConfig) -> Path:
    output = Path(config.output_path)
    return output.with_name(f".{output.name}.checkpoint")


def _load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The state saved after an epoch by an interrupted run with the same settings, or None."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as error:  # truncated or foreign file: start again
        log.warning(f"pretrain: ignoring unreadable checkpoint {path} ({type(error).__name__})")
        return None
    if not isinstance(state, dict) or state.get("meta") != meta:
        log.info(f"pretrain: {path} was written with other settings or data; starting again")
        return None
    return state


def _curve_csv(rows: list[dict[str, float]]) -> str:
    """The training curve for `dvc plots`: step, epoch, loss, per-head cell accuracy."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["step", "epoch", "loss", *HEADS], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: round(value, 5) for key, value in row.items()} for row in rows)
    return text.getvalue()
