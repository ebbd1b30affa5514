"""The linear probe: separable features score ~1, noise scores ~the majority class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.errors import DataError
from pipeline.vision.probe import ObjectCells, fold_by_image, format_table, object_cells, probe
from tests.conftest import generate_scenes, tiny_extract_config


def synthetic_cells(separable: bool, images: int = 60, per_image: int = 5) -> ObjectCells:
    """Objects with skewed labels (70% class 0) and 32-d features that show them or not."""
    rng = np.random.default_rng(0)
    count = images * per_image
    classes = (8, 3, 2, 2)
    labels = np.stack(
        [np.where(rng.random(count) < 0.7, 0, rng.integers(1, n, count)) for n in classes], axis=1
    )  # [M, 4]
    features = rng.normal(size=(count, 32)).astype(np.float32)
    if separable:
        offset = 0
        for a, n in enumerate(classes):
            features[np.arange(count), offset + labels[:, a]] += 6.0
            offset += n
    return ObjectCells(features, labels, np.repeat(np.arange(images), per_image))


def test_separable_features_are_read_perfectly() -> None:
    rows = probe(synthetic_cells(separable=True))
    assert [row.attribute for row in rows] == ["color", "shape", "material", "size"]
    for row in rows:
        assert row.accuracy >= 0.97, row
        assert row.majority < 0.85
        assert (row.objects, row.images, row.folds) == (300, 60, 5)
    assert "probe" in format_table(rows) and "color" in format_table(rows)


def test_noise_scores_about_the_majority_class() -> None:
    for row in probe(synthetic_cells(separable=False)):
        assert abs(row.accuracy - row.majority) <= 0.1, row
        assert row.accuracy < 0.85, row


def test_folds_are_by_image_and_seeded() -> None:
    images = np.repeat(np.arange(50), 4)
    fold = fold_by_image(images, 5, seed=3)
    assert np.bincount(fold).tolist() == [40] * 5
    for k in range(5):
        assert not set(images[fold == k]) & set(images[fold != k])
    assert (fold_by_image(images, 5, seed=3) == fold).all()
    assert not (fold_by_image(images, 5, seed=4) == fold).all()


def test_too_few_images_for_the_folds_is_a_clear_error() -> None:
    cells = synthetic_cells(separable=True, images=3)
    with pytest.raises(DataError, match="3 image\\(s\\) cannot be split into 5 folds"):
        probe(cells)


@pytest.fixture(scope="module")
def val_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scenes of 6 train and 8 val images, and random ResNet-18 features of val at 64×96."""
    from pipeline.vision.features import extract_features

    root = tmp_path_factory.mktemp("probe")
    images = generate_scenes(root / "mini-clevr", train=6, val=8)
    extract_features(
        tiny_extract_config(
            images,
            output_dir=str(root / "features"),
            splits=("val",),
            input_width=96,
            shard_size=512,
            batch_size=16,
            calibration_images=8,
        )
    )
    return root


def test_object_cells_pick_each_objects_centre_cell(val_features: Path) -> None:
    from pipeline.clevr.readers import read_scenes
    from pipeline.data.shards import FeatureStore

    manifest = val_features / "features" / "val" / "manifest.json"
    scenes_path = val_features / "mini-clevr" / "scenes" / "CLEVR_val_scenes.json"
    cells = object_cells(manifest, scenes_path)
    scenes = read_scenes(scenes_path)
    assert len(cells.features) == sum(len(scene.objects) for scene in scenes)
    assert cells.features.shape[1] == 256 and cells.labels.shape[1] == 4
    first = scenes[0].objects[0]
    x, y = first.pixel_coords[:2]  # 480×320 image → 96×64 input → 6×4 grid of 16-px cells
    expected = FeatureStore(manifest)[0][int(y * 64 / 320 // 16), int(x * 96 / 480 // 16)]
    np.testing.assert_array_equal(cells.features[0], expected.astype(np.float32))


def test_probe_command_prints_the_table(val_features: Path, tmp_path: Path) -> None:
    from stages.probe_features import command

    manifest = val_features / "features" / "val" / "manifest.json"
    scenes_path = val_features / "mini-clevr" / "scenes" / "CLEVR_val_scenes.json"
    output = tmp_path / "probe.json"
    arguments = ["--manifest", str(manifest), "--scenes", str(scenes_path), "--output", output]
    result = CliRunner().invoke(command, [str(argument) for argument in arguments])
    assert result.exit_code == 0, result.output
    assert "majority" in result.output and "material" in result.output
    assert output.is_file()


def test_bad_inputs_name_the_file(val_features: Path, tmp_path: Path) -> None:
    manifest = val_features / "features" / "val" / "manifest.json"
    with pytest.raises(DataError, match=r"nowhere\.json: scenes file not found"):
        object_cells(manifest, tmp_path / "nowhere.json")
    train_scenes = val_features / "mini-clevr" / "scenes" / "CLEVR_train_scenes.json"
    with pytest.raises(DataError, match="split 'train', but .* holds split 'val'"):
        object_cells(manifest, train_scenes)
    with pytest.raises(DataError, match="manifest not found"):
        object_cells(tmp_path / "manifest.json", train_scenes)
