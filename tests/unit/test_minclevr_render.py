"""The renderer: image and ID buffer agree, and each attribute survives a 224×224 downscale."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.clevr import render
from pipeline.clevr.readers import SceneObject
from pipeline.clevr.world import COLORS, MATERIALS, SHAPES, SIZES, Camera

CAMERA = Camera()
SMALL = (224, 224)


def place(
    shape: str, color: str, material: str, size: str, x: float = 0.0, y: float = 0.0
) -> SceneObject:
    z = SIZES[size]  # resting on the ground: every shape's half height is its radius
    return SceneObject(shape, color, material, size, (x, y, z), (0.0, 0.0, 0.0), 30.0, None)


def draw(objects: list[SceneObject]) -> tuple[np.ndarray, np.ndarray]:
    """[224, 224, 3] picture and [224, 224] ID buffer after the features' downscale."""
    drawings = render.layout(objects, CAMERA)
    image = render.draw(drawings, CAMERA)[0].resize(SMALL, Image.BILINEAR)
    ids = Image.fromarray(render.draw_ids(drawings, CAMERA)).resize(SMALL, Image.NEAREST)
    return np.asarray(image).astype(float), np.asarray(ids)


def object_pixels(objects: list[SceneObject]) -> np.ndarray:
    """[N, 3] RGB of the first object's pixels, away from its edges (eroded by one pixel)."""
    image, ids = draw(objects)
    mask = ids == 1
    inner = (
        mask
        & np.roll(mask, 1, 0)
        & np.roll(mask, -1, 0)
        & np.roll(mask, 1, 1)
        & np.roll(mask, -1, 1)
    )
    return image[inner]


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """The colour without its grey part (the lamps' grey lift; all of a gray object), normalised."""
    coloured = rgb - rgb.min()
    return coloured / max(coloured.sum(), 1.0)


def test_image_and_id_buffer_share_silhouettes():
    objects = [
        place("cube", "red", "metal", "large", 1.0, 1.0),
        place("sphere", "blue", "rubber", "large", -1.0, -1.0),
        place("cylinder", "yellow", "metal", "small", 1.5, -1.5),
    ]
    drawings = render.layout(objects, CAMERA)
    image = np.asarray(render.draw(drawings, CAMERA)[0])
    ids = render.draw_ids(drawings, CAMERA)
    ground = np.asarray(render.shaded_ground(drawings, CAMERA))
    assert image.shape == (320, 480, 3) and ids.dtype == np.uint8
    assert set(np.unique(ids)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(image[ids == 0], ground[ids == 0])  # nothing spills out
    assert (image[ids > 0] != ground[ids > 0]).any(axis=-1).mean() > 0.99


@pytest.mark.parametrize("shape", SHAPES)
def test_each_object_casts_a_soft_shadow_away_from_the_key_light(shape):
    objects = [place(shape, "gray", "rubber", "large")]
    drawings = render.layout(objects, CAMERA)
    shaded = np.asarray(render.shaded_ground(drawings, CAMERA)).astype(int)[..., 0]  # [H, W]
    bare = np.asarray(render.ground(CAMERA)).astype(int)[..., 0]
    ids = render.draw_ids(drawings, CAMERA)
    darker = (shaded < bare - 10) & (ids == 0)  # visible ground in a clear shadow
    assert (shaded <= bare).all()  # a shadow only takes light away
    columns = np.flatnonzero((ids == 1).any(axis=0))
    shadow_columns = np.flatnonzero(darker.any(axis=0))
    assert darker.sum() > 0.15 * (ids == 1).sum()  # a shadow about the size of the object
    assert shadow_columns.max() > columns.max()  # cast to the right: the light is on the left
    soft = np.unique(shaded[(shaded < bare) & (ids == 0)] - bare[(shaded < bare) & (ids == 0)])
    assert len(soft) >= 20  # a penumbra of many levels, not one flat grey


def test_painters_order_lets_the_nearer_object_hide_the_farther():
    far = place("cube", "red", "rubber", "large", -0.7, 0.7)
    near = place("cube", "blue", "rubber", "large", 0.0, 0.0)  # between it and the camera
    ids = render.draw_ids(render.layout([far, near], CAMERA), CAMERA)
    alone = render.draw_ids(render.layout([far], CAMERA), CAMERA)
    assert 0 < (ids == 1).sum() < (alone == 1).sum()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("material", MATERIALS)
def test_every_color_is_recognised_by_its_hue_after_downscale(shape, material):
    palette = {name: chromaticity(np.array(rgb, float)) for name, rgb in COLORS.items()}
    for name in COLORS:
        median = np.median(object_pixels([place(shape, name, material, "small")]), axis=0)
        guess = min(
            palette, key=lambda other: np.linalg.norm(palette[other] - chromaticity(median))
        )
        assert guess == name, f"{material} {shape}: {name} looks like {guess}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("color", COLORS)
def test_metal_shows_a_white_highlight_and_rubber_never_does(shape, color):
    def highlights(material: str) -> int:
        pixels = object_pixels([place(shape, color, material, "small")])
        return int((pixels.min(axis=-1) > 180).sum())

    assert highlights("metal") >= 2
    assert highlights("rubber") == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_large_objects_cover_several_times_the_pixels_of_small_ones(shape):
    areas = {size: (draw([place(shape, "green", "rubber", size)])[1] == 1).sum() for size in SIZES}
    assert areas["large"] >= 3 * areas["small"]


def test_shapes_have_their_own_shading():
    def colours(shape: str) -> np.ndarray:
        drawings = render.layout([place(shape, "purple", "rubber", "large")], CAMERA)
        image, ids = render.draw(drawings, CAMERA)
        return np.asarray(image)[ids == 1]

    assert len(np.unique(colours("cube"), axis=0)) == 3  # three flat faces
    assert len(np.unique(colours("sphere"), axis=0)) >= 40  # smooth radial shading
    image, ids = draw([place("cylinder", "purple", "rubber", "large")])
    rows = np.flatnonzero((ids == 1).any(axis=1))
    top = image[rows[0] : rows[0] + 4][ids[rows[0] : rows[0] + 4] == 1].mean()
    body = image[rows[-8] : rows[-1]][ids[rows[-8] : rows[-1]] == 1].mean()
    assert top > body + 15  # the lighter top ellipse


def test_run_lengths_round_trip_and_start_with_background():
    ids = np.zeros((320, 480), np.uint8)
    ids[0, :3] = 1
    ids[10:20, 100:150] = 2
    texts = render.run_lengths(ids, 3)
    assert texts[0].startswith("0,3,")
    assert texts[2] == str(320 * 480)  # an absent object: all background
    for i, text in enumerate(texts):
        assert sum(map(int, text.split(","))) == 320 * 480
        np.testing.assert_array_equal(render.decode_run_lengths(text, 320, 480), ids == i + 1)
    assert render.boxes(ids, 3) == [[0, 0, 3, 1], [100, 10, 50, 10], [0, 0, 0, 0]]
