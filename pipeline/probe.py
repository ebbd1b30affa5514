"""A linear probe: can a linear classifier read each object's attributes off the features?

Before spending GPU hours on "Is the large rubber cube the same colour as the cylinder?", check
that the features see colour, shape, material and size at all. For every object of a scenes
file, the feature cell under its centre (pixel_coords mapped to the grid) is one sample; images
are split 70/30 (seeded) so no image is on both sides; a softmax classifier per attribute is fit
with L-BFGS on standardised features (its L2 weight chosen on a held-out part of the training
images) and scored on the test images, next to the majority-class baseline. An object whose
centre is hidden behind a nearer one shows that one in its centre cell (about 3% of mini-CLEVR
objects on a 10×15 grid), so even perfect features score a little below 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from pipeline.clevr import DataError, read_scenes
from pipeline.pretrain import ATTRIBUTES, attribute_indices, centre_cell
from pipeline.shards import FeatureStore

L2_WEIGHTS = (1e-4, 1e-3, 1e-2, 1e-1)  # tried on a validation part of the training images
VALIDATION_SHARE = 0.25
MAX_ITERATIONS = 200


@dataclass(frozen=True)
class ObjectCells:
    """One sample per object: its centre cell's features and its attribute indices."""

    features: np.ndarray  # [M, C] float32
    labels: np.ndarray  # [M, 4] colour, shape, material, size
    image_indices: np.ndarray  # [M]


@dataclass(frozen=True)
class ProbeRow:
    attribute: str
    train_objects: int
    test_objects: int
    accuracy: float
    majority: float
    l2_weight: float


def object_cells(
    manifest_path: str | Path, scenes_path: str | Path, image_size: tuple[int, int] = (320, 480)
) -> ObjectCells:
    """Centre-cell features of every object in `scenes_path`, from the features of the same
    split (`image_size` (H0, W0): the original images' pixels, which pixel_coords refer to)."""
    scenes_path = Path(scenes_path)
    if not scenes_path.is_file():
        raise DataError(f"{scenes_path}: scenes file not found")
    store = FeatureStore(manifest_path)
    input_size = tuple(store.manifest["input_size"])
    features, labels, images = [], [], []
    for scene in read_scenes(scenes_path):
        where = f"{scenes_path}: scene {scene.index} (image_index {scene.image_index})"
        if scene.split != store.manifest["split"]:
            raise DataError(
                f"{where}: split {scene.split!r}, but {manifest_path} holds split "
                f"{store.manifest['split']!r}"
            )
        if scene.image_index >= len(store):
            raise DataError(f"{where}: no features ({manifest_path} has {len(store)} images)")
        grid = store[scene.image_index]  # [h, w, C]
        for obj in scene.objects:
            row, col = centre_cell(obj.pixel_coords[0], obj.pixel_coords[1], image_size, input_size)
            features.append(np.asarray(grid[row, col], dtype=np.float32))
            images.append(scene.image_index)
        labels.append(attribute_indices(scene, where))
    store.close()
    if not features:
        raise DataError(f"{scenes_path}: no objects to probe")
    return ObjectCells(np.stack(features), np.concatenate(labels), np.array(images))


def probe(cells: ObjectCells, train_share: float = 0.7, seed: int = 0) -> list[ProbeRow]:
    """Per attribute: accuracy of a softmax probe on the test images, and the majority baseline.
    Runs on one thread: thousands of small L-BFGS steps gain nothing from more."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe(cells, train_share, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _probe(cells: ObjectCells, train_share: float, seed: int) -> list[ProbeRow]:
    is_train = split_by_image(cells.image_indices, train_share, seed)  # [M]
    if is_train.all():
        count = len(np.unique(cells.image_indices))
        raise DataError(f"probe: {count} image(s) are too few to split into train and test")
    mean = cells.features[is_train].mean(axis=0)
    std = cells.features[is_train].std(axis=0) + 1e-6
    standard = torch.from_numpy((cells.features - mean) / std)  # [M, C]
    fit_part = ~split_by_image(cells.image_indices[is_train], VALIDATION_SHARE, seed + 1)
    rows = []
    for a, name in enumerate(ATTRIBUTES):
        labels = torch.from_numpy(cells.labels[:, a])
        classes = int(labels.max()) + 1
        x_train, y_train = standard[is_train], labels[is_train]
        x_test, y_test = standard[~is_train], labels[~is_train]
        l2 = _choose_l2(x_train, y_train, fit_part, classes)
        weight, bias = fit_softmax(x_train, y_train, classes, l2)
        accuracy = ((x_test @ weight + bias).argmax(dim=1) == y_test).float().mean().item()
        most_common = torch.bincount(y_train, minlength=classes).argmax()
        majority = (y_test == most_common).float().mean().item()
        rows.append(ProbeRow(name, len(y_train), len(y_test), accuracy, majority, l2))
    return rows


def split_by_image(image_indices: np.ndarray, share: float, seed: int) -> np.ndarray:
    """[M] bool: True for the objects of a seeded random `share` of the images."""
    images = np.random.default_rng(seed).permutation(np.unique(image_indices))
    chosen = images[: max(1, round(share * len(images)))]
    return np.isin(image_indices, chosen)


def fit_softmax(
    features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: mean cross-entropy + l2/2 · |W|²."""
    weight = torch.zeros(features.shape[1], classes, requires_grad=True)  # [C, n]
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=MAX_ITERATIONS, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = functional.cross_entropy(features @ weight + bias, labels)
        value = value + 0.5 * l2 * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return weight.detach(), bias.detach()


def format_table(rows: list[ProbeRow], title: str = "") -> str:
    """attribute | n train | n test | probe accuracy | majority baseline."""
    lines = [title] if title else []
    lines.append(f"{'attribute':<10} {'n train':>8} {'n test':>7} {'probe':>7} {'majority':>9}")
    for row in rows:
        lines.append(
            f"{row.attribute:<10} {row.train_objects:>8} {row.test_objects:>7} "
            f"{row.accuracy:>7.3f} {row.majority:>9.3f}"
        )
    return "\n".join(lines)


def _choose_l2(
    features: torch.Tensor, labels: torch.Tensor, fit_part: np.ndarray, classes: int
) -> float:
    """The L2 weight with the lowest validation cross-entropy."""
    fit = torch.from_numpy(fit_part)  # [M_train]: fit on these, validate on the others
    if fit.all() or not fit.any():
        return L2_WEIGHTS[-1]
    losses = {}
    for l2 in L2_WEIGHTS:
        weight, bias = fit_softmax(features[fit], labels[fit], classes, l2)
        logits = features[~fit] @ weight + bias
        losses[l2] = functional.cross_entropy(logits, labels[~fit]).item()
    return min(losses, key=losses.__getitem__)
