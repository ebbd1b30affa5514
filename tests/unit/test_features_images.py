"""Finding and decoding a split's PNGs: names, gaps, colour modes, bit depths, broken files."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.clevr.readers import PNG_SIGNATURE
from pipeline.errors import DataError
from pipeline.vision.images import (
    check_png_size,
    decoding_loader,
    image_name,
    list_split_images,
    load_image,
)
from tests.conftest import REAL_CLEVR_SAMPLE, write_pngs

REAL_IMAGE = str(REAL_CLEVR_SAMPLE / "images" / "test" / "CLEVR_test_000000.png")


def test_images_are_ordered_by_index_not_by_listing(tmp_path):
    write_pngs(tmp_path, "val", 12, size=(40, 30))
    paths = list_split_images(tmp_path / "images", "val")
    assert list(paths) == list(range(12))
    assert [p.name for p in paths.values()] == [f"CLEVR_val_{i:06d}.png" for i in range(12)]


def test_a_subset_with_gaps_lists_the_images_present(tmp_path):
    folder = write_pngs(tmp_path, "train", 6, size=(40, 30))
    for index in (0, 2, 3):
        (folder / image_name("train", index)).unlink()
    paths = list_split_images(tmp_path / "images", "train")
    assert {index: path.name for index, path in paths.items()} == {
        1: "CLEVR_train_000001.png",
        4: "CLEVR_train_000004.png",
        5: "CLEVR_train_000005.png",
    }


def test_a_png_with_a_foreign_name_is_named(tmp_path):
    folder = write_pngs(tmp_path, "train", 2, size=(40, 30))
    (folder / "CLEVR_val_000002.png").write_bytes((folder / image_name("train", 0)).read_bytes())
    with pytest.raises(DataError, match="CLEVR_val_000002.png: file name does not match"):
        list_split_images(tmp_path / "images", "train")


def test_the_same_index_twice_is_an_error(tmp_path):
    folder = write_pngs(tmp_path, "train", 2, size=(40, 30))
    (folder / "CLEVR_train_0000001.png").write_bytes((folder / image_name("train", 1)).read_bytes())
    with pytest.raises(DataError, match="image index 1 also used"):
        list_split_images(tmp_path / "images", "train")


def test_missing_split_folder_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        list_split_images(tmp_path, "test")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no PNG images"):
        list_split_images(tmp_path, "test")


def test_real_clevr_rgba_drops_alpha_and_resizes():
    with Image.open(REAL_IMAGE) as image:
        assert image.mode == "RGBA" and image.size == (480, 320)
        expected = np.asarray(image)[..., :3]
    same_size = load_image(REAL_IMAGE, 320, 480)
    assert same_size.dtype == np.uint8 and same_size.shape == (320, 480, 3)
    np.testing.assert_array_equal(same_size, expected)
    assert load_image(REAL_IMAGE, 224, 224).shape == (224, 224, 3)


def test_grayscale_palette_and_16_bit_become_8_bit_rgb(tmp_path):
    gray = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    Image.fromarray(gray.astype(np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray((gray * 257).astype(np.uint16)).save(tmp_path / "gray16.png")
    Image.fromarray(gray.astype(np.uint8)).convert("P").save(tmp_path / "palette.png")
    with Image.open(tmp_path / "gray16.png") as image:
        assert image.mode.startswith("I")  # really 16 bits on disk
    for name in ("gray.png", "gray16.png", "palette.png"):
        rgb = load_image(tmp_path / name, 64, 64)
        assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8, name
        for channel in range(3):
            np.testing.assert_array_equal(rgb[..., channel], gray, err_msg=name)


def test_a_wrong_size_image_is_resized(tmp_path):
    Image.new("RGB", (100, 50), (10, 200, 30)).save(tmp_path / "wide.png")
    rgb = load_image(tmp_path / "wide.png", 64, 64)
    assert rgb.shape == (64, 64, 3)
    assert (rgb == np.array([10, 200, 30], dtype=np.uint8)).all()


def test_truncated_and_non_png_files_raise_one_line_errors(tmp_path):
    data = open(REAL_IMAGE, "rb").read()
    (tmp_path / "CLEVR_test_000000.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError) as truncated:
        load_image(tmp_path / "CLEVR_test_000000.png", 64, 64, image_index=0)
    assert "CLEVR_test_000000.png (image_index 0): cannot decode PNG" in str(truncated.value)
    assert "\n" not in str(truncated.value)
    Image.new("RGB", (8, 8)).save(tmp_path / "fake.png", format="JPEG")
    with pytest.raises(DataError, match="fake.png: not a PNG file"):
        load_image(tmp_path / "fake.png", 64, 64)
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="garbage.png: cannot decode PNG"):
        load_image(tmp_path / "garbage.png", 64, 64)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header announces width×height RGB pixels, as a decompression bomb's
    does (its few pixel bytes never get decoded: the header alone must stop it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\0" * 4096)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    bomb = tmp_path / "CLEVR_train_000003.png"
    bomb.write_bytes(png_claiming(20000, 20000))
    with pytest.raises(DataError) as refused:
        load_image(bomb, 64, 64, image_index=3)
    assert str(refused.value) == (
        f"{bomb} (image_index 3): image is 20000×20000 pixels; each side must be 1..4096"
    )
    upload = io.BytesIO(png_claiming(640, 16))
    assert check_png_size(upload, "upload", max_side=4096, min_side=16) == (16, 640)
    assert upload.tell() == 0  # left where it was, for the decoder
    with pytest.raises(DataError, match="^upload: image is 640×8 pixels; each side must be 16"):
        check_png_size(io.BytesIO(png_claiming(640, 8)), "upload", max_side=4096, min_side=16)
    assert check_png_size(io.BytesIO(b"not a PNG"), "upload") is None


class Niceness:
    """A dataset whose items are the niceness of the process that decodes them."""

    def __len__(self):
        return 4

    def __getitem__(self, position):
        return np.array([os.nice(0)])


@pytest.mark.parametrize("network_on_cpu", [True, False])
def test_decoders_yield_the_cpu_to_a_network_running_there(network_on_cpu):
    """With the network on the CPU, decoding processes run at the lowest priority (nice 19), so
    they never take a core from one of its threads; for a GPU they keep the parent's priority."""
    loader = decoding_loader(Niceness(), [[0, 1], [2, 3]], workers=2, network_on_cpu=network_on_cpu)
    niceness = {int(value) for batch in loader for value in batch.ravel()}
    assert niceness == ({19} if network_on_cpu else {os.nice(0)})
