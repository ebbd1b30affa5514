"""A small PIL renderer for CLEVR scenes, and the object-ID buffer drawn with the same geometry.

To answer "What material is the large cube behind the red sphere?" a model must see the cube's
material, so each attribute gets its own visual cue: the 8 CLEVR colours as base albedo, sizes
0.35 / 0.7 under a perspective camera, shapes with per-face shading (a cube shows three faces of
different brightness, a cylinder a shaded body and a lighter top ellipse, a sphere radial
shading), and materials as matte Lambert shading (rubber) versus a darker, mirror-like look with a
white specular highlight (metal). Each object casts a soft shadow on the ground, away from the key
light, as CLEVR's area lamps do (a shadow is not an object: the ID buffer ignores it). Objects are
painted far to near (painter's order); the ID buffer repeats every silhouette with the object's
number (0 = ground), which gives each object's visible pixels, its tight box [x, y, w, h] and its
CLEVR-Ref+ run-length mask; `object_ids` turns a scene's masks back into that buffer (or
approximates it with discs for scenes without masks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.clevr.readers import Scene, SceneObject
from pipeline.clevr.world import CAMERA_FOV_DEGREES, COLORS, SIZES, Camera
from pipeline.errors import DataError

CYLINDER_SEGMENTS = 36
GROUND_TOP, GROUND_BOTTOM = 112.0, 158.0  # grey level of the ground at the top / bottom row
# Key light from the camera's upper left (unit vector towards the light), and a low light from
# the camera's left whose mirror image is the vertical streak on metal bodies.
LIGHT = np.array([-0.25, -0.6, 1.0]) / np.linalg.norm([-0.25, -0.6, 1.0])
SIDE_LIGHT = np.array([-0.11, -0.99, 0.15]) / np.linalg.norm([-0.11, -0.99, 0.15])
# Rubber = base × (albedo + lit × diffuse) + a grey lift, fitted to the centre pixels of real CLEVR
# renders: there a rubber object reads ~0.38 × its base colour + 44 (blue 42,75,215 → 60,79,125)
RUBBER_ALBEDO, RUBBER_LIT, GREY_LIFT = 0.28, 0.40, 40.0
SHADOW_BLUR = 3.0  # pixels (Gaussian radius at 480×320): CLEVR's area lamps cast soft shadows
SHADOW_DARKNESS = 0.45  # the ground under a full shadow keeps 55% of its light

Point = tuple[float, float]


@dataclass
class Drawing:
    """How one object is painted: its silhouette, then shaded faces (or a sphere sprite)."""

    index: int  # object index in the scene (the ID buffer stores index + 1)
    depth: float  # camera depth of the centre, for painter's order
    silhouette: list[Point] = field(default_factory=list)  # polygon (cube, cylinder)
    faces: list[tuple[list[Point], tuple[int, int, int]]] = field(default_factory=list)
    sprite: tuple[int, int, Image.Image, Image.Image] | None = None  # x0, y0, RGB, mask (sphere)
    shadow: list[Point] = field(default_factory=list)  # its shadow on the ground (polygon)


# ---------------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------------


def shade(color: str, material: str, normals: np.ndarray, views: np.ndarray) -> np.ndarray:
    """[N, 3] unit normals and unit view vectors (surface → camera) → [N, 3] RGB in 0..255."""
    base = np.asarray(COLORS[color], dtype=np.float64)  # [3]
    diffuse = np.clip(normals @ LIGHT, 0.0, 1.0)[:, None]  # [N, 1]
    if material == "rubber":  # the grey term: CLEVR's fill lamps and bright surroundings
        rgb = base * (RUBBER_ALBEDO + RUBBER_LIT * diffuse) + GREY_LIFT + 18 * diffuse
        return np.clip(rgb, 0, 255)
    facing = np.sum(normals * views, axis=-1, keepdims=True)
    reflected_up = (2 * facing * normals - views)[:, 2:3]  # z of the mirrored view ray
    sky = np.clip(0.5 + 2.5 * reflected_up, 0.0, 1.0)  # 0: reflects the ground, 1: the sky
    rgb = base * (0.32 + 0.15 * diffuse + 0.3 * sky) + 0.8 * GREY_LIFT  # tinted reflections
    for light, power, strength in ((LIGHT, 40, 255.0), (SIDE_LIGHT, 24, 170.0)):
        half = light + views
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        specular = np.clip(np.sum(normals * half, axis=-1), 0.0, 1.0)[:, None] ** power  # [N, 1]
        rgb = rgb + strength * specular
    return np.clip(rgb, 0, 255)


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in values)


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


def half_extent(obj: SceneObject) -> float:
    """Half height of the object: its size's radius for every shape (CLEVR v1.0's scenes put a
    large cube's centre at z = 0.7, as a large sphere's and cylinder's)."""
    return SIZES[obj.size]


def convex_hull(points: np.ndarray) -> list[Point]:
    """[N, 2] points → the hull polygon (Andrew's monotone chain)."""
    ordered = sorted({(float(x), float(y)) for x, y in points})
    if len(ordered) < 3:
        return ordered

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    upper: list[Point] = []
    for point in ordered:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    for point in reversed(ordered):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    return lower[:-1] + upper[:-1]


def _views(points: np.ndarray, camera: Camera) -> np.ndarray:
    views = camera.position - points  # [N, 3]
    return views / np.linalg.norm(views, axis=-1, keepdims=True)


def _polygon(pixels: np.ndarray) -> list[Point]:
    return [(float(x), float(y)) for x, y in pixels[:, :2]]


def _shadow(points: np.ndarray, camera: Camera) -> list[Point]:
    """[N, 3] points of an object's surface → the pixel polygon of its shadow: each point slid
    along the key light's rays down to the ground (z = 0), projected, and wrapped in a hull."""
    on_ground = points - points[:, 2:3] / LIGHT[2] * LIGHT  # [N, 3], z = 0
    return convex_hull(camera.project(on_ground)[:, :2])


def _cube(index: int, obj: SceneObject, camera: Camera) -> Drawing:
    h = half_extent(obj)
    angle = np.radians(obj.rotation)
    axis_x = np.array([np.cos(angle), np.sin(angle), 0.0])
    axis_y = np.array([-np.sin(angle), np.cos(angle), 0.0])
    axis_z = np.array([0.0, 0.0, 1.0])
    centre = np.asarray(obj.coords_3d)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    corners = centre + h * (signs @ np.stack([axis_x, axis_y, axis_z]))  # [8, 3]
    pixels = camera.project(corners)  # [8, 3]
    normals, polygons, centres = [], [], []
    for axis_index, axis in enumerate((axis_x, axis_y, axis_z)):
        for sign in (-1, 1):
            face_centre = centre + sign * h * axis
            if np.dot(sign * axis, camera.position - face_centre) <= 0:
                continue  # the face looks away from the camera
            on_face = [i for i in range(8) if signs[i, axis_index] == sign]
            a, b, c, d = on_face  # corner order (0,0), (0,1), (1,0), (1,1) in the other two axes
            normals.append(sign * axis)
            polygons.append(_polygon(pixels[[a, b, d, c]]))
            centres.append(face_centre)
    colours = shade(obj.color, obj.material, np.array(normals), _views(np.array(centres), camera))
    drawing = Drawing(index, float(camera.project(centre[None])[0, 2]))
    drawing.silhouette = convex_hull(pixels[:, :2])
    drawing.shadow = _shadow(corners, camera)
    drawing.faces = [(polygon, _rgb(rgb)) for polygon, rgb in zip(polygons, colours, strict=True)]
    if obj.material == "metal":  # mirrored light: a band across each side, a glint on top
        for polygon, normal, rgb in zip(polygons, normals, colours, strict=True):
            if normal[2] > 0.5:
                drawing.faces.append((_glint(polygon), _rgb(np.minimum(255, rgb * 0.4 + 170))))
            else:
                drawing.faces.append((_band(polygon), _rgb(np.minimum(255, rgb * 1.6 + 30))))
    return drawing


def _band(polygon: list[Point], start: float = 0.55, end: float = 0.8) -> list[Point]:
    """The part of a quad face between fractions `start` and `end` along its first side pair."""
    p0, p1, p2, p3 = (np.array(p) for p in polygon)  # (0,0), (0,1), (1,1), (1,0)
    corners = [
        p0 + start * (p3 - p0),
        p1 + start * (p2 - p1),
        p1 + end * (p2 - p1),
        p0 + end * (p3 - p0),
    ]
    return [(float(x), float(y)) for x, y in corners]


def _glint(polygon: list[Point]) -> list[Point]:
    """A smaller copy of a face polygon, pulled towards its first corner: a specular patch."""
    points = np.array(polygon)
    anchor = points.mean(axis=0) * 0.6 + points[0] * 0.4
    return [(float(x), float(y)) for x, y in anchor + 0.45 * (points - points.mean(axis=0))]


def _cylinder(index: int, obj: SceneObject, camera: Camera) -> Drawing:
    radius = SIZES[obj.size]
    centre = np.asarray(obj.coords_3d)
    angles = np.linspace(0, 2 * np.pi, CYLINDER_SEGMENTS, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=-1)  # [S, 3]
    bottom = centre + radius * ring - [0, 0, radius]  # [S, 3]
    top = centre + radius * ring + [0, 0, radius]
    bottom_px, top_px = camera.project(bottom), camera.project(top)
    mid = (angles + np.pi / CYLINDER_SEGMENTS)[:, None]
    normals = np.concatenate([np.cos(mid), np.sin(mid), np.zeros_like(mid)], axis=-1)  # [S, 3]
    strip_centres = centre + radius * normals
    visible = np.sum(normals * (camera.position - strip_centres), axis=-1) > 0
    colours = shade(obj.color, obj.material, normals, _views(strip_centres, camera))
    drawing = Drawing(index, float(camera.project(centre[None])[0, 2]))
    drawing.silhouette = convex_hull(np.concatenate([bottom_px, top_px])[:, :2])
    drawing.shadow = _shadow(np.concatenate([bottom, top]), camera)
    for s in np.flatnonzero(visible):
        t = (s + 1) % CYLINDER_SEGMENTS
        quad = np.stack([bottom_px[s], bottom_px[t], top_px[t], top_px[s]])
        drawing.faces.append((_polygon(quad), _rgb(colours[s])))
    top_centre = centre + [0, 0, radius]
    cap = shade(
        obj.color, obj.material, np.array([[0.0, 0.0, 1.0]]), _views(top_centre[None], camera)
    )
    cap_rgb = cap[0] if obj.material == "metal" else np.minimum(255, cap[0] * 1.12 + 12)
    drawing.faces.append((_polygon(top_px), _rgb(cap_rgb)))
    if obj.material == "metal":
        drawing.faces.append((_glint(_polygon(top_px)), _rgb(np.minimum(255, cap[0] * 0.4 + 170))))
    return drawing


def _sphere(index: int, obj: SceneObject, camera: Camera) -> Drawing:
    radius = SIZES[obj.size]
    centre = np.asarray(obj.coords_3d)
    cx, cy, depth = camera.project(centre[None])[0]
    distance = float(np.linalg.norm(camera.position - centre))
    r_px = camera.focal * radius / np.sqrt(distance**2 - radius**2)
    x0, y0 = int(np.floor(cx - r_px)), int(np.floor(cy - r_px))
    x1, y1 = int(np.ceil(cx + r_px)) + 1, int(np.ceil(cy + r_px)) + 1
    xs = (np.arange(x0, x1) + 0.5 - cx) / r_px  # [w]
    ys = (np.arange(y0, y1) + 0.5 - cy) / r_px  # [h]
    nx, ny = np.meshgrid(xs, -ys)  # [h, w], ny points up
    inside = nx**2 + ny**2 <= 1.0
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
    right, up, forward = camera.axes
    normals = nx[..., None] * right + ny[..., None] * up - nz[..., None] * forward  # [h, w, 3]
    normals = normals.reshape(-1, 3)
    views = _views(centre + radius * normals, camera)
    rgb = shade(obj.color, obj.material, normals, views).reshape(*nx.shape, 3)  # [h, w, 3]
    sprite = Image.fromarray(np.round(rgb).astype(np.uint8), "RGB")
    mask = Image.fromarray(inside.astype(np.uint8) * 255, "L")
    drawing = Drawing(index, float(depth), sprite=(x0, y0, sprite, mask))
    rim = np.cross(LIGHT, [0.0, 0.0, 1.0])  # the outline the key light sees: a great circle
    rim /= np.linalg.norm(rim)
    across = np.cross(LIGHT, rim)
    turns = np.linspace(0, 2 * np.pi, CYLINDER_SEGMENTS, endpoint=False)[:, None]  # [S, 1]
    outline = centre + radius * (np.cos(turns) * rim + np.sin(turns) * across)  # [S, 3]
    drawing.shadow = _shadow(outline, camera)
    return drawing


def layout(objects: Sequence[SceneObject], camera: Camera) -> list[Drawing]:
    """Drawings of all objects in painter's order (farthest first)."""
    builders = {"cube": _cube, "cylinder": _cylinder, "sphere": _sphere}
    drawings = [builders[obj.shape](i, obj, camera) for i, obj in enumerate(objects)]
    return sorted(drawings, key=lambda drawing: -drawing.depth)


# ---------------------------------------------------------------------------------------------
# Rasterising
# ---------------------------------------------------------------------------------------------


_GROUND_CACHE: dict[tuple[int, int], Image.Image] = {}
_SHADOWED_CACHE: dict[tuple[int, int], Image.Image] = {}


def ground(camera: Camera) -> Image.Image:
    """The ground plane: a vertical grey gradient (far = darker), cached per image size."""
    key = (camera.width, camera.height)
    if key not in _GROUND_CACHE:
        rows = np.linspace(GROUND_TOP, GROUND_BOTTOM, camera.height)[:, None, None]
        pixels = np.broadcast_to(rows, (camera.height, camera.width, 3))
        _GROUND_CACHE[key] = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
    return _GROUND_CACHE[key]


def shaded_ground(drawings: Sequence[Drawing], camera: Camera) -> Image.Image:
    """The ground with every object's soft shadow: the shadow polygons, blurred, blend the ground
    towards its shadowed copy (ground × (1 - SHADOW_DARKNESS × shadow))."""
    shadows = Image.new("L", (camera.width, camera.height), 0)
    pen = ImageDraw.Draw(shadows)
    for drawing in drawings:
        if len(drawing.shadow) >= 3:
            pen.polygon(drawing.shadow, fill=255)
    shadows = shadows.filter(ImageFilter.GaussianBlur(SHADOW_BLUR))
    return Image.composite(shadowed_ground(camera), ground(camera), shadows)


def shadowed_ground(camera: Camera) -> Image.Image:
    """The ground under a full shadow, cached per image size."""
    key = (camera.width, camera.height)
    if key not in _SHADOWED_CACHE:
        pixels = np.asarray(ground(camera), dtype=np.float32) * (1.0 - SHADOW_DARKNESS)
        _SHADOWED_CACHE[key] = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
    return _SHADOWED_CACHE[key]


def draw_ids(drawings: Sequence[Drawing], camera: Camera) -> np.ndarray:
    """[H, W] uint8 object-ID buffer: 0 = ground, i + 1 = object i (the visible one)."""
    return draw(drawings, camera, with_image=False)[1]


def draw(
    drawings: Sequence[Drawing], camera: Camera, with_image: bool = True
) -> tuple[Image.Image | None, np.ndarray]:
    """The RGB picture and the ID buffer, painted far to near with the same silhouettes.

    Each object's colours go through the mask of the pixels it has just claimed in the ID
    buffer, so picture and buffer agree pixel for pixel.
    """
    ids = Image.new("L", (camera.width, camera.height), 0)
    image = shaded_ground(drawings, camera) if with_image else None
    id_pen = ImageDraw.Draw(ids)
    for drawing in drawings:
        number = drawing.index + 1
        if drawing.sprite is not None:
            x0, y0, sprite, mask = drawing.sprite
            ids.paste(number, (x0, y0, x0 + sprite.width, y0 + sprite.height), mask)
            if image is not None:
                image.paste(sprite, (x0, y0), mask)
            continue
        id_pen.polygon(drawing.silhouette, fill=number)
        if image is None:
            continue
        xs, ys = zip(*drawing.silhouette, strict=True)
        box = (
            max(0, int(np.floor(min(xs)))),
            max(0, int(np.floor(min(ys)))),
            min(camera.width, int(np.ceil(max(xs))) + 1),
            min(camera.height, int(np.ceil(max(ys))) + 1),
        )
        if box[0] >= box[2] or box[1] >= box[3]:
            continue  # entirely outside the picture
        layer = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), drawing.faces[0][1])
        pen = ImageDraw.Draw(layer)
        for polygon, rgb in drawing.faces:
            pen.polygon([(x - box[0], y - box[1]) for x, y in polygon], fill=rgb)
        claimed = ids.crop(box).point(lambda v, n=number: 255 if v == n else 0)
        image.paste(layer, box[:2], claimed)
    return image, np.asarray(ids)


def visible_pixels(ids: np.ndarray, num_objects: int) -> np.ndarray:
    """[num_objects] count of ID-buffer pixels that show each object."""
    return np.bincount(ids.ravel(), minlength=num_objects + 1)[1 : num_objects + 1]


def boxes(ids: np.ndarray, num_objects: int) -> list[list[int]]:
    """Tight [x, y, w, h] box of each object's visible pixels ([0, 0, 0, 0] if none)."""
    result = []
    for i in range(num_objects):
        rows = np.flatnonzero((ids == i + 1).any(axis=1))
        cols = np.flatnonzero((ids == i + 1).any(axis=0))
        if rows.size == 0:
            result.append([0, 0, 0, 0])
            continue
        x, y = int(cols[0]), int(rows[0])
        result.append([x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1])
    return result


def run_lengths(ids: np.ndarray, num_objects: int) -> list[str]:
    """CLEVR-Ref+ masks: "b,f,b,f,..." run lengths over the row-major mask, background first."""
    flat = ids.ravel()
    result = []
    for i in range(num_objects):
        mask = flat == i + 1
        changes = np.flatnonzero(mask[1:] != mask[:-1]) + 1
        edges = np.concatenate([[0], changes, [flat.size]])
        runs = np.diff(edges).tolist()
        if mask[0]:
            runs.insert(0, 0)
        result.append(",".join(map(str, runs)))
    return result


def decode_run_lengths(text: str, height: int, width: int) -> np.ndarray:
    """Inverse of run_lengths for one object: [height, width] bool mask."""
    runs = [int(n) for n in text.split(",")]
    values = np.arange(len(runs)) % 2 == 1  # background, object, background, ...
    return np.repeat(values, runs).reshape(height, width)


def object_ids(scene: Scene, image_size: tuple[int, int], where: str) -> np.ndarray:
    """[H0, W0] int16 map: 0 ground, k + 1 where object k is visible. From the scene's masks
    when it has them, else discs of the object's projected radius around pixel_coords drawn far
    to near (CLEVR's camera: a large object at depth 10 is a disc of radius ~36 px at 480×320)."""
    height0, width0 = image_size
    ids = np.zeros((height0, width0), dtype=np.int16)
    if scene.masks is not None:
        for k, text in enumerate(scene.masks):
            try:
                runs_total = sum(int(n) for n in text.split(","))
                if runs_total != height0 * width0:
                    raise ValueError(f"covers {runs_total} pixels, image has {height0 * width0}")
                ids[decode_run_lengths(text, height0, width0)] = k + 1
            except ValueError as error:
                raise DataError(f"{where}: obj_mask of object {k}: {error}") from None
        return ids
    focal = (width0 / 2) / math.tan(math.radians(CAMERA_FOV_DEGREES) / 2)
    ys, xs = np.mgrid[0:height0, 0:width0] + 0.5  # pixel centres
    far_to_near = sorted(range(len(scene.objects)), key=lambda k: -scene.objects[k].pixel_coords[2])
    for k in far_to_near:
        x, y, depth = scene.objects[k].pixel_coords
        radius = focal * SIZES.get(scene.objects[k].size, 0.5) / max(depth, 1e-3)
        ids[(xs - x) ** 2 + (ys - y) ** 2 <= max(radius, 1.0) ** 2] = k + 1
    return ids
