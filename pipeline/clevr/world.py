"""The CLEVR world: attribute vocabulary, object sizes, the fixed camera and its directions.

"Is the small metal cube left of the large red sphere?" only means something once the world
fixes what "small" is (radius 0.35), what "red" looks like (RGB 173, 35, 35) and which way "left"
points. Left, right, front and behind are the camera's axes laid flat on the ground plane, as
in CLEVR's render_images.py; above and below are the world's up axis. The camera sits where
CLEVR's Blender camera sits (no jitter), so the directions are the same for every scene.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
MATERIALS: tuple[str, ...] = ("rubber", "metal")
SIZES: dict[str, float] = {"small": 0.35, "large": 0.7}
ATTRIBUTES: tuple[str, ...] = ("size", "color", "material", "shape")  # CLEVR's filter order
VALUES: dict[str, tuple[str, ...]] = {
    "size": tuple(SIZES),
    "color": tuple(COLORS),
    "material": MATERIALS,
    "shape": SHAPES,
}
RELATIONS: tuple[str, ...] = ("left", "right", "front", "behind")

# The question vocabulary of the official CLEVR v1.0 release: every token of its training
# questions, the 82 words of the SNMN release's question vocabulary file less its special tokens.
CLEVR_QUESTION_WORDS: tuple[str, ...] = (
    ";", "?", "a", "an", "and", "another", "any", "anything", "are", "as", "ball", "balls",
    "behind", "big", "block", "blocks", "blue", "both", "brown", "color", "cube", "cubes", "cyan",
    "cylinder", "cylinders", "do", "does", "either", "else", "equal", "fewer", "front", "gray",
    "greater", "green", "has", "have", "how", "in", "is", "it", "its", "large", "left", "less",
    "made", "many", "material", "matte", "metal", "metallic", "more", "number", "object",
    "objects", "of", "on", "or", "other", "purple", "red", "right", "rubber", "same", "shape",
    "shiny", "side", "size", "small", "sphere", "spheres", "than", "that", "the", "there", "thing",
    "things", "tiny", "to", "visible", "what", "yellow",
)  # fmt: skip
# CLEVR's 28 answers: exist and compare questions answer yes/no, count questions 0..10 (at most
# 10 objects), query questions an attribute value.
CLEVR_ANSWERS: tuple[str, ...] = (
    "yes",
    "no",
    *(str(n) for n in range(11)),
    *(value for attribute in ATTRIBUTES for value in VALUES[attribute]),
)

# CLEVR's placement rules (render_images.py defaults).
GROUND_EXTENT = 3.0  # x, y sampled uniformly in [-3, 3]
MIN_DISTANCE = 0.25  # gap between two objects' bounding circles
RELATION_MARGIN = 0.4  # every pair is at least this far apart along left/right and front/behind
RELATION_EPS = 0.2  # j is `rel` of i when dot(c_j - c_i, direction) > eps

# CLEVR's Blender camera (base_scene.blend) without the random jitter, looking at the origin.
CAMERA_POSITION = (7.36, -6.93, 4.96)
CAMERA_TARGET = (0.0, 0.0, 0.0)
CAMERA_FOV_DEGREES = 49.13  # horizontal: a 35 mm lens on a 32 mm sensor


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: world points → pixel x, pixel y (down) and depth along the view axis."""

    width: int = 480
    height: int = 320

    @property
    def position(self) -> np.ndarray:
        return np.asarray(CAMERA_POSITION, dtype=np.float64)

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit right, up and forward vectors of the camera in world coordinates."""
        forward = np.asarray(CAMERA_TARGET, dtype=np.float64) - self.position
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, (0.0, 0.0, 1.0))
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return right, up, forward

    @property
    def focal(self) -> float:
        """Focal length in pixels (the horizontal field of view spans the image width)."""
        return (self.width / 2) / math.tan(math.radians(CAMERA_FOV_DEGREES) / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """[N, 3] world points → [N, 3] (pixel x, pixel y, depth)."""
        right, up, forward = self.axes
        offset = np.asarray(points, dtype=np.float64) - self.position  # [N, 3]
        depth = offset @ forward  # [N]
        x = self.width / 2 + self.focal * (offset @ right) / depth
        y = self.height / 2 - self.focal * (offset @ up) / depth
        return np.stack([x, y, depth], axis=-1)


def directions(camera: Camera | None = None) -> dict[str, tuple[float, float, float]]:
    """CLEVR's six direction vectors: the camera's axes projected onto the ground plane."""
    return dict(_directions(camera or Camera()))


@functools.lru_cache(maxsize=8)
def _directions(camera: Camera) -> dict[str, tuple[float, float, float]]:
    right, _, forward = camera.axes
    behind = np.array([forward[0], forward[1], 0.0])
    behind /= np.linalg.norm(behind)
    left = -np.array([right[0], right[1], 0.0])
    left /= np.linalg.norm(left)
    vectors = {
        "behind": behind,
        "front": -behind,
        "left": left,
        "right": -left,
        "above": np.array([0.0, 0.0, 1.0]),
        "below": np.array([0.0, 0.0, -1.0]),
    }
    return {
        name: tuple(round(float(v), 6) + 0.0 for v in vector) for name, vector in vectors.items()
    }
