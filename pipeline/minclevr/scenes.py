"""Random CLEVR scenes: object placement, spatial relationships and the scene JSON.

"How many spheres are left of the large cube?" is answered from `relationships["left"][cube]`,
the objects j with dot(c_j - c_cube, left) > 0.2, exactly CLEVR's rule. Placement follows CLEVR's
render_images.py: x, y uniform in [-3, 3], bounding circles at least 0.25 apart, and every pair
at least 0.4 apart along left/right and front/behind, so no relation is a near tie. A scene in
which some object shows fewer than `min_visible_pixels` pixels in the ID buffer is drawn again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from pipeline.clevr import render
from pipeline.clevr.readers import Scene, SceneObject
from pipeline.clevr.world import (
    COLORS,
    GROUND_EXTENT,
    MATERIALS,
    MIN_DISTANCE,
    RELATION_EPS,
    RELATION_MARGIN,
    RELATIONS,
    SHAPES,
    SIZES,
    Camera,
    directions,
)
from pipeline.errors import ConfigError

MAX_PLACEMENT_TRIES = 50  # per object, as CLEVR's --max_retries
MAX_SCENE_TRIES = 1000


@dataclass
class RenderedScene:
    """A scene with its picture and its object-ID buffer ([H, W] uint8, 0 = ground)."""

    scene: Scene
    image: Image.Image
    ids: np.ndarray


def placement_ok(
    x: float, y: float, radius: float, placed: list[tuple[float, float, float]], camera: Camera
) -> bool:
    """CLEVR's test for a new object at (x, y): min distance and relation margin to the others."""
    vectors = directions(camera)
    for other_x, other_y, other_radius in placed:
        dx, dy = x - other_x, y - other_y
        if math.hypot(dx, dy) - radius - other_radius < MIN_DISTANCE:
            return False
        for name in RELATIONS:
            margin = dx * vectors[name][0] + dy * vectors[name][1]
            if 0 < margin < RELATION_MARGIN:
                return False
    return True


def sample_objects(rng: random.Random, count: int, camera: Camera) -> list[SceneObject] | None:
    """Place `count` random objects by CLEVR's rules; None when one cannot be placed."""
    placed: list[tuple[float, float, float]] = []
    objects = []
    for _ in range(count):
        size = rng.choice(tuple(SIZES))
        radius = SIZES[size]
        for _ in range(MAX_PLACEMENT_TRIES):
            x = round(rng.uniform(-GROUND_EXTENT, GROUND_EXTENT), 4)
            y = round(rng.uniform(-GROUND_EXTENT, GROUND_EXTENT), 4)
            if placement_ok(x, y, radius, placed, camera):
                break
        else:
            return None
        placed.append((x, y, radius))
        shape = rng.choice(SHAPES)
        z = radius  # resting on the ground: every shape's half height is its radius
        px, py, depth = camera.project(np.array([[x, y, z]]))[0]
        objects.append(
            SceneObject(
                shape=shape,
                color=rng.choice(tuple(COLORS)),
                material=rng.choice(MATERIALS),
                size=size,
                coords_3d=(x, y, z),
                pixel_coords=(float(round(px)), float(round(py)), round(float(depth), 4)),
                rotation=round(rng.uniform(0.0, 360.0), 3),
                bbox=None,
            )
        )
    return objects


def relationships(
    objects: list[SceneObject], camera: Camera
) -> dict[str, tuple[tuple[int, ...], ...]]:
    """relationships[rel][i] = the objects j that are `rel` of object i (CLEVR, eps 0.2)."""
    vectors = directions(camera)
    result = {}
    for name in RELATIONS:
        rows = []
        for first in objects:
            row = []
            for j, second in enumerate(objects):
                if second is first:
                    continue
                dot = sum(
                    (b - a) * v
                    for a, b, v in zip(
                        first.coords_3d, second.coords_3d, vectors[name], strict=True
                    )
                )
                if dot > RELATION_EPS:
                    row.append(j)
            rows.append(tuple(row))
        result[name] = tuple(rows)
    return result


def sample_scene(
    rng: random.Random,
    split: str,
    index: int,
    num_objects: tuple[int, int],
    min_visible_pixels: int,
    camera: Camera,
    max_tries: int = MAX_SCENE_TRIES,
) -> RenderedScene:
    """Draw scenes until every object is visible enough; render it and fill boxes and masks."""
    for _ in range(max_tries):
        objects = sample_objects(rng, rng.randint(*num_objects), camera)
        if objects is None:
            continue
        drawings = render.layout(objects, camera)
        ids = render.draw_ids(drawings, camera)
        if render.visible_pixels(ids, len(objects)).min() >= min_visible_pixels:
            break
    else:
        raise ConfigError(
            f"generate.min_visible_pixels: {split} image {index}: no scene with every object "
            f"showing >= {min_visible_pixels} pixels in {max_tries} tries"
        )
    image, ids = render.draw(drawings, camera)  # the same silhouettes, now with colours
    boxes = render.boxes(ids, len(objects))
    objects = [replace(obj, bbox=tuple(box)) for obj, box in zip(objects, boxes, strict=True)]
    scene = Scene(
        index=index,
        split=split,
        image_index=index,
        image_filename=image_filename(split, index),
        objects=tuple(objects),
        relationships=relationships(objects, camera),
        directions=directions(camera),
        masks=tuple(render.run_lengths(ids, len(objects))),
    )
    return RenderedScene(scene, image, ids)


def image_filename(split: str, index: int) -> str:
    """CLEVR_train_000012.png, CLEVR_loc_val_000003.png."""
    return f"CLEVR_{split}_{index:06d}.png"


def for_split(scene: Scene, split: str) -> Scene:
    """The same scene filed under another split (loc_train reuses the train pictures)."""
    return replace(scene, split=split, image_filename=image_filename(split, scene.image_index))


def scene_to_json(scene: Scene) -> dict[str, Any]:
    """A scene in the CLEVR v1.0 scenes-file form, plus CLEVR-Ref+ obj_bbox and obj_mask."""
    entry: dict[str, Any] = {
        "split": scene.split,
        "image_index": scene.image_index,
        "image_filename": scene.image_filename,
        "directions": {name: list(vector) for name, vector in scene.directions.items()},
        "objects": [
            {
                "shape": obj.shape,
                "color": obj.color,
                "material": obj.material,
                "size": obj.size,
                "3d_coords": list(obj.coords_3d),
                "rotation": obj.rotation,
                "pixel_coords": [
                    int(obj.pixel_coords[0]),
                    int(obj.pixel_coords[1]),
                    obj.pixel_coords[2],
                ],
            }
            for obj in scene.objects
        ],
        "relationships": {
            name: [list(row) for row in rows] for name, rows in scene.relationships.items()
        },
    }
    if all(obj.bbox is not None for obj in scene.objects):
        entry["obj_bbox"] = {str(i + 1): list(obj.bbox) for i, obj in enumerate(scene.objects)}
    if scene.masks is not None:
        entry["obj_mask"] = {str(i + 1): mask for i, mask in enumerate(scene.masks)}
    return entry
