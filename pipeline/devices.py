"""Where torch runs, by one rule for every stage: `auto` (a GPU when there is one), `cpu`, `cuda`.

Extracting the features of "What color is the large cube?"'s image, evaluating, pretraining or
serving the demo all read a `device` value from params.yaml; asking for `cuda` on a machine
without one is a ConfigError that names the key, never a silent fall-back to the CPU.
"""

from __future__ import annotations

import os

import torch

from pipeline.errors import ConfigError


def resolve_device(name: str, key: str) -> torch.device:
    """`name` (auto | cpu | cuda) → a torch device; `key` names the params value in errors."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """`name` (auto | bfloat16 | float32) → the autocast precision of a convolutional network.
    auto: bfloat16 on a GPU and on CPUs with AMX tiles, where it is ~2x faster; float32 on other
    CPUs, where bfloat16 runs slower (measured on a 2-core AVX-512 Xeon without AMX: ResNet-18 at
    160×240 trains at 30 images/s in float32, 20 in bfloat16)."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16"
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bfloat16" if has_amx else "float32"


def free_memory_bytes(device: torch.device) -> int:
    """Bytes that can still be allocated on `device`: the GPU's free memory, or for the CPU
    the kernel's MemAvailable (free RAM plus what the page cache can give back)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
