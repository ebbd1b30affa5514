"""The truncated ResNet: grid sizes, channels, seeds, weight files, missing ImageNet weights."""

import urllib.error

import pytest
import torch
import torchvision

from pipeline.errors import ConfigError
from pipeline.vision.backbone import (
    build_backbone,
    calibrate_batchnorm,
    grid_size,
    state_digest,
)


def test_grid_size_follows_stride_16():
    assert grid_size(224, 224) == (14, 14)
    assert grid_size(320, 480) == (20, 30)
    assert grid_size(64, 64) == (4, 4)


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 256), ("resnet50", 1024)])
def test_output_is_c4_of_the_resized_input(name, channels):
    backbone, info = build_backbone(name, "random", seed=0)
    images = torch.randint(0, 256, (2, 40, 60, 3), dtype=torch.uint8)  # [B, H, W, 3]
    with torch.no_grad():
        features = backbone(images[:, :32, :48])
    assert features.shape == (2, channels, *grid_size(32, 48))
    assert not info.pretrained and not backbone.training


def test_random_weights_follow_the_seed():
    first, _ = build_backbone("resnet18", "random", seed=3)
    again, _ = build_backbone("resnet18", "random", seed=3)
    other, _ = build_backbone("resnet18", "random", seed=4)
    assert state_digest(first) == state_digest(again) != state_digest(other)


def test_full_and_truncated_state_dicts_both_load(tmp_path):
    torch.manual_seed(7)
    full = torchvision.models.resnet18(weights=None)
    torch.save(full.state_dict(), tmp_path / "full.pt")
    backbone, info = build_backbone("resnet18", str(tmp_path / "full.pt"), seed=0)
    assert info.pretrained and info.source == str(tmp_path / "full.pt")
    torch.testing.assert_close(backbone.trunk.layer3[1].conv2.weight, full.layer3[1].conv2.weight)
    torch.save(backbone.trunk.state_dict(), tmp_path / "trunk.pt")
    reloaded, _ = build_backbone("resnet18", str(tmp_path / "trunk.pt"), seed=1)
    assert state_digest(reloaded) == state_digest(backbone)


def test_weight_files_that_do_not_fit_are_config_errors(tmp_path):
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(ConfigError, match="r34.pt does not fit resnet18 up to layer3"):
        build_backbone("resnet18", str(tmp_path / "r34.pt"), seed=0)
    with pytest.raises(ConfigError, match="imagnet: file not found .*'imagenet', 'random'"):
        build_backbone("resnet18", "imagnet", seed=0)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="junk.pt: not a loadable state_dict"):
        build_backbone("resnet18", str(tmp_path / "junk.pt"), seed=0)


def test_imagenet_without_network_is_one_line_saying_what_to_do(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ConfigError) as error:
        build_backbone("resnet18", "imagenet", seed=0)
    message = str(error.value)
    assert "\n" not in message
    assert "Name or service not known" in message
    assert "put resnet18-f37072fd.pth (from https://" in message
    assert f"into {tmp_path}/checkpoints/" in message
    assert "a state_dict file path or to 'random'" in message


def test_imagenet_weights_from_the_cache_load(monkeypatch, tmp_path):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: state)
    backbone, info = build_backbone("resnet18", "imagenet", seed=0)
    assert info.pretrained and "IMAGENET1K_V1" in info.description
    torch.testing.assert_close(backbone.trunk.conv1.weight, state["conv1.weight"])


def test_batchnorm_calibration_tames_random_resnet101():
    backbone, _ = build_backbone("resnet101", "random", seed=0)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=generator)
    with torch.no_grad():
        before = backbone(images).abs().max().item()
        seen = calibrate_batchnorm(backbone, [images[:2], images[2:]])
        after = backbone(images).abs().max().item()
    assert seen == 4 and not backbone.training
    assert after < before / 20 and after < 1000  # before: thousands, after: tens
