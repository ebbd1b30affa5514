"""CLEVR images on disk → 8-bit RGB arrays of the size the backbone reads.

To answer "What color is the large cube?" the model looks at ResNet features of
``images/val/CLEVR_val_000042.png``, a 480×320 RGBA PNG. This module finds a split's images (every
PNG in its folder, named ``CLEVR_{split}_%06d.png``; any subset of the split's indices, gaps
allowed, as a partial download or a filtered split has them) and decodes one image into a
[H, W, 3] uint8 array resized to the configured input size; `DecodedImages` does that inside
DataLoader worker processes while the network runs on the previous batch.

Decisions (documented here once):
- RGBA: the alpha channel is dropped (CLEVR's alpha is opaque everywhere), not composited.
- Grayscale, palette and 1-bit PNGs are converted to RGB; 16-bit PNGs are reduced to 8 bits per
  channel by keeping the high byte (as Pillow does for 16-bit RGB). So any valid PNG is accepted.
- Size: every image is resized to (input_height, input_width) with bilinear filtering (antialiased
  when shrinking), whatever its own size; an image of another size is therefore not an error.
- An unreadable or truncated file is a DataError naming the file and its image index.
- A PNG whose header announces more than MAX_IMAGE_SIDE pixels either way is refused before it
  is decoded: a 20000×20000 "decompression bomb" compresses to a few hundred KB but would decode
  to 1.2 GB of RGB. `check_png_size` is that one check, for every PNG decoded here or uploaded.
- When the network runs on the CPU, the decoding processes run at the lowest priority (nice 19):
  they then decode while the network's threads wait (between layers, between batches) instead of
  taking a core from one of its threads, which stalls the whole forward pass until it is back.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.clevr.readers import PNG_SIGNATURE
from pipeline.errors import DataError

SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I")
MAX_IMAGE_SIDE = 4096  # pixels; CLEVR's images are 480×320


def image_name(split: str, image_index: int) -> str:
    """CLEVR_val_000042.png for split "val", index 42."""
    return f"CLEVR_{split}_{image_index:06d}.png"


def list_split_images(images_dir: str | Path, split: str) -> dict[int, Path]:
    """Every PNG of `images_dir/split`: image index → path, in index order. The indices may
    have gaps (a subset of the split); the stages that read features skip what is absent.

    Raises DataError naming the file when a PNG's name does not follow CLEVR_{split}_%06d.png
    or when two files carry the same index (CLEVR_val_42.png beside CLEVR_val_000042.png).
    """
    folder = Path(images_dir) / split
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found (split {split!r})")
    pattern = re.compile(rf"CLEVR_{re.escape(split)}_(\d{{6,}})\.png")
    by_index: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.suffix.lower() != ".png":
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            raise DataError(f"{path}: file name does not match CLEVR_{split}_%06d.png")
        index = int(match.group(1))
        if index in by_index:
            raise DataError(f"{path}: image index {index} also used by {by_index[index].name}")
        by_index[index] = path
    if not by_index:
        raise DataError(f"{folder}: no PNG images for split {split!r}")
    return {index: by_index[index] for index in sorted(by_index)}


def load_image(path: str | Path, height: int, width: int, image_index: int = -1) -> np.ndarray:
    """Decode one PNG into RGB uint8 [height, width, 3]; DataError (one line) if unreadable."""
    where = f"{path} (image_index {image_index})" if image_index >= 0 else str(path)
    try:
        check_png_size(path, where)
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DataError(f"{where}: not a PNG file (format {image.format})")
            image.load()
            rgb = to_rgb8(image)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{where}: cannot decode PNG: {reason}") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)  # [H, W, 3]


def png_size(source: str | Path | IO[bytes]) -> tuple[int, int] | None:
    """(height, width) from a PNG's IHDR chunk, the first 24 bytes of the file, without decoding
    anything; None if the bytes are not a PNG. A file object is left where it was."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            header = handle.read(24)
    else:
        position = source.tell()
        header = source.read(24)
        source.seek(position)
    if len(header) < 24 or not header.startswith(PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", header[16:24])  # IHDR stores width first
    return height, width


def check_png_size(
    source: str | Path | IO[bytes], where: str, max_side: int = MAX_IMAGE_SIDE, min_side: int = 1
) -> tuple[int, int] | None:
    """The PNG's (height, width) from its header; DataError unless each side is in
    min_side..max_side. None (nothing checked) if it is not a PNG: decoding then says why."""
    size = png_size(source)
    if size is not None and not all(min_side <= side <= max_side for side in size):
        height, width = size
        raise DataError(
            f"{where}: image is {width}×{height} pixels; each side must be {min_side}..{max_side}"
        )
    return size


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any PNG mode → 8-bit RGB: alpha dropped, gray replicated, 16-bit gray reduced to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_GRAY_MODES:
        gray16 = np.asarray(image).astype(np.uint32)  # [H, W] in 0..65535
        gray8 = np.clip(gray16 >> 8, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray8] * 3, axis=-1))
    return image.convert("RGB")


class DecodedImages(Dataset):
    """position → (uint8 RGB [H, W, 3], or the one-line error of an unreadable file)."""

    def __init__(self, paths: list[str], indices: list[int], height: int, width: int) -> None:
        self.paths, self.indices, self.height, self.width = paths, indices, height, width

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> np.ndarray | str:
        try:
            return load_image(self.paths[position], self.height, self.width, self.indices[position])
        except DataError as error:  # raised in the main process, where it stays one line
            return str(error)


def collate_images(items: list[np.ndarray | str]) -> torch.Tensor | str:
    """A batch [B, H, W, 3] uint8, or the first decoding error."""
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else torch.from_numpy(np.stack(items))


def decoding_loader(
    dataset: DecodedImages, batches: list[list[int]], workers: int, network_on_cpu: bool
) -> DataLoader:
    """Batches [B, H, W, 3] uint8 (or an error line), decoded by `workers` processes running
    ahead of the network (prefetch 4 batches each), at the lowest priority if it runs on the CPU."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=not network_on_cpu and torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        worker_init_fn=_lowest_priority if network_on_cpu and workers else None,
    )


def _lowest_priority(worker_id: int) -> None:
    os.nice(19)
