"""Scene sampling: CLEVR's placement rules, relationships, ID-buffer boxes and masks, JSON."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from pipeline.clevr import render
from pipeline.clevr.readers import read_scenes
from pipeline.clevr.world import SIZES, Camera, directions
from pipeline.errors import ConfigError
from pipeline.minclevr.scenes import sample_scene, scene_to_json

CAMERA = Camera()


@pytest.fixture(scope="module")
def rendered():
    return [
        sample_scene(random.Random(seed), "train", seed, (3, 6), 200, CAMERA) for seed in range(12)
    ]


def test_directions_are_clevr_unit_vectors_on_the_ground():
    vectors = {name: np.array(v) for name, v in directions().items()}
    assert set(vectors) == {"behind", "front", "left", "right", "above", "below"}
    for vector in vectors.values():
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    for name in ("behind", "front", "left", "right"):
        assert vectors[name][2] == 0.0
    np.testing.assert_allclose(vectors["front"], -vectors["behind"])
    np.testing.assert_allclose(vectors["right"], -vectors["left"])
    assert abs(vectors["left"] @ vectors["behind"]) < 1e-5
    assert vectors["above"][2] == 1.0
    # behind points away from the camera, left to the camera's left
    right, _, forward = CAMERA.axes
    assert vectors["behind"] @ forward > 0.5 and vectors["left"] @ right < -0.9


def test_objects_follow_clevr_placement_rules(rendered):
    vectors = directions()
    for item in rendered:
        objects = item.scene.objects
        assert 3 <= len(objects) <= 6
        for obj in objects:
            x, y, z = obj.coords_3d
            assert -3 <= x <= 3 and -3 <= y <= 3
            radius = SIZES[obj.size]
            assert z == pytest.approx(radius, abs=1e-4)  # on the ground, as in CLEVR v1.0
        for a, b in itertools.combinations(objects, 2):
            dx, dy = a.coords_3d[0] - b.coords_3d[0], a.coords_3d[1] - b.coords_3d[1]
            assert math.hypot(dx, dy) - SIZES[a.size] - SIZES[b.size] >= 0.25
            for name in ("left", "behind"):
                assert abs(dx * vectors[name][0] + dy * vectors[name][1]) >= 0.4


def test_relationships_follow_the_clevr_rule(rendered):
    vectors = directions()
    for item in rendered:
        scene = item.scene
        for name in ("left", "right", "front", "behind"):
            for i, first in enumerate(scene.objects):
                expected = [
                    j
                    for j, second in enumerate(scene.objects)
                    if j != i
                    and np.dot(np.subtract(second.coords_3d, first.coords_3d), vectors[name]) > 0.2
                ]
                assert list(scene.relationships[name][i]) == expected
        # with the 0.4 margin every pair is related one way left/right and one way front/behind
        n = len(scene.objects)
        for i, j in itertools.permutations(range(n), 2):
            assert (j in scene.relationships["left"][i]) != (j in scene.relationships["right"][i])
            assert (j in scene.relationships["front"][i]) != (j in scene.relationships["behind"][i])
            assert (j in scene.relationships["left"][i]) == (i in scene.relationships["right"][j])


def test_every_object_is_visible_and_boxes_and_masks_come_from_the_id_buffer(rendered):
    for item in rendered:
        scene, ids = item.scene, item.ids
        assert ids.shape == (320, 480)
        counts = render.visible_pixels(ids, len(scene.objects))
        assert counts.min() >= 200
        for i, obj in enumerate(scene.objects):
            mask = render.decode_run_lengths(scene.masks[i], 320, 480)
            np.testing.assert_array_equal(mask, ids == i + 1)
            rows, cols = np.nonzero(mask)
            x, y, w, h = obj.bbox
            assert (x, y) == (cols.min(), rows.min())
            assert (x + w - 1, y + h - 1) == (cols.max(), rows.max())


def test_pixel_coords_are_the_projected_centre(rendered):
    for item in rendered:
        for obj in item.scene.objects:
            x, y, depth = CAMERA.project(np.array([obj.coords_3d]))[0]
            assert obj.pixel_coords[:2] == (round(x), round(y))
            assert obj.pixel_coords[2] == pytest.approx(depth, abs=1e-3)


def test_nearer_objects_are_lower_in_the_picture_and_larger():
    near = CAMERA.project(np.array([[2.0, -2.0, 0.35]]))[0]
    far = CAMERA.project(np.array([[-2.0, 2.0, 0.35]]))[0]
    assert near[1] > far[1] and near[2] < far[2]


def test_the_same_seed_gives_the_same_scene():
    first = sample_scene(random.Random(7), "val", 3, (3, 6), 200, CAMERA)
    second = sample_scene(random.Random(7), "val", 3, (3, 6), 200, CAMERA)
    assert first.scene == second.scene
    assert first.image.tobytes() == second.image.tobytes()


def test_scene_json_reads_back_through_the_project_reader(rendered, tmp_path):
    scenes = [item.scene for item in rendered]
    path = tmp_path / "CLEVR_train_scenes.json"
    path.write_text(
        json.dumps({"info": {"split": "train"}, "scenes": [scene_to_json(s) for s in scenes]})
    )
    assert read_scenes(path) == scenes
    entry = scene_to_json(scenes[0])
    assert set(entry["obj_bbox"]) == {str(i + 1) for i in range(len(scenes[0].objects))}
    assert all(isinstance(v, int) for v in entry["objects"][0]["pixel_coords"][:2])


def test_an_impossible_visibility_demand_is_a_clear_error():
    with pytest.raises(ConfigError, match="generate.min_visible_pixels: train image 5"):
        sample_scene(random.Random(0), "train", 5, (3, 3), 10**6, CAMERA, max_tries=3)
