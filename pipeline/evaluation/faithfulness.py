"""Faithfulness: does each step's attention fall on the objects its program step selects?

"What color is the large cube left of the red sphere?" runs as Find[red sphere], Transform[left],
Filter[large cube], DescribeOne. Executing the program on the scene says which objects each of
those steps should select: the red sphere, the things left of it, the large cubes among them.
After step t the model holds an attention map on top of its stack; softmax over the H×W cells
turns it into a distribution, and the share of it that lands on the selected objects' pixels
(attention spread evenly within a cell) is that step's faithfulness. Uniform attention would
score the objects' share of the image: reported next to it as the chance level.

Objects come from the scenes: the run-length masks of mini-CLEVR and CLEVR-Ref+ (visible
pixels), or for real CLEVR a disc around each object's pixel centre, radius = focal length ×
3D size / depth, nearer discs drawn over farther ones (pipeline.clevr.render.object_ids, the
same map pretraining labels its cells from). Steps of modules that push no attention
(NoOp, DescribeOne, DescribeTwo) and steps whose node selects no object are not scored.

Shape legend: T steps, N = H·W cells, K objects in a scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.clevr.executor import ExecutionError, ObjectIndex, run
from pipeline.clevr.readers import ProgramNode, Scene
from pipeline.clevr.render import object_ids
from pipeline.errors import DataError
from snmn.layout import layout_with_nodes

# Modules whose step leaves a new attention map on top of the stack.
ATTENTION_MODULES = ("Find", "Transform", "Filter", "And", "Or", "Scene")
COVERAGE_CACHE = 256  # images whose object coverage is kept


def selected_objects(program: Sequence[ProgramNode], scene: Scene) -> list[frozenset[int] | None]:
    """Per program node, the objects it selects (None for counts, answers, yes/no)."""
    selected: list[frozenset[int] | None] = []
    for value in run(program, scene):
        if isinstance(value, frozenset):
            selected.append(value)
        elif isinstance(value, ObjectIndex):
            selected.append(frozenset([int(value)]))
        else:
            selected.append(None)
    return selected


def cell_index(grid: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """[height, width] the grid cell (row-major, 0..N-1) each pixel of an image of image_size
    (height, width) falls in, on a grid of (H, W) cells."""
    grid_height, grid_width = grid
    height, width = image_size
    rows = np.arange(height) * grid_height // height  # [height]
    cols = np.arange(width) * grid_width // width  # [width]
    return rows[:, None] * grid_width + cols[None, :]


def object_cell_pixels(labels: np.ndarray, cells: np.ndarray, num_objects: int) -> np.ndarray:
    """[K, N] how many pixels of each object fall in each cell."""
    num_cells = int(cells.max()) + 1
    combined = labels.astype(np.int64) * num_cells + cells  # [height, width]
    counts = np.bincount(combined.ravel(), minlength=(num_objects + 1) * num_cells)
    return counts.reshape(num_objects + 1, num_cells)[1:]


@dataclass
class _Sums:
    steps: int = 0
    on_objects: float = 0.0  # Σ attention share on the selected objects
    chance: float = 0.0  # Σ share uniform attention would put there

    def add(self, share: float, chance: float) -> None:
        self.steps += 1
        self.on_objects += share
        self.chance += chance

    def summary(self) -> dict[str, Any]:
        mean = (lambda total: total / self.steps) if self.steps else (lambda total: None)
        return {
            "steps": self.steps,
            "attention_on_objects": mean(self.on_objects),
            "uniform_attention_on_objects": mean(self.chance),
        }


@dataclass
class FaithfulnessMeter:
    """Accumulates, per expert module type, how much attention lands on the selected objects.

    `programs[row]` and `scenes[image_index]` describe the split's questions; `add` takes the
    table rows of a batch and their attention distributions over cells ([B, T, N], each row
    summing to 1).
    """

    programs: Sequence[Sequence[ProgramNode] | None]
    scenes: dict[int, Scene]
    image_index: np.ndarray  # [rows of the split] image of each question
    grid: tuple[int, int]  # (H, W) cells
    image_size: tuple[int, int]  # (height, width) pixels
    sums: dict[str, _Sums] = field(default_factory=dict, init=False)
    questions: int = field(default=0, init=False)
    skipped_questions: int = field(default=0, init=False)  # no program, or no scene
    empty_steps: int = field(default=0, init=False)  # the step's node selects no object
    _cells: np.ndarray | None = field(default=None, init=False)
    _coverage: dict[int, np.ndarray] = field(default_factory=dict, init=False)
    _layouts: dict[tuple, list[tuple[str, int]]] = field(default_factory=dict, init=False)

    def add(self, rows: np.ndarray, attention: np.ndarray) -> None:
        for row, maps in zip(rows.tolist(), attention, strict=True):
            program = self.programs[row]
            scene = self.scenes.get(int(self.image_index[row]))
            if program is None or scene is None:
                self.skipped_questions += 1
                continue
            self._add_question(row, program, scene, maps)

    def _add_question(
        self, row: int, program: Sequence[ProgramNode], scene: Scene, maps: np.ndarray
    ) -> None:
        key = tuple((node.function, node.inputs) for node in program)
        steps = self._layouts.get(key)
        if steps is None:
            steps = self._layouts[key] = layout_with_nodes(key)
        try:
            selected = selected_objects(program, scene)
        except ExecutionError as error:
            raise DataError(
                f"question row {row}: program does not run on its scene: {error}"
            ) from None
        coverage = self._scene_coverage(scene)  # [K, N]
        self.questions += 1
        for t, (module, node) in enumerate(steps[: len(maps)]):
            if module not in ATTENTION_MODULES:
                continue
            objects = selected[node]
            if not objects:
                self.empty_steps += 1
                continue
            covered = coverage[sorted(objects)].sum(axis=0)  # [N] in [0, 1]
            share, chance = float(maps[t] @ covered), float(covered.mean())
            self.sums.setdefault(module, _Sums()).add(share, chance)
            self.sums.setdefault("all", _Sums()).add(share, chance)

    def _scene_coverage(self, scene: Scene) -> np.ndarray:
        """[K, N] the fraction of each cell that each object covers, cached for recent images."""
        found = self._coverage.get(scene.image_index)
        if found is None:
            if self._cells is None:
                self._cells = cell_index(self.grid, self.image_size)
            labels = object_ids(scene, self.image_size, f"scene {scene.image_index}")
            pixels = object_cell_pixels(labels, self._cells, len(scene.objects))
            cell_pixels = np.bincount(self._cells.ravel(), minlength=pixels.shape[1])
            if len(self._coverage) >= COVERAGE_CACHE:  # questions come grouped by image
                self._coverage.clear()
            found = self._coverage[scene.image_index] = (pixels / cell_pixels).astype(np.float32)
        return found

    def summary(self) -> dict[str, Any]:
        has_masks = any(scene.masks is not None for scene in self.scenes.values())
        order = [m for m in (*ATTENTION_MODULES, "all") if m in self.sums]
        return {
            "objects_from": "scene masks" if has_masks else "discs around pixel_coords",
            "questions": self.questions,
            "skipped_questions": self.skipped_questions,
            "empty_steps": self.empty_steps,
            "per_module": {module: self.sums[module].summary() for module in order},
        }
