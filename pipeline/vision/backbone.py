"""The image encoder: a torchvision ResNet cut after `layer3` (C4, stride 16).

For "Is the red sphere left of the cube?" every module of the SNMN attends over a grid of image
features: a 224×224 image becomes 14×14 cells of 1024 numbers (ResNet-50/101) or 256 (18/34).
`ConvFourBackbone` takes decoded uint8 RGB images [B, H, W, 3], normalises them with the ImageNet
mean/std the torchvision weights were trained with, and returns [B, C, H/16, W/16].

Weights (extract.weights):
- `imagenet`: torchvision's IMAGENET1K_V1 weights (the classic release that earlier SNMN ports
  used), downloaded once into torch's hub cache; without network a one-line ConfigError says
  where to put the file or which other option to choose.
- a file path: a state_dict of the truncated backbone or of a full torchvision ResNet (layer4/fc
  are ignored), loaded with weights_only=True.
- `random`: initialised deterministically from the seed. Such features are NOT pretrained; their
  BatchNorm statistics must be calibrated on real images (`calibrate_batchnorm`) or layer3
  activations reach ~1e5 and overflow float16.
"""

from __future__ import annotations

import hashlib
import math
import socket
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 16  # layer3 output = input / 16 (rounded up)
TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
CHANNELS = {"resnet18": 256, "resnet34": 256, "resnet50": 1024, "resnet101": 1024}
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WeightsInfo:
    """Where the backbone's weights came from, as the manifest records it."""

    source: str  # "imagenet" | "random" | the file path
    description: str  # e.g. "torchvision ResNet101_Weights.IMAGENET1K_V1"
    pretrained: bool


class ConvFourBackbone(nn.Module):
    """uint8 RGB images [B, H, W, 3] → ResNet C4 features [B, C, ceil(H/16), ceil(W/16)]."""

    def __init__(self, resnet: torchvision.models.ResNet, name: str) -> None:
        super().__init__()
        self.name = name
        self.channels = CHANNELS[name]
        self.trunk = nn.Sequential(OrderedDict((part, getattr(resnet, part)) for part in TRUNK))
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).float()  # [B, 3, H, W], channels-last in memory
        pixels = ((pixels - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.trunk(pixels)  # [B, C, H/16, W/16]


def grid_size(height: int, width: int) -> tuple[int, int]:
    """Feature grid of a height×width input: 224×224 → 14×14, 320×480 → 20×30."""
    return math.ceil(height / STRIDE), math.ceil(width / STRIDE)


def build_backbone(name: str, weights: str, seed: int) -> tuple[ConvFourBackbone, WeightsInfo]:
    """The truncated ResNet `name` with `weights` (imagenet | random | file path), in eval mode."""
    if name not in CHANNELS:
        raise ConfigError(f"extract.backbone: expected one of {sorted(CHANNELS)}, got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = ConvFourBackbone(getattr(torchvision.models, name)(weights=None), name)
    if weights == "random":
        info = WeightsInfo("random", f"random init, seed {seed}", pretrained=False)
    elif weights == "imagenet":
        info = _load_imagenet(backbone)
    else:
        info = _load_file(backbone, Path(weights))
    return backbone.eval(), info


def state_digest(backbone: ConvFourBackbone) -> str:
    """sha256 of every weight and BatchNorm statistic: equal digests, equal features."""
    digest = hashlib.sha256()
    for key, tensor in backbone.trunk.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def calibrate_batchnorm(backbone: ConvFourBackbone, batches: Iterable[torch.Tensor]) -> int:
    """Re-estimate every BatchNorm's running mean/var as the average over `batches` of uint8
    images (one pass in train mode), so random-init features stay far below float16's 65,504.
    Returns the number of images seen."""
    norms = [module for module in backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    backbone.train()
    seen = 0
    for images in batches:
        backbone(images)
        seen += len(images)
    for norm in norms:
        norm.momentum = 0.1
    backbone.eval()
    return seen


def _load_imagenet(backbone: ConvFourBackbone) -> WeightsInfo:
    enum_name = {"resnet18": "ResNet18", "resnet34": "ResNet34"}.get(
        backbone.name, backbone.name.replace("resnet", "ResNet")
    )
    weights = getattr(torchvision.models, f"{enum_name}_Weights").IMAGENET1K_V1
    file_name = weights.url.rsplit("/", 1)[-1]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a dead network fails fast instead of hanging
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True)
    except Exception as error:  # URLError, timeouts, bad hash: all end the same way
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        hub = Path(torch.hub.get_dir()) / "checkpoints"
        raise ConfigError(
            f"extract.weights: cannot get torchvision's {backbone.name} ImageNet weights "
            f"({reason}); put {file_name} (from {weights.url}) into {hub}/, or set "
            f"extract.weights to a state_dict file path or to 'random'"
        ) from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    _load_state(backbone, state, where=f"{file_name}")
    return WeightsInfo("imagenet", f"torchvision {weights}", pretrained=True)


def _load_file(backbone: ConvFourBackbone, path: Path) -> WeightsInfo:
    if not path.is_file():
        raise ConfigError(
            f"extract.weights: {path}: file not found (expected 'imagenet', 'random' or the "
            f"path of a state_dict file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:160]
        raise ConfigError(
            f"extract.weights: {path}: not a loadable state_dict ({reason})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"extract.weights: {path}: expected a state_dict, got {type(state)}")
    _load_state(backbone, state, where=str(path))
    return WeightsInfo(str(path), f"state_dict file {path}", pretrained=True)


def _load_state(backbone: ConvFourBackbone, state: dict, where: str) -> None:
    """Load a truncated or full ResNet state_dict into the trunk (layer4 and fc ignored)."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    trunk_state = {
        key: value for key, value in state.items() if not key.startswith(("layer4.", "fc."))
    }
    try:
        backbone.trunk.load_state_dict(trunk_state, strict=True)
    except RuntimeError as error:
        details = " ".join(str(error).split())[:200]
        raise ConfigError(
            f"extract.weights: {where} does not fit {backbone.name} up to layer3: {details}"
        ) from None
