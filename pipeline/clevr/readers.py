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

import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from pipeline.clevr.functions import FUNCTION_ARITY, VALUE_FUNCTIONS
from pipeline.clevr.world import RELATIONS
from pipeline.errors import DataError

IMAGE_NAME = re.compile(r"_(\d+)\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder().scan_once
_OFFICIAL_NODE = itemgetter("function", "inputs", "value_inputs")
_END = object()  # ends the inputs in a node key; no JSON value equals it


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


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while millions of small containers are made.

    Reading CLEVR's 700k train questions keeps millions of tuples alive and none of them forms a
    cycle (reference counting frees them); with the collector on, it would walk the whole growing
    heap again and again and make the read several times slower.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def stream_json(path: str | Path, list_key: str) -> tuple[dict[str, Any], Iterator[Any]]:
    """`info` and the entries of `list_key`, parsed one entry at a time as they are iterated.

    CLEVR's train questions (700k entries, ~10M JSON values) then never exist as Python objects
    all at once: only the file's text and one entry. json's C scanner parses each entry; a file
    whose list comes before its "info" is parsed whole first.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text: {error}") from None
    return _JsonList(path, text, list_key).open()


class _JsonList:
    """Walks `{"info": {...}, "<list_key>": [entry, ...]}` in `text`, entries on demand."""

    def __init__(self, path: Path, text: str, list_key: str) -> None:
        self.path, self.text, self.list_key = path, text, list_key

    def open(self) -> tuple[dict[str, Any], Iterator[Any]]:
        info: dict[str, Any] | None = None
        entries = None
        i = self._expect(self._skip(0), "{", "expected an object")
        while self._at(i) != "}":
            key, i = self._value(i)
            i = self._expect(i, ":", "expected ':'")
            if key == self.list_key and self._at(i) == "[":
                if info is not None:  # the usual order: stream the entries
                    return info, self._entries(i)
                entries, i = self._value(i)
            else:
                value, i = self._value(i)
                if key == "info" and isinstance(value, dict):
                    info = value
            if self._at(i) == ",":
                i = self._skip(i + 1)
            elif self._at(i) != "}":
                self._fail(i, "expected ',' or '}'")
        self._end(i + 1)
        if entries is None:
            raise DataError(f"{self.path}: expected an object with a '{self.list_key}' list")
        return info or {}, iter(entries)

    def _entries(self, i: int) -> Iterator[Any]:
        i = self._skip(i + 1)
        if self._at(i) == "]":
            i += 1
        else:
            while True:
                entry, i = self._value(i)
                yield entry
                if self._at(i) == ",":
                    i = self._skip(i + 1)
                elif self._at(i) == "]":
                    i += 1
                    break
                else:
                    self._fail(i, "expected ',' or ']'")
        i = self._skip(i)
        while self._at(i) == ",":  # keys after the list
            _, i = self._value(self._skip(i + 1))
            _, i = self._value(self._expect(i, ":", "expected ':'"))
        self._end(self._expect(i, "}", "expected '}'"))

    def _value(self, i: int) -> tuple[Any, int]:
        """The JSON value at i, and the position after it and any whitespace."""
        try:
            value, end = _SCAN(self.text, i)  # json's C scanner
        except StopIteration:
            self._fail(i, "expected a value")
        except json.JSONDecodeError as error:
            raise DataError(f"{self.path}: malformed JSON: {error}") from None
        except RecursionError:
            self._fail(i, "nested too deeply")
        return value, self._skip(end)

    def _skip(self, i: int) -> int:
        return _WHITESPACE.match(self.text, i).end()  # type: ignore[union-attr]

    def _at(self, i: int) -> str:
        return self.text[i : i + 1]

    def _expect(self, i: int, char: str, message: str) -> int:
        if self._at(i) != char:
            self._fail(i, message)
        return self._skip(i + 1)

    def _end(self, i: int) -> None:
        if self._skip(i) != len(self.text):
            self._fail(i, "extra data after the top-level object")

    def _fail(self, i: int, message: str) -> NoReturn:
        line = self.text.count("\n", 0, i) + 1
        raise DataError(f"{self.path}: malformed JSON: {message} (line {line}, char {i})")


def questions_info(path: str | Path) -> dict[str, Any]:
    """The `info` of a questions (or CLEVR-Ref+ refexps) file: version "1.0" for CLEVR."""
    return stream_json(path, _list_key(path))[0]


def _list_key(path: str | Path) -> str:
    return "refexps" if "refexps" in Path(path).name else "questions"


def iter_questions(path: str | Path) -> Iterator[Question]:
    """Questions of a CLEVR, CLEVR-Ref or CLEVR-Ref+ (`refexps`) file, one at a time.

    Each raw JSON entry is released once read, so a 700k-question file never lives twice in
    memory; nodes that occur in many programs (`scene`, `filter_color[red]` reading node 0 ...)
    are one shared ProgramNode.
    """
    info, entries = stream_json(path, _list_key(path))
    default_split = str(info.get("split", ""))
    known_nodes: dict[tuple, ProgramNode] = {}
    for position, entry in enumerate(entries):
        try:
            yield _question(position, entry, default_split, known_nodes)
        except DataError as error:
            raise DataError(f"{path}: question {position}: {error}") from None


def read_questions(path: str | Path) -> list[Question]:
    """Read a CLEVR questions file, a CLEVR-Ref file, or CLEVR-Ref+ refexps (`refexps` key)."""
    with paused_gc():
        return list(iter_questions(path))


def read_scenes(path: str | Path) -> list[Scene]:
    """Read a CLEVR scenes file (`relationships` or `relations`; CLEVR-Ref+ boxes and masks)."""
    path = Path(path)
    info, entries = stream_json(path, "scenes")
    default_split = str(info.get("split", ""))
    scenes = []
    with paused_gc():
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
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None
    if head != PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file (image_index {image_index})")


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


def _question(
    position: int, entry: Any, default_split: str, known_nodes: dict[tuple, ProgramNode]
) -> Question:
    if type(entry) is not dict:
        raise DataError("expected an object")
    text = entry.get("question")
    if text is None:
        text = entry.get("refexp")
    if type(text) is not str:
        raise DataError("missing 'question' text")
    image_index = entry.get("image_index")
    if type(image_index) is not int or image_index < 0:
        raise DataError(f"bad image_index {image_index!r}")
    split = entry.get("split", default_split)
    if type(split) is not str:
        raise DataError(f"bad split {split!r}")
    image_filename = entry.get("image_filename")
    if image_filename is None:
        image_filename = f"CLEVR_{split}_{image_index:06d}.png"
    elif type(image_filename) is not str:
        raise DataError(f"bad image_filename {image_filename!r}")
    else:
        match = IMAGE_NAME.search(image_filename)
        if match is None or int(match.group(1)) != image_index:
            raise DataError(f"image_index {image_index} does not match file {image_filename!r}")
    question_index = entry.get("question_index", entry.get("refexp_index", position))
    if type(question_index) is not int:
        raise DataError(f"bad question_index {question_index!r}")
    family = entry.get("question_family_index")
    if family is not None and type(family) is not int:
        raise DataError(f"bad question_family_index {family!r}")
    program = entry.get("program")
    bbox = entry.get("bbox")
    return Question(
        position,
        question_index,
        split,
        image_index,
        image_filename,
        text,
        _answer(entry.get("answer")),
        None if program is None else _program(program, known_nodes),
        family,
        None if bbox is None else _bbox(bbox),
    )


def _answer(answer: Any) -> str | None:
    if type(answer) is str or answer is None:
        return answer
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    if isinstance(answer, int):
        return str(answer)
    if isinstance(answer, list):  # CLEVR-Ref's placeholder answer field is ignored
        return None
    raise DataError(f"bad answer {answer!r}")


def _bbox(bbox: Any) -> tuple[float, float, float, float]:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise DataError(f"bad bbox {bbox!r}")
    return tuple(float(v) for v in bbox)  # type: ignore[return-value]


def _program(program: Any, known_nodes: dict[tuple, ProgramNode]) -> tuple[ProgramNode, ...]:
    """Validate and normalise a program (either form) into ProgramNodes.

    `known_nodes` maps (position, function, *inputs, _END, *value_inputs) of an official-form
    node that reads only earlier nodes to its validated ProgramNode: in a CLEVR file most nodes
    recur thousands of times ("node 1 is filter_color[red] of node 0"), so each costs one look-up.
    """
    if type(program) is not list or not program:
        raise DataError("program must be a non-empty list")
    nodes = []
    sorted_inputs = True  # every node reads earlier nodes only: in range and acyclic
    for i, raw in enumerate(program):
        try:
            function, inputs, values = _OFFICIAL_NODE(raw)
            node = known_nodes.get((i, function, *inputs, _END, *values))
        except (KeyError, TypeError):
            node = None
        if node is None:
            node = _node(i, raw)
            if node.inputs and max(node.inputs) >= i:
                sorted_inputs = False
            elif "function" in raw:
                known_nodes[(i, node.function, *node.inputs, _END, *node.value_inputs)] = node
        nodes.append(node)
    if not sorted_inputs:
        _check_inputs(nodes)
    return tuple(nodes)


def _node(i: int, raw: Any) -> ProgramNode:
    """Validate one node of either form (`function`/`value_inputs` or `type`/`side_inputs`)."""
    if type(raw) is not dict:
        raise DataError(f"program node {i}: expected an object")
    function = raw.get("function", raw.get("type"))
    inputs = raw.get("inputs", [])
    values = raw.get("value_inputs", raw.get("side_inputs", []))
    arity = FUNCTION_ARITY.get(function) if type(function) is str else None
    if arity is None:
        raise DataError(f"program node {i}: unknown function {function!r}")
    if type(inputs) is not list or len(inputs) != arity:
        raise DataError(f"program node {i} ({function}): expected {arity} inputs, got {inputs!r}")
    for j in inputs:
        if type(j) is not int or j < 0:
            raise DataError(f"program node {i} ({function}): bad input {j!r}")
    if type(values) is not list or not all(type(v) is str for v in values):
        raise DataError(f"program node {i} ({function}): bad value_inputs {values!r}")
    if function in VALUE_FUNCTIONS and len(values) != 1:
        raise DataError(f"program node {i} ({function}): expected one value input")
    return ProgramNode(function, tuple(inputs), tuple(values))


def _check_inputs(nodes: list[ProgramNode]) -> None:
    """Inputs in range and no cycle, for programs that are not topologically sorted."""
    size = len(nodes)
    for i, node in enumerate(nodes):
        for j in node.inputs:
            if j >= size:
                raise DataError(
                    f"program node {i} ({node.function}): input {j} out of range 0..{size - 1}"
                )
    state = [0] * size  # 0 unseen, 1 on the path, 2 done
    for start in range(size):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(nodes[start].inputs))]
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


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


def _scene(position: int, entry: Any, default_split: str) -> Scene:
    if not isinstance(entry, dict):
        raise DataError("expected an object")
    image_index = entry.get("image_index")
    if not isinstance(image_index, int) or isinstance(image_index, bool) or image_index < 0:
        raise DataError(f"bad image_index {image_index!r}")
    split = str(entry.get("split", default_split))
    image_filename = entry.get("image_filename") or f"CLEVR_{split}_{image_index:06d}.png"
    if not isinstance(image_filename, str):
        raise DataError(f"bad image_filename {image_filename!r}")
    match = IMAGE_NAME.search(image_filename)
    if match is None or int(match.group(1)) != image_index:
        raise DataError(f"image_index {image_index} does not match file {image_filename!r}")
    raw_objects = entry.get("objects")
    if not isinstance(raw_objects, list):
        raise DataError("missing 'objects' list")
    boxes = entry.get("obj_bbox") or {}
    if not isinstance(boxes, dict):
        raise DataError("obj_bbox must map object numbers to boxes")
    objects = tuple(
        _scene_object(i, obj, boxes.get(str(i + 1))) for i, obj in enumerate(raw_objects)
    )
    return Scene(
        index=position,
        split=split,
        image_index=image_index,
        image_filename=image_filename,
        objects=objects,
        relationships=_relationships(entry, len(objects)),
        directions=_directions(entry.get("directions")),
        masks=_masks(entry.get("obj_mask"), len(objects)),
    )


def _scene_object(i: int, obj: Any, box: Any) -> SceneObject:
    try:
        coords_3d = tuple(float(v) for v in obj.get("3d_coords", (0, 0, 0)))
        pixel_coords = tuple(float(v) for v in obj["pixel_coords"])
        if len(coords_3d) != 3 or len(pixel_coords) != 3:
            raise ValueError("3d_coords and pixel_coords need 3 numbers")
        return SceneObject(
            shape=str(obj["shape"]),
            color=str(obj["color"]),
            material=str(obj["material"]),
            size=str(obj["size"]),
            coords_3d=coords_3d,  # type: ignore[arg-type]
            pixel_coords=pixel_coords,  # type: ignore[arg-type]
            rotation=float(obj.get("rotation", 0.0)),
            bbox=tuple(int(v) for v in box) if box is not None else None,  # type: ignore[arg-type]
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"object {i}: missing or bad field {error}") from None


def _relationships(entry: dict, num_objects: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    relations = entry.get("relationships", entry.get("relations"))
    if not isinstance(relations, dict):
        raise DataError("missing 'relationships'")
    relationships = {}
    for name in RELATIONS:
        rows = relations.get(name)
        if not isinstance(rows, list) or len(rows) != num_objects:
            raise DataError(f"relationships[{name!r}] must list one entry per object")
        for i, row in enumerate(rows):
            if not isinstance(row, list) or not all(
                type(j) is int and 0 <= j < num_objects for j in row
            ):
                raise DataError(f"relationships[{name!r}][{i}] has an object index out of range")
        relationships[name] = tuple(tuple(row) for row in rows)
    return relationships


def _directions(directions: Any) -> dict[str, tuple[float, float, float]]:
    if directions is None:
        return {}
    try:
        result = {str(name): tuple(float(v) for v in vector) for name, vector in directions.items()}
    except (AttributeError, TypeError, ValueError):
        raise DataError("directions must map names to 3-vectors") from None
    if any(len(vector) != 3 for vector in result.values()):
        raise DataError("directions must map names to 3-vectors")
    return result  # type: ignore[return-value]


def _masks(masks: Any, num_objects: int) -> tuple[str, ...] | None:
    if masks is None:
        return None
    if not isinstance(masks, dict) or any(str(i + 1) not in masks for i in range(num_objects)):
        raise DataError("obj_mask must hold one mask per object")
    return tuple(str(masks[str(i + 1)]) for i in range(num_objects))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
