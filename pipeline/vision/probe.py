"""A linear probe: can a linear classifier read each object's attributes off the features?

Before spending GPU hours on "Is the large rubber cube the same colour as the cylinder?", check
that the features see colour, shape, material and size at all. For every object of a scenes
file, the feature cell under its centre (pixel_coords mapped to the grid) is one sample. The
images are dealt (seeded) into 5 folds, so no image is on both sides of a split; for each fold a
softmax classifier per attribute is fit with L-BFGS on the standardised features of the other
four (its L2 weight chosen once, on a held-out part of those images) and scores the fold's
objects. A scene whose image has no features (features extracted from a subset of the split) is
skipped and counted (`ObjectCells.skipped_scenes`, in the stage's table and JSON). Every object is
thus scored once (on mini-CLEVR val ~1,300 objects: a standard error of
~0.4 points at 98 %, against ~0.7 for one 70/30 split), next to the majority-class baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional

from pipeline.clevr.readers import read_scenes
from pipeline.data.shards import FeatureStore
from pipeline.errors import DataError
from pipeline.vision.pretrain import ATTRIBUTES, attribute_indices, centre_cell

L2_WEIGHTS = (1e-3, 1e-2, 1e-1, 1.0)  # tried on a validation part of the training images
MAX_ITERATIONS = 200


@dataclass(frozen=True)
class ObjectCells:
    """One sample per object: its centre cell's features and its attribute indices."""

    features: np.ndarray  # [M, C] float32
    labels: np.ndarray  # [M, 4] colour, shape, material, size
    image_indices: np.ndarray  # [M]
    skipped_scenes: int = 0  # scenes whose image has no features


@dataclass(frozen=True)
class ProbeRow:
    attribute: str
    objects: int  # each scored once, by the probe fit on the other folds' images
    images: int
    folds: int
    accuracy: float
    majority: float  # predicting the most common class of the other folds
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
    scenes = read_scenes(scenes_path)
    with_features = np.isin([scene.image_index for scene in scenes], store.image_indices)
    for scene in (scene for scene, kept in zip(scenes, with_features, strict=True) if kept):
        where = f"{scenes_path}: scene {scene.index} (image_index {scene.image_index})"
        if scene.split != store.manifest["split"]:
            raise DataError(
                f"{where}: split {scene.split!r}, but {manifest_path} holds split "
                f"{store.manifest['split']!r}"
            )
        grid = store[scene.image_index]  # [h, w, C]
        for obj in scene.objects:
            row, col = centre_cell(obj.pixel_coords[0], obj.pixel_coords[1], image_size, input_size)
            features.append(np.asarray(grid[row, col], dtype=np.float32))
            images.append(scene.image_index)
        labels.append(attribute_indices(scene, where))
    store.close()
    if not features:
        raise DataError(
            f"{scenes_path}: no objects to probe ({int((~with_features).sum())} of "
            f"{len(scenes)} scenes have no features in {manifest_path})"
        )
    skipped = int((~with_features).sum())
    return ObjectCells(np.stack(features), np.concatenate(labels), np.array(images), skipped)


def probe(cells: ObjectCells, folds: int = 5, seed: int = 0) -> list[ProbeRow]:
    """Per attribute: cross-validated accuracy of a softmax probe and of the majority class.
    Runs on one thread: thousands of small L-BFGS steps gain nothing from more."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe(cells, folds, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _probe(cells: ObjectCells, folds: int, seed: int) -> list[ProbeRow]:
    images = len(np.unique(cells.image_indices))
    if folds < 2 or images < folds:
        raise DataError(f"probe: {images} image(s) cannot be split into {folds} folds (need >= 2)")
    fold = fold_by_image(cells.image_indices, folds, seed)  # [M]
    standard = [_standardise(cells.features, fold != k) for k in range(folds)]  # each [M, C]
    rows = []
    for a, name in enumerate(ATTRIBUTES):
        labels = torch.from_numpy(cells.labels[:, a])  # [M]
        classes = int(labels.max()) + 1
        l2 = _choose_l2(standard[0], labels, cells.image_indices, fold, classes, seed)
        correct = majority_correct = 0
        for k in range(folds):
            train, test = torch.from_numpy(fold != k), torch.from_numpy(fold == k)
            weight, bias = fit_softmax(standard[k][train], labels[train], classes, l2)
            predicted = (standard[k][test] @ weight + bias).argmax(dim=1)
            correct += (predicted == labels[test]).sum().item()
            most_common = torch.bincount(labels[train], minlength=classes).argmax()
            majority_correct += (labels[test] == most_common).sum().item()
        count = len(labels)
        rows.append(
            ProbeRow(name, count, images, folds, correct / count, majority_correct / count, l2)
        )
    return rows


def fold_by_image(image_indices: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """[M] fold of each object: the images, in a seeded random order, dealt out to the folds."""
    images = np.random.default_rng(seed).permutation(np.unique(image_indices))
    fold_of_image = dict(zip(images.tolist(), np.arange(len(images)) % folds, strict=True))
    return np.array([fold_of_image[index] for index in image_indices.tolist()], dtype=np.int64)


def _standardise(features: np.ndarray, fit: np.ndarray) -> torch.Tensor:
    """[M, C] features minus the mean, over the std, of the `fit` rows (the training folds)."""
    mean = features[fit].mean(axis=0)
    std = features[fit].std(axis=0) + 1e-6
    return torch.from_numpy((features - mean) / std)


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
    """attribute | objects | images | folds | probe accuracy | majority baseline."""
    lines = [title] if title else []
    lines.append(
        f"{'attribute':<10} {'objects':>8} {'images':>7} {'folds':>6} {'probe':>7} {'majority':>9}"
    )
    for row in rows:
        lines.append(
            f"{row.attribute:<10} {row.objects:>8} {row.images:>7} {row.folds:>6} "
            f"{row.accuracy:>7.3f} {row.majority:>9.3f}"
        )
    return "\n".join(lines)


def _choose_l2(
    features: torch.Tensor,
    labels: torch.Tensor,
    image_indices: np.ndarray,
    fold: np.ndarray,
    classes: int,
    seed: int,
) -> float:
    """The L2 weight with the lowest cross-entropy on a quarter of fold 0's training images when
    fit on the other three quarters (fold 0 itself is not looked at); used for every fold."""
    training = np.flatnonzero(fold != 0)  # [M_train] object positions
    inner = fold_by_image(image_indices[training], 4, seed + 1)  # [M_train]
    fit, check = torch.from_numpy(training[inner != 0]), torch.from_numpy(training[inner == 0])
    losses = {}
    for l2 in L2_WEIGHTS:
        weight, bias = fit_softmax(features[fit], labels[fit], classes, l2)
        logits = features[check] @ weight + bias
        losses[l2] = functional.cross_entropy(logits, labels[check]).item()
    return min(losses, key=losses.__getitem__)
