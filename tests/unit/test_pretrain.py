"""Backbone pretraining on the train scenes: cell labels, weights file, determinism, resumption."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.clevr.readers import Scene, SceneObject
from pipeline.clevr.render import run_lengths
from pipeline.clevr.world import VALUES
from pipeline.config import ExtractConfig, PretrainConfig
from pipeline.errors import ConfigError, DataError
from pipeline.vision.backbone import build_backbone
from pipeline.vision.pretrain import (
    CENTRE_SHARE,
    CLASSES,
    EMPTY,
    HEADS,
    build_networks,
    cell_loss,
    cell_targets,
    check_extract_settings,
    jitter_photometry,
    mirror_some,
    pretrain_backbone,
)
from tests.conftest import generate_scenes


@pytest.fixture(scope="module")
def scenes_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train and 4 val mini-CLEVR images with scenes (boxes and masks)."""
    return generate_scenes(tmp_path_factory.mktemp("pretrain") / "mini-clevr", train=16, val=4)


def tiny_config(data: Path, out: Path, **overrides: object) -> PretrainConfig:
    values = {
        "images_dir": str(data / "images"),
        "scenes_dir": str(data / "scenes"),
        "output_path": str(out / "backbone.pt"),
        "metrics_path": str(out / "pretrain.json"),
        "curve_path": str(out / "curve.csv"),
        "input_height": 64,
        "input_width": 64,
        "epochs": 1,
        "batch_size": 8,
        "holdout_images": 4,
        "log_every": 1,
        "torch_threads": 1,
        **overrides,
    }
    return PretrainConfig(**values)  # type: ignore[arg-type]


def make_object(color: str, shape: str, size: str, x: float, y: float, depth: float = 10.0):
    return SceneObject(
        shape=shape,
        color=color,
        material="metal",
        size=size,
        coords_3d=(0.0, 0.0, 0.0),
        pixel_coords=(x, y, depth),
        rotation=0.0,
        bbox=None,
    )


def make_scene(objects: list[SceneObject], ids: np.ndarray | None) -> Scene:
    """A 64×64 scene; `ids` ([64, 64], 0 ground, k + 1 object k) becomes its masks."""
    no_relations = {name: tuple(() for _ in objects) for name in ("left", "right", "front")}
    return Scene(
        index=0,
        split="train",
        image_index=0,
        image_filename="CLEVR_train_000000.png",
        objects=tuple(objects),
        relationships={**no_relations, "behind": tuple(() for _ in objects)},
        directions={},
        masks=None if ids is None else tuple(run_lengths(ids, len(objects))),
    )


def test_mask_cells_get_their_objects_attributes() -> None:
    ids = np.zeros((64, 64), dtype=np.uint8)
    ids[0:32, 0:32] = 1  # a large red cube over the four top-left cells of the 4×4 grid
    ids[52:58, 52:58] = 2  # a small cyan sphere: 6×6 pixels, 14% of its cell, centre inside
    objects = [
        make_object("red", "cube", "large", 16, 16),
        make_object("cyan", "sphere", "small", 55, 55),
    ]
    scene = make_scene(objects, ids)
    labels, weights = cell_targets(scene, (64, 64), (64, 64), 0.25, "test")  # [5, 4, 4], [4, 4]
    cube = [1, VALUES["color"].index("red"), 0, VALUES["material"].index("metal"), 1]
    sphere = [1, VALUES["color"].index("cyan"), VALUES["shape"].index("sphere"), 1, 0]
    assert labels.shape == (5, 4, 4)
    for row, col in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        assert labels[:, row, col].tolist() == cube
    assert labels[:, 3, 3].tolist() == sphere
    empty = np.ones((4, 4), dtype=bool)
    empty[0:2, 0:2] = empty[3, 3] = False
    assert (labels[0][empty] == 0).all() and (labels[1:, empty] == EMPTY).all()
    # Each object weighs 1; the cube's centre (16, 16) is in cell (1, 1) and holds CENTRE_SHARE.
    assert weights[3, 3] == 1.0 and weights[1, 1] == CENTRE_SHARE
    assert weights[0, 0] == weights[0, 1] == weights[1, 0] == pytest.approx((1 - CENTRE_SHARE) / 3)
    assert weights.sum() == pytest.approx(2.0) and (weights[empty] == 0).all()


def test_attribute_losses_follow_the_cell_weights() -> None:
    """A colour mistake costs its cell's share of the weight: on a cell weighing 1/2 it costs
    twice as much as on one weighing 1/4, and nothing on an empty cell."""
    labels = torch.zeros(1, len(HEADS), 2, 2, dtype=torch.int8)  # [1, 5, 2, 2]: index 0 ...
    labels[0, 0] = 1  # ... of every attribute, on object cells, but
    labels[0, :, 1, 1] = EMPTY
    labels[0, 0, 1, 1] = 0  # cell (1, 1) is empty
    weights = torch.tensor([[[0.5, 0.25], [0.25, 0.0]]])  # [1, 2, 2]

    def loss_with_wrong_colour(row: int, col: int) -> float:
        logits = [torch.zeros(1, n, 2, 2) for n in CLASSES.values()]
        logits[0][:, 1] = 10.0
        logits[0][0, :, 1, 1] = torch.tensor([10.0, 0.0])  # object / empty: right everywhere
        for head in logits[1:]:
            head[:, 0] = 10.0  # attribute index 0 everywhere: right ...
        logits[1][0, 0, row, col] = -10.0  # ... except the colour on one cell
        return cell_loss(logits, labels, weights).item()

    base = loss_with_wrong_colour(1, 1)  # the empty cell: not counted
    heavy, light = loss_with_wrong_colour(0, 0) - base, loss_with_wrong_colour(0, 1) - base
    assert base < 1e-3 and heavy == pytest.approx(2 * light, rel=1e-3) and light > 1.0


def test_mirrored_images_keep_their_labels_on_the_same_pixels() -> None:
    """A red block in the left-most cell column: wherever it ends up, its label goes with it."""
    images = torch.zeros(8, 32, 48, 3, dtype=torch.uint8)  # [B, H, W, 3] → a 2×3 grid
    images[:, :, :16, 0] = 255  # red in column 0
    labels = torch.zeros(8, len(HEADS), 2, 3, dtype=torch.int8)
    labels[:, 1, :, 0] = 3  # colour 3 in column 0
    weights = torch.zeros(8, 2, 3)
    weights[:, :, 0] = 0.5
    generator = torch.Generator().manual_seed(0)
    mirrored, new_labels, new_weights = mirror_some(images, labels, weights, generator)
    flipped = mirrored[:, 0, -1, 0] == 255  # [B] red now in the right-most pixel
    assert 0 < flipped.sum() < 8  # some images, not all
    assert (new_labels[flipped, 1, :, 2] == 3).all() and (new_labels[~flipped, 1, :, 0] == 3).all()
    assert (new_weights[flipped, :, 2] == 0.5).all() and (new_weights[~flipped, :, 0] == 0.5).all()
    assert torch.equal(images[:, :, :16, 0], torch.full((8, 32, 16), 255, dtype=torch.uint8))


def test_photometric_jitter_changes_the_light_but_not_the_colour_names() -> None:
    """A red cube on a grey ground, lit differently in each copy: still red on grey."""
    images = torch.full((16, 32, 48, 3), 128, dtype=torch.uint8)  # [B, H, W, 3] grey ground
    images[:, 8:24, 16:32] = torch.tensor([173, 35, 35], dtype=torch.uint8)  # CLEVR red
    jittered = jitter_photometry(images, 0.3, torch.Generator().manual_seed(0))
    again = jitter_photometry(images, 0.3, torch.Generator().manual_seed(0))
    assert jittered.shape == images.shape and jittered.dtype == torch.float32
    assert torch.equal(jittered, again)  # the seed decides
    assert 0 <= jittered.min() and jittered.max() <= 255
    grounds = jittered[:, 2, 2].mean(dim=-1)  # [B] each copy's ground brightness
    assert grounds.max() - grounds.min() > 20  # each image its own light
    cube = jittered[:, 16, 24]  # [B, 3] the cube's centre, away from blurred edges
    assert (cube.argmax(dim=-1) == 0).all() and (cube[:, 0] > 2 * cube[:, 1]).all()
    grey = jittered[:, 2, 2]  # [B, 3]
    assert (grey.max(dim=-1).values - grey.min(dim=-1).values < 1).all()  # grey stays grey
    red = jittered[..., 0]  # [B, H, W]
    bleed = (red[:, 16, 15] - red[:, 16, 2]) / (red[:, 16, 24] - red[:, 16, 2])  # [B] 0: sharp
    assert 0 < (bleed > 0.05).sum() < 16  # about half the copies blurred


def test_pixel_coords_give_a_disc_when_masks_are_absent() -> None:
    # A large object at depth 4 projects to a disc of radius ~12 px on a 64-px-wide image:
    # centred on the corner of four cells, it covers 44% of each.
    scene = make_scene([make_object("blue", "cylinder", "large", 32, 32, depth=4.0)], None)
    labels, _ = cell_targets(scene, (64, 64), (64, 64), 0.25, "test")
    assert labels[0].sum() == 4
    for row, col in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        assert labels[1, row, col] == VALUES["color"].index("blue")
        assert labels[2, row, col] == VALUES["shape"].index("cylinder")
    assert labels[0, 3, 3] == 0 and labels[1, 3, 3] == EMPTY
    small = make_scene([make_object("blue", "cylinder", "small", 40, 40, depth=4.0)], None)
    labels, weights = cell_targets(small, (64, 64), (64, 64), 0.25, "test")
    assert labels[0].sum() == 1 and weights[2, 2] == 1.0  # the centre cell only


def test_bad_scene_values_are_data_errors() -> None:
    ids = np.zeros((64, 64), dtype=np.uint8)
    ids[0:8, 0:8] = 1
    with pytest.raises(DataError, match="test: object 0: unknown color 'pink'"):
        cell_targets(
            make_scene([make_object("pink", "cube", "large", 4, 4)], ids),
            (64, 64),
            (64, 64),
            0.25,
            "test",
        )
    scene = make_scene([make_object("red", "cube", "large", 4, 4)], ids)
    with pytest.raises(DataError, match="obj_mask of object 0: covers 4096 pixels, image has 2048"):
        cell_targets(scene, (32, 64), (64, 64), 0.25, "test")


def test_weights_load_through_the_extractors_file_option(scenes_data: Path, tmp_path: Path) -> None:
    summary = pretrain_backbone(tiny_config(scenes_data, tmp_path))
    backbone, info = build_backbone("resnet18", str(tmp_path / "backbone.pt"), seed=5)
    assert info.pretrained and info.source == str(tmp_path / "backbone.pt")
    with torch.no_grad():
        features = backbone(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))
    assert features.shape == (2, 256, 4, 4) and torch.isfinite(features).all()
    metrics = json.loads((tmp_path / "pretrain.json").read_text())
    assert metrics["train_images"] == 12 and metrics["holdout_images"] == 4
    assert set(metrics["holdout_accuracy"]) == {"object", "color", "shape", "material", "size"}
    assert summary.holdout_accuracy == pytest.approx(metrics["holdout_accuracy"], abs=1e-4)
    with open(tmp_path / "curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[-1]["step"] == "2"  # 12 images, batch 8: two steps
    assert not list(tmp_path.glob(".*"))  # no checkpoint or temporary file left


def test_same_seed_same_weights_and_a_killed_run_resumes_to_them(
    scenes_data: Path, tmp_path: Path
) -> None:
    def weights(out: Path) -> dict[str, torch.Tensor]:
        return torch.load(out / "backbone.pt", weights_only=True)

    config = tiny_config(scenes_data, tmp_path / "a", epochs=2)
    pretrain_backbone(config)
    pretrain_backbone(replace(config, output_path=str(tmp_path / "b" / "backbone.pt")))
    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)

    class Killed(Exception):
        pass

    def kill(epoch: int) -> None:
        raise Killed

    killed = tiny_config(scenes_data, tmp_path / "c", epochs=2)
    with pytest.raises(Killed):
        pretrain_backbone(killed, on_epoch_end=kill)
    assert not (tmp_path / "c" / "backbone.pt").exists()
    assert (tmp_path / "c" / ".backbone.pt.checkpoint").is_file()
    pretrain_backbone(killed)
    resumed = weights(tmp_path / "c")
    assert all(torch.equal(first[key], resumed[key]) for key in first)
    other_seed = tiny_config(scenes_data, tmp_path / "d", seed=1)
    pretrain_backbone(other_seed)
    assert not torch.equal(first["conv1.weight"], weights(tmp_path / "d")["conv1.weight"])


def test_never_reads_val_or_test(scenes_data: Path, tmp_path: Path) -> None:
    """Garbage in every val image and val scene file changes nothing."""
    spoiled = tmp_path / "spoiled"
    shutil.copytree(scenes_data, spoiled)
    for path in (spoiled / "images" / "val").iterdir():
        path.write_bytes(b"not a png")
    (spoiled / "scenes" / "CLEVR_val_scenes.json").write_text("{")
    (spoiled / "images" / "test").mkdir(exist_ok=True)
    clean = tiny_config(scenes_data, tmp_path / "clean", max_images=8, holdout_images=2)
    pretrain_backbone(clean)
    pretrain_backbone(
        replace(
            clean,
            images_dir=str(spoiled / "images"),
            scenes_dir=str(spoiled / "scenes"),
            output_path=str(tmp_path / "spoiled.pt"),
        )
    )
    expected = torch.load(tmp_path / "clean" / "backbone.pt", weights_only=True)
    actual = torch.load(tmp_path / "spoiled.pt", weights_only=True)
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_missing_scenes_and_bad_settings_are_clear_errors(
    scenes_data: Path, tmp_path: Path
) -> None:
    missing = tiny_config(scenes_data, tmp_path, scenes_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere/CLEVR_train_scenes\.json: scenes file not found"):
        pretrain_backbone(missing)
    with pytest.raises(ConfigError, match="pretrain.holdout_images: 16 leaves no training images"):
        pretrain_backbone(tiny_config(scenes_data, tmp_path, holdout_images=16))
    with pytest.raises(ConfigError, match="pretrain.min_coverage"):
        tiny_config(scenes_data, tmp_path, min_coverage=0.0)
    with pytest.raises(ConfigError, match="input_width 72 is not a multiple of 16"):
        pretrain_backbone(tiny_config(scenes_data, tmp_path, input_width=72))
    pretrain = tiny_config(scenes_data, tmp_path)
    extract = ExtractConfig(weights=pretrain.output_path, backbone="resnet18", input_height=224)
    with pytest.raises(ConfigError, match="extract.input_height 224 differs from pretrain"):
        check_extract_settings(pretrain, extract)
    check_extract_settings(pretrain, replace(extract, weights="random"))  # unrelated: fine
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="pretrain.device: 'cuda' requested"):
            build_networks(replace(pretrain, device="cuda"), total_steps=1)


def test_stage_command_trains_from_params(scenes_data: Path, tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from pipeline.config import to_dict
    from stages.pretrain_backbone import command

    pretrain = to_dict(tiny_config(scenes_data, tmp_path))
    extract = {"backbone": "resnet18", "weights": pretrain["output_path"], "input_height": 64}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pretrain": pretrain, "extract": extract}))
    result = CliRunner().invoke(command, ["--params", str(params)])
    assert isinstance(result.exception, ConfigError)  # extract.input_width 224 differs
    extract["input_width"] = 64
    params.write_text(yaml.safe_dump({"pretrain": pretrain, "extract": extract}))
    result = CliRunner().invoke(command, ["--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "pretrain-backbone:" in result.output and (tmp_path / "backbone.pt").is_file()


@pytest.mark.parametrize(
    ("asked", "device", "has_amx", "expected"),
    [
        ("auto", "cpu", False, "float32"),  # AVX-512 without AMX: bfloat16 is the slower one
        ("auto", "cpu", True, "bfloat16"),
        ("auto", "cuda", False, "bfloat16"),
        ("bfloat16", "cpu", False, "bfloat16"),  # asked for: kept
        ("float32", "cpu", True, "float32"),
    ],
)
def test_auto_precision_is_bfloat16_only_where_it_is_faster(
    monkeypatch, asked: str, device: str, has_amx: bool, expected: str
) -> None:
    from pipeline.devices import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: has_amx, raising=False)
    assert resolve_precision(asked, torch.device(device)) == expected
