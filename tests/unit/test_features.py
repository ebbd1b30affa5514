"""The extract stage end to end on tiny inputs: features, manifests, resume, verify, bad input."""

import dataclasses
import logging
import os
import shutil
import sys

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms import functional

import pipeline.vision.features
from pipeline.config import to_dict
from pipeline.data.shards import FeatureStore, read_manifest
from pipeline.devices import resolve_device
from pipeline.errors import ConfigError, DataError
from pipeline.vision.backbone import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from pipeline.vision.features import Extractor, extract_features, verify_features
from pipeline.vision.images import image_name
from tests.conftest import REAL_CLEVR_SAMPLE, write_pngs
from tests.conftest import tiny_extract_config as tiny_config
from tests.unit.test_features_images import png_claiming

REAL_IMAGES = str(REAL_CLEVR_SAMPLE / "images" / "test")


def shard_stats(root, split="train"):
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in (root / "features" / split).glob("*.h5")
    }


def test_features_match_a_direct_torchvision_forward(tmp_path):
    write_pngs(tmp_path, "train", 5)
    torch.manual_seed(5)
    resnet = torchvision.models.resnet18(weights=None).eval()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pt")
    config = tiny_config(tmp_path, weights=str(tmp_path / "resnet18.pt"), decode_workers=2)

    summary = extract_features(config)

    assert (summary.images, summary.reused) == (5, 0)
    manifest = read_manifest(tmp_path / "features" / "train" / "manifest.json")
    assert manifest["complete"] and manifest["pretrained"] and "warning" not in manifest
    assert manifest["feature_shape"] == [4, 4, 256] and manifest["grid_size"] == [4, 4]
    assert [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    store = FeatureStore(tmp_path / "features" / "train" / "manifest.json")
    ours = store.load_all()
    assert ours.shape == (5, 4, 4, 256) and ours.dtype == np.float16

    reference = create_feature_extractor(resnet, return_nodes={"layer3": "c4"})
    for index in range(5):
        image = Image.open(tmp_path / "images" / "train" / image_name("train", index))
        pixels = functional.to_tensor(image.resize((64, 64), Image.Resampling.BILINEAR))
        pixels = functional.normalize(pixels, IMAGENET_MEAN, IMAGENET_STD)
        with torch.no_grad():
            expected = reference(pixels[None])["c4"][0].permute(1, 2, 0).numpy()  # [h, w, C]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(
            ours[index].astype(np.float32), expected, rtol=2e-3, atol=2e-3 * scale
        )
        np.testing.assert_array_equal(store[index], ours[index])


def test_real_rgba_clevr_images_with_resnet101_at_224(tmp_path, caplog):
    folder = tmp_path / "images" / "test"
    folder.mkdir(parents=True)
    for index in range(2):
        shutil.copy(f"{REAL_IMAGES}/{image_name('test', index)}", folder)
    config = tiny_config(tmp_path, splits=("test",), backbone="resnet101", input_height=224)
    config = dataclasses.replace(config, input_width=224, weights="random", calibration_images=2)

    with caplog.at_level(logging.INFO, logger="snmn.extract"):
        extract_features(config)

    manifest = read_manifest(tmp_path / "features" / "test" / "manifest.json")
    assert manifest["pretrained"] is False and "NOT PRETRAINED" in manifest["warning"]
    assert "calibrated on 2 test images" in manifest["weights_description"]
    assert any("NOT PRETRAINED" in r.message and r.levelname == "WARNING" for r in caplog.records)
    features = FeatureStore(tmp_path / "features" / "test" / "manifest.json").load_all()
    assert features.shape == (2, 14, 14, 1024) and features.dtype == np.float16
    assert np.isfinite(features).all() and np.abs(features).max() < 1000
    assert not np.array_equal(features[0], features[1])
    megabytes_per_image = sum(s["bytes"] for s in manifest["shards"]) / 2 / 1e6
    assert megabytes_per_image <= 0.41
    assert (tmp_path / "features" / "backbone_random_calibrated.pt").is_file()


def test_rerun_keeps_finished_shards_and_redoes_a_corrupt_one(tmp_path):
    write_pngs(tmp_path, "train", 5)
    config = tiny_config(tmp_path, weights="random")
    extract_features(config)
    before = shard_stats(tmp_path)
    first = FeatureStore(tmp_path / "features" / "train" / "manifest.json").load_all()
    with open(tmp_path / "features" / "train" / "train_00001.h5", "ab") as handle:
        handle.write(b"corrupt")
    (tmp_path / "features" / "train" / ".train_00002.h5.partial").write_bytes(b"left by a kill")
    with pytest.raises(DataError, match="train_00001.h5"):
        verify_features(config)

    summary = extract_features(config)

    assert (summary.images, summary.reused) == (2, 3)
    after = shard_stats(tmp_path)
    assert after["train_00000.h5"] == before["train_00000.h5"]
    assert after["train_00002.h5"] == before["train_00002.h5"]
    assert after["train_00001.h5"] != before["train_00001.h5"]
    assert not list((tmp_path / "features" / "train").glob(".*"))
    assert verify_features(config) == 3
    again = FeatureStore(tmp_path / "features" / "train" / "manifest.json").load_all()
    np.testing.assert_array_equal(again, first)


def test_changed_settings_redo_every_shard(tmp_path):
    write_pngs(tmp_path, "train", 3)
    extract_features(tiny_config(tmp_path))
    summary = extract_features(tiny_config(tmp_path, input_height=96, input_width=96))
    assert (summary.images, summary.reused) == (3, 0)
    store = FeatureStore(tmp_path / "features" / "train" / "manifest.json")
    assert store.shape == (6, 6, 256)


def test_verify_command_exits_2_on_a_mismatch(tmp_path, monkeypatch, capsys):
    from stages import cli

    write_pngs(tmp_path, "val", 3)
    params = tmp_path / "params.yaml"
    params.write_text(
        f"extract:\n  images_dir: {tmp_path / 'images'}\n  output_dir: {tmp_path / 'features'}\n"
        "  splits: [val]\n  backbone: resnet18\n  input_height: 64\n  input_width: 64\n"
        "  shard_size: 2\n  decode_workers: 0\n  calibration_images: 2\n"
    )
    monkeypatch.setattr(sys, "argv", ["snmn", "extract", "--params", str(params)])
    cli.main()
    monkeypatch.setattr(sys, "argv", ["snmn", "extract", "--params", str(params), "--verify"])
    cli.main()  # everything matches: returns normally
    (tmp_path / "features" / "val" / "val_00001.h5").write_bytes(b"not hdf5")
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert "error: 1 feature problem(s); first: " in capsys.readouterr().err


def test_an_unreadable_png_names_the_file_and_keeps_finished_shards(tmp_path):
    folder = write_pngs(tmp_path, "train", 5)
    (folder / image_name("train", 3)).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    config = tiny_config(tmp_path, decode_workers=2, calibration_images=2)
    with pytest.raises(DataError) as error:
        extract_features(config)
    assert "CLEVR_train_000003.png (image_index 3): cannot decode PNG" in str(error.value)
    assert "\n" not in str(error.value)
    output = tmp_path / "features" / "train"
    assert sorted(p.name for p in output.iterdir()) == ["manifest.json", "train_00000.h5"]
    manifest = read_manifest(output / "manifest.json")
    assert not manifest["complete"] and [s["file"] for s in manifest["shards"]] == [
        "train_00000.h5"
    ]


def run_snmn(monkeypatch, capsys, *arguments):
    """`snmn *arguments` in this process: (exit status, stderr lines)."""
    from stages import cli

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["snmn", *map(str, arguments)])
    try:
        cli.main()
        status = 0
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err.splitlines()


def test_an_image_edited_in_place_at_the_same_size_is_extracted_again(
    tmp_path, monkeypatch, capsys
):
    folder = write_pngs(tmp_path, "train", 5)
    config = tiny_config(tmp_path, calibration_images=2)  # BatchNorm statistics: images 0, 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"extract": to_dict(config)}))
    assert run_snmn(monkeypatch, capsys, "extract", "--params", params)[0] == 0
    edited = folder / image_name("train", 3)
    replacement = write_pngs(tmp_path / "edited", "train", 5, seed=1) / image_name("train", 3)
    assert replacement.stat().st_size == edited.stat().st_size
    edited.write_bytes(replacement.read_bytes())  # same name, same size, other pixels

    status, err = run_snmn(monkeypatch, capsys, "extract", "--params", params, "--verify")

    shard = tmp_path / "features" / "train" / "train_00001.h5"
    assert status == 2
    assert err[-1] == (
        f"error: 1 feature problem(s); first: {shard}: images 2..3 changed since it was "
        "extracted (inputs sha256 differs); rerun `snmn extract`"
    )
    assert sum(line.startswith("error:") for line in err) == 1

    summary = extract_features(config)

    assert (summary.images, summary.reused) == (2, 3)
    assert run_snmn(monkeypatch, capsys, "extract", "--params", params, "--verify")[0] == 0
    clean = dataclasses.replace(config, output_dir=str(tmp_path / "clean"))
    extract_features(clean)
    expected = FeatureStore(tmp_path / "clean" / "train" / "manifest.json").load_all()
    again = FeatureStore(tmp_path / "features" / "train" / "manifest.json").load_all()
    np.testing.assert_array_equal(again, expected)


def test_a_decompression_bomb_png_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    folder = write_pngs(tmp_path, "train", 5)
    bomb = folder / image_name("train", 3)
    bomb.write_bytes(png_claiming(20000, 20000))
    params = tmp_path / "params.yaml"
    config = tiny_config(tmp_path, weights="random", calibration_images=2)
    params.write_text(yaml.safe_dump({"extract": to_dict(config)}))

    status, err = run_snmn(monkeypatch, capsys, "extract", "--params", params)

    assert status == 2
    assert err[-1] == (
        f"error: {bomb} (image_index 3): image is 20000×20000 pixels; each side must be 1..4096"
    )
    assert sum(line.startswith("error:") for line in err) == 1
    assert not any("Traceback" in line for line in err)


def test_gray_16_bit_and_odd_sized_pngs_are_converted(tmp_path):
    folder = tmp_path / "images" / "train"
    folder.mkdir(parents=True)
    gray = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint16)
    Image.fromarray(np.stack([gray.astype(np.uint8)] * 3, -1)).save(folder / image_name("train", 0))
    Image.fromarray(gray.astype(np.uint8)).save(folder / image_name("train", 1))
    Image.fromarray(gray * 257).save(folder / image_name("train", 2))
    Image.new("RGBA", (100, 30), (200, 10, 10, 255)).save(folder / image_name("train", 3))
    extract_features(tiny_config(tmp_path))
    features = FeatureStore(tmp_path / "features" / "train" / "manifest.json").load_all()
    np.testing.assert_array_equal(features[1], features[0])  # gray 8-bit == its RGB copy
    np.testing.assert_array_equal(features[2], features[0])  # 16-bit keeps the high byte
    assert features.shape == (4, 4, 4, 256)


def test_a_read_only_output_folder_is_a_clear_error(tmp_path, monkeypatch):
    write_pngs(tmp_path, "train", 2)
    output = tmp_path / "features"
    output.mkdir()
    output.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see a read-only folder
        monkeypatch.setattr(pipeline.vision.features.os, "access", lambda path, mode: False)
    try:
        with pytest.raises(ConfigError, match=f"{output}(/train)?[: ].*(writable|Permission)"):
            extract_features(tiny_config(tmp_path))
        assert [p for p in output.rglob("*") if p.is_file()] == []
    finally:
        output.chmod(0o755)


class Scaled(torch.nn.Module):
    """A backbone stand-in whose features are `scale` times the real ones."""

    def __init__(self, backbone, scale, fail_above=None):
        super().__init__()
        self.backbone, self.scale, self.fail_above, self.channels = backbone, scale, fail_above, 256
        self.calls = []

    def forward(self, images):
        self.calls.append(len(images))
        if self.fail_above is not None and len(images) > self.fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.backbone(images) * self.scale


def test_float16_overflow_is_an_error_not_inf():
    backbone, _ = build_backbone("resnet18", "random", seed=0)
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with pytest.raises(DataError, match="train images 0..1: features overflow torch.float16"):
        Extractor(Scaled(backbone, 1e6), torch.device("cpu"), "float16", 2)(
            images, "train images 0..1"
        )
    wide = Extractor(Scaled(backbone, 1e6), torch.device("cpu"), "float32", 2)(images, "x")
    assert wide.dtype == np.float32 and np.abs(wide).max() > 65504


def test_out_of_memory_halves_the_forward_batch(caplog):
    backbone, _ = build_backbone("resnet18", "random", seed=0)
    images = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    expected = Extractor(backbone, torch.device("cpu"), "float16", 8)(images, "x")
    flaky = Scaled(backbone, 1.0, fail_above=2)
    extractor = Extractor(flaky, torch.device("cpu"), "float16", 8)
    with caplog.at_level(logging.WARNING, logger="snmn.extract"):
        features = extractor(images, "x")
    scale = np.abs(expected).max()  # CPU kernels differ slightly with the batch size
    np.testing.assert_allclose(features, expected, rtol=1e-2, atol=1e-2 * scale)
    assert extractor.forward_batch == 2 and flaky.calls == [5, 4, 2, 2, 1]
    assert "forward batch halved to 4" in caplog.text and "halved to 2" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when there is no GPU")
def test_asking_for_cuda_without_one_is_a_config_error():
    with pytest.raises(ConfigError, match="extract.device"):
        resolve_device("cuda", "extract.device")
    assert resolve_device("auto", "extract.device").type == "cpu"
