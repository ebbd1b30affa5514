"""Readers for CLEVR v1.0, CLEVR-Ref and (optionally) CLEVR-Ref+ files, validating what they read.

"Is there a red cube left of the sphere?" arrives as one entry of
``questions/CLEVR_val_questions.json`` with its image index and a program
(scene → filter_shape[sphere] → unique → relate[left] → filter_color[red] → filter_shape[cube]
→ exist). These readers accept both program forms (official ``function``/``value_inputs`` and the
generator's raw ``type``/``side_inputs``/``_output``), Python-typed answers (True → "yes", 3 → "3"),
``relationships`` or ``relations`` in scenes, and turn anything malformed into a one-line
DataError that names the file and the question or scene index. Nothing is written here, so a bad
file stops a stage before it writes anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

# Number of program inputs each CLEVR function reads (data.md, "Functions").
FUNCTION_ARITY: dict[str, int] = {
    "scene": 0,
    **{f"filter_{a}": 1 for a in ("color", "shape", "size", "material")},
    "unique": 1,
    "relate": 1,
    **{f"same_{a}": 1 for a in ("color", "shape", "size", "material")},
    "union": 2,
    "intersect": 2,
    "count": 1,
    "exist": 1,
    **{f"query_{a}": 1 for a in ("color", "shape", "size", "material")},
    **{f"equal_{a}": 2 for a in ("color", "shape", "size", "material")},
    "equal_integer": 2,
    "less_than": 2,
    "greater_than": 2,
}
# Functions that take one value input (the attribute value or the relation).
VALUE_FUNCTIONS = frozenset(
    [f"filter_{a}" for a in ("color", "shape", "size", "material")] + ["relate"]
)
RELATIONS = ("left", "right", "front", "behind")
IMAGE_NAME = re.compile(r"_(\d+)\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DataError(ValueError):
    """Malformed dataset input; the message is one line naming the file and the index."""


class ProgramNode(NamedTuple):
    """One step of a CLEVR program: `function(inputs...)` with optional value inputs."""

    function: str
    inputs: tuple[int, ...]
    value_inputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Question:
    """One CLEVR question or CLEVR-Ref expression, as read (answer None on a test split)."""

    index: int  # position in the file
    question_index: int
    split: str
    image_index: int
    image_filename: str
    text: str
    answer: str | None
    program: tuple[ProgramNode, ...] | None
    family: int | None
    bbox: tuple[float, float, float, float] | None  # CLEVR-Ref target [x, y, w, h] in pixels


@dataclass(frozen=True, slots=True)
class SceneObject:
    shape: str
    color: str
    material: str
    size: str
    coords_3d: tuple[float, float, float]
    pixel_coords: tuple[float, float, float]  # x, y, depth of the centre
    rotation: float
    bbox: tuple[int, int, int, int] | None  # CLEVR-Ref+ obj_bbox [x, y, w, h], when present


@dataclass(frozen=True, slots=True)
class Scene:
    index: int
    split: str
    image_index: int
    image_filename: str
    objects: tuple[SceneObject, ...]
    relationships: dict[str, tuple[tuple[int, ...], ...]]  # relation → per object, the js
    directions: dict[str, tuple[float, float, float]]
    masks: tuple[str, ...] | None  # CLEVR-Ref+ obj_mask run-length strings, when present


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def read_json(path: str | Path, list_key: str) -> tuple[dict[str, Any], list[Any]]:
    """Load `{"info": ..., list_key: [...]}`; a missing or malformed file is a DataError."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: malformed JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get(list_key), list):
        raise DataError(f"{path}: expected an object with a '{list_key}' list")
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return info, data[list_key]


def read_questions(path: str | Path) -> list[Question]:
    """Read a CLEVR questions file, a CLEVR-Ref file, or CLEVR-Ref+ refexps (`refexps` key)."""
    path = Path(path)
    list_key = "refexps" if "refexps" in path.name else "questions"
    info, entries = read_json(path, list_key)
    default_split = str(info.get("split", ""))
    questions = []
    for position, entry in enumerate(entries):
        try:
            questions.append(_question(position, entry, default_split))
        except DataError as error:
            raise DataError(f"{path}: question {position}: {error}") from None
    return questions


def read_scenes(path: str | Path) -> list[Scene]:
    """Read a CLEVR scenes file (`relationships` or `relations`; CLEVR-Ref+ boxes and masks)."""
    path = Path(path)
    info, entries = read_json(path, "scenes")
    default_split = str(info.get("split", ""))
    scenes = []
    for position, entry in enumerate(entries):
        try:
            scenes.append(_scene(position, entry, default_split))
        except DataError as error:
            raise DataError(f"{path}: scene {position}: {error}") from None
    return scenes


def check_image_file(path: str | Path, image_index: int) -> None:
    """An image a question points at must exist, be a PNG, and carry its index in its name."""
    path = Path(path)
    match = IMAGE_NAME.search(path.name)
    if match is None or int(match.group(1)) != image_index:
        raise DataError(f"{path}: file name does not match image_index {image_index}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found (image_index {image_index})") from None
    if head != PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file (image_index {image_index})")


def check_images(images_dir: str | Path, questions: list[Question]) -> int:
    """Check every image the questions refer to (once each); returns how many were checked."""
    seen: dict[str, int] = {}
    for question in questions:
        known = seen.get(question.image_filename)
        if known is None:
            check_image_file(Path(images_dir) / question.image_filename, question.image_index)
            seen[question.image_filename] = question.image_index
        elif known != question.image_index:
            raise DataError(
                f"question {question.index}: {question.image_filename} has image_index "
                f"{question.image_index} here and {known} elsewhere"
            )
    return len(seen)


# ---------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------


def _question(position: int, entry: Any, default_split: str) -> Question:
    if not isinstance(entry, dict):
        raise DataError("expected an object")
    text = entry.get("question", entry.get("refexp"))
    if not isinstance(text, str):
        raise DataError("missing 'question' text")
    image_index = entry.get("image_index")
    if not isinstance(image_index, int) or isinstance(image_index, bool) or image_index < 0:
        raise DataError(f"bad image_index {image_index!r}")
    split = str(entry.get("split", default_split))
    image_filename = entry.get("image_filename")
    if image_filename is None:
        image_filename = f"CLEVR_{split}_{image_index:06d}.png"
    elif not isinstance(image_filename, str):
        raise DataError(f"bad image_filename {image_filename!r}")
    else:
        match = IMAGE_NAME.search(image_filename)
        if match is None or int(match.group(1)) != image_index:
            raise DataError(f"image_index {image_index} does not match file {image_filename!r}")
    program = entry.get("program")
    nodes = None if program is None else _program(program)
    family = entry.get("question_family_index")
    bbox = entry.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(f"bad bbox {bbox!r}")
        bbox = tuple(float(v) for v in bbox)
    question_index = entry.get("question_index", entry.get("refexp_index", position))
    return Question(
        index=position,
        question_index=int(question_index),
        split=split,
        image_index=image_index,
        image_filename=image_filename,
        text=text,
        answer=_answer(entry.get("answer")),
        program=nodes,
        family=int(family) if isinstance(family, int) else None,
        bbox=bbox,
    )


def _answer(answer: Any) -> str | None:
    if answer is None:
        return None
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, (int, str)):
        return str(answer)
    if isinstance(answer, list):  # CLEVR-Ref's placeholder answer field is ignored
        return None
    raise DataError(f"bad answer {answer!r}")


def _program(program: Any) -> tuple[ProgramNode, ...]:
    """Validate and normalise a program (either form) into ProgramNodes."""
    if not isinstance(program, list) or not program:
        raise DataError("program must be a non-empty list")
    nodes = []
    size = len(program)
    for i, raw in enumerate(program):
        if not isinstance(raw, dict):
            raise DataError(f"program node {i}: expected an object")
        function = raw.get("function", raw.get("type"))
        arity = FUNCTION_ARITY.get(function)
        if arity is None:
            raise DataError(f"program node {i}: unknown function {function!r}")
        inputs = raw.get("inputs", [])
        if not isinstance(inputs, list) or len(inputs) != arity:
            raise DataError(f"program node {i} ({function}): expected {arity} inputs, got {inputs!r}")
        for j in inputs:
            if not isinstance(j, int) or isinstance(j, bool) or not 0 <= j < size:
                raise DataError(f"program node {i} ({function}): input {j!r} out of range 0..{size - 1}")
        values = raw.get("value_inputs", raw.get("side_inputs", []))
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DataError(f"program node {i} ({function}): bad value_inputs {values!r}")
        if function in VALUE_FUNCTIONS and len(values) != 1:
            raise DataError(f"program node {i} ({function}): expected one value input")
        nodes.append(ProgramNode(function, tuple(inputs), tuple(values)))
    if any(j >= i for i, node in enumerate(nodes) for j in node.inputs):
        _check_acyclic(nodes)
    return tuple(nodes)


def _check_acyclic(nodes: list[ProgramNode]) -> None:
    state = [0] * len(nodes)  # 0 unseen, 1 on the path, 2 done
    for start in range(len(nodes)):
        stack = [(start, iter(nodes[start].inputs))]
        if state[start]:
            continue
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state[child] == 1:
                raise DataError(f"program node {node} reads node {child}: the program has a cycle")
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(nodes[child].inputs)))


def _scene(position: int, entry: Any, default_split: str) -> Scene:
    if not isinstance(entry, dict):
        raise DataError("expected an object")
    image_index = entry.get("image_index")
    if not isinstance(image_index, int) or isinstance(image_index, bool) or image_index < 0:
        raise DataError(f"bad image_index {image_index!r}")
    split = str(entry.get("split", default_split))
    image_filename = entry.get("image_filename") or f"CLEVR_{split}_{image_index:06d}.png"
    match = IMAGE_NAME.search(image_filename)
    if match is None or int(match.group(1)) != image_index:
        raise DataError(f"image_index {image_index} does not match file {image_filename!r}")
    raw_objects = entry.get("objects")
    if not isinstance(raw_objects, list):
        raise DataError("missing 'objects' list")
    boxes = entry.get("obj_bbox") or {}
    objects = []
    for i, obj in enumerate(raw_objects):
        try:
            box = boxes.get(str(i + 1))
            objects.append(
                SceneObject(
                    shape=str(obj["shape"]),
                    color=str(obj["color"]),
                    material=str(obj["material"]),
                    size=str(obj["size"]),
                    coords_3d=tuple(float(v) for v in obj.get("3d_coords", (0, 0, 0))),
                    pixel_coords=tuple(float(v) for v in obj["pixel_coords"]),
                    rotation=float(obj.get("rotation", 0.0)),
                    bbox=tuple(int(v) for v in box) if box is not None else None,
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"object {i}: missing or bad field {error}") from None
    relations = entry.get("relationships", entry.get("relations"))
    if not isinstance(relations, dict):
        raise DataError("missing 'relationships'")
    relationships = {}
    for name in RELATIONS:
        rows = relations.get(name)
        if not isinstance(rows, list) or len(rows) != len(objects):
            raise DataError(f"relationships[{name!r}] must list one entry per object")
        for i, row in enumerate(rows):
            if not all(isinstance(j, int) and 0 <= j < len(objects) for j in row):
                raise DataError(f"relationships[{name!r}][{i}] has an object index out of range")
        relationships[name] = tuple(tuple(row) for row in rows)
    directions = {
        name: tuple(float(v) for v in vector)
        for name, vector in (entry.get("directions") or {}).items()
    }
    masks = entry.get("obj_mask")
    if isinstance(masks, dict):
        masks = tuple(str(masks[str(i + 1)]) for i in range(len(objects)))
    return Scene(
        index=position,
        split=split,
        image_index=image_index,
        image_filename=image_filename,
        objects=tuple(objects),
        relationships=relationships,
        directions=directions,
        masks=masks,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
