"""Write the mini-CLEVR dataset: images, scenes, questions and CLEVR-Ref expressions.

For "How many spheres are left of the large cube?" to reach the model, this writes
images/train/CLEVR_train_000000.png, the scene graph in scenes/CLEVR_train_scenes.json and the
question with its program and answer in questions/CLEVR_train_questions.json, in exactly the
CLEVR v1.0 layout; the CLEVR-Ref splits loc_{train,val,test} reuse the same pictures (written
again under their own names) with referring expressions and target boxes. The test split has no
answers, programs or scene file, as in the release (loc_test keeps its boxes for P@1).

Image i of a split is drawn from a random generator seeded by (seed, split, i), in worker
processes; one process then picks and balances the questions in image order. So the same seed
gives byte-identical files whatever the number of workers. Everything is written into a hidden
staging folder next to `output_dir` that replaces it only when complete, so a killed run
leaves the previous output (or nothing) and a rerun starts clean.

Replacing is only for what the generator wrote: every dataset it writes holds a small
`.snmn-generated` marker (fixed bytes, so DVC's hash of the folder stays the same from run to
run), and an `output_dir` that holds files but no marker, say a thesis folder typed by mistake,
stops the run with one line before anything is touched. The staging folder and the swap live in
the parent folder, so the run holds `writer_lock` on the parent: a second `snmn generate` into
the same place stops at once. A split left with no question at all (every candidate rejected)
is a DataError too, and the previous dataset stays as it was.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.clevr.readers import Scene
from pipeline.clevr.world import Camera
from pipeline.config import GenerateConfig
from pipeline.errors import ConfigError, DataError
from pipeline.locks import writer_lock
from pipeline.minclevr.families import Candidate, Selector, family_table, sample_candidates
from pipeline.minclevr.phrases import program_to_json
from pipeline.minclevr.scenes import for_split, sample_scene, scene_to_json
from pipeline.progress import Progress
from pipeline.tables import atomic_path

SPLITS = ("train", "val", "test")  # CLEVR splits; loc_{split} reuses the split's pictures
MAX_OBJECTS = 10  # CLEVR's maximum; the ID buffer and the placement rules are sized for it
VERSION = "mini-clevr 1.0"
MARKER_FILE = ".snmn-generated"  # in every dataset written here; fixed content, see _MARKER
_MARKER = json.dumps({"written_by": "snmn generate", "version": VERSION}) + "\n"


@dataclass(frozen=True)
class ImageTask:
    config: GenerateConfig
    staging: str
    split: str
    index: int


@dataclass
class ImageResult:
    scene: Scene
    questions: list[Candidate]
    refexps: list[Candidate]


@dataclass(frozen=True)
class GenerateSummary:
    images: int
    questions: int
    refexps: int
    seconds: float
    output_dir: str


def generate(config: GenerateConfig) -> GenerateSummary:
    """Write the whole dataset under config.output_dir; returns what was written."""
    check_config(config)
    output = Path(config.output_dir)
    check_replaceable(output)
    with writer_lock(output.parent):  # the staging folder and the swap happen in the parent
        return _generate(config, output)


def check_replaceable(output: Path) -> None:
    """DataError unless `output` is missing, empty, or a dataset this generator wrote."""
    if output.is_dir() and ((output / MARKER_FILE).is_file() or not any(output.iterdir())):
        return
    if output.exists() or output.is_symlink():
        raise DataError(
            f"{output}: not written by `snmn generate` (no {MARKER_FILE} file), so it is not "
            "replaced and nothing was touched; set generate.output_dir to a new folder, "
            "or move this one away"
        )


def _generate(config: GenerateConfig, output: Path) -> GenerateSummary:
    start = time.perf_counter()
    staging = output.parent / f".{output.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    try:
        totals = _write_staging(config, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_dir(staging, output)
    seconds = time.perf_counter() - start
    summary = GenerateSummary(**totals, seconds=seconds, output_dir=str(output))
    print(
        f"generate: {summary.images} images, {summary.questions} questions, "
        f"{summary.refexps} referring expressions in {seconds:.1f} s "
        f"({summary.images / max(seconds, 1e-9):.1f} images/s) -> {output}",
        flush=True,
    )
    return summary


def _write_staging(config: GenerateConfig, staging: Path) -> dict[str, int]:
    """Every split into the staging folder, marker included; returns the counts."""
    splits = [s for s in SPLITS if config.num_images.get(s, 0) > 0]
    with_refexps = config.refexps_per_image > 0
    for split in splits:
        (staging / "images" / split).mkdir(parents=True)
        if with_refexps:
            (staging / "images" / f"loc_{split}").mkdir(parents=True)
    (staging / "scenes").mkdir(parents=True, exist_ok=True)
    (staging / "questions").mkdir(parents=True, exist_ok=True)
    (staging / MARKER_FILE).write_text(_MARKER)

    totals = {"images": 0, "questions": 0, "refexps": 0}
    images = sum(config.num_images[split] for split in splits)
    progress = Progress(images, "images", "generate", stream=sys.stdout)  # stderr: errors only
    pool = _pool(config.workers)
    try:
        for split in splits:
            tasks = [
                ImageTask(config, str(staging), split, i) for i in range(config.num_images[split])
            ]
            results = (
                pool.imap(build_image, tasks, chunksize=4) if pool else map(build_image, tasks)
            )
            counts = _write_split(config, staging, split, _counted(results, progress, split))
            for key, value in counts.items():
                totals[key] += value
    finally:
        if pool:
            pool.close()
            pool.join()
    return totals


def check_config(config: GenerateConfig) -> None:
    """Values the generator cannot work with are ConfigErrors naming the key."""
    for split, count in config.num_images.items():
        if split not in SPLITS:
            raise ConfigError(
                f"generate.num_images.{split}: unknown split (known: {', '.join(SPLITS)})"
            )
        if count < 0:
            raise ConfigError(f"generate.num_images.{split}: must be >= 0, got {count}")
    if not 2 <= config.min_objects <= config.max_objects <= MAX_OBJECTS:
        raise ConfigError(
            f"generate.min_objects/max_objects: need 2 <= min <= max <= {MAX_OBJECTS}, "
            f"got {config.min_objects} and {config.max_objects}"
        )
    for key in ("questions_per_image", "refexps_per_image", "min_visible_pixels"):
        if getattr(config, key) < 0:
            raise ConfigError(f"generate.{key}: must be >= 0, got {getattr(config, key)}")
    for key in ("image_width", "image_height", "workers"):
        if getattr(config, key) < 1:
            raise ConfigError(f"generate.{key}: must be >= 1, got {getattr(config, key)}")


def image_rng(seed: int, split: str, index: int, purpose: str = "image") -> random.Random:
    """The random generator of one image (string seeds hash stably across processes)."""
    return random.Random(f"mini-clevr/{seed}/{split}/{index}/{purpose}")


def build_image(task: ImageTask) -> ImageResult:
    """Worker: sample and render one scene, write its picture(s), sample candidate questions."""
    config = task.config
    rng = image_rng(config.seed, task.split, task.index)
    camera = Camera(config.image_width, config.image_height)
    objects = (config.min_objects, config.max_objects)
    rendered = sample_scene(rng, task.split, task.index, objects, config.min_visible_pixels, camera)
    buffer = io.BytesIO()
    rendered.image.save(buffer, "PNG")
    scene = rendered.scene
    images = Path(task.staging) / "images"
    (images / task.split / scene.image_filename).write_bytes(buffer.getvalue())
    refexps: list[Candidate] = []
    if config.refexps_per_image > 0:
        loc = for_split(scene, f"loc_{task.split}")
        (images / loc.split / loc.image_filename).write_bytes(buffer.getvalue())
        refexps = sample_candidates(scene, rng, "ref")
    questions = sample_candidates(scene, rng, "vqa") if config.questions_per_image > 0 else []
    return ImageResult(scene, questions, refexps)


def _pool(workers: int) -> Any:
    if workers <= 1:
        return None
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(workers)


def _counted(
    results: Iterator[ImageResult], progress: Progress, split: str
) -> Iterator[ImageResult]:
    """`results`, each image counted on the progress line once its questions are picked."""
    for result in results:
        yield result
        progress.advance(1, f"{split} split")


def _write_split(
    config: GenerateConfig, staging: Path, split: str, results: Iterator[ImageResult]
) -> dict[str, int]:
    """Pick the questions image by image, then write the split's JSON files."""
    questions_selector, refexps_selector = Selector(), Selector()
    scenes, questions, refexps = [], [], []
    loc = f"loc_{split}"
    for result in results:
        scene = result.scene
        pick_rng = image_rng(config.seed, split, scene.image_index, "pick")
        picked = questions_selector.pick_questions(
            result.questions, config.questions_per_image, pick_rng
        )
        for candidate in picked:
            questions.append(
                _question(scene, len(questions), candidate, with_answer=split != "test")
            )
        if config.refexps_per_image > 0:
            loc_scene = for_split(scene, loc)
            picked = refexps_selector.pick_refexps(
                result.refexps, config.refexps_per_image, pick_rng
            )
            for candidate in picked:
                refexps.append(_refexp(loc_scene, len(refexps), candidate))
        scenes.append(scene)
    images = config.num_images[split]
    _check_not_empty(config, split, questions, config.questions_per_image, images)
    _check_not_empty(config, loc, refexps, config.refexps_per_image, images)
    _write_json(config, staging, "questions", split, questions)
    if split != "test":
        _write_json(config, staging, "scenes", split, [scene_to_json(s) for s in scenes])
    if config.refexps_per_image > 0:
        _write_json(config, staging, "questions", loc, refexps)
        loc_scenes = [scene_to_json(for_split(s, loc)) for s in scenes]
        _write_json(config, staging, "scenes", loc, loc_scenes)
    return {
        "images": images,
        "questions": len(questions),
        "refexps": len(refexps),
    }


def _check_not_empty(
    config: GenerateConfig, split: str, entries: list[Any], per_image: int, images: int
) -> None:
    """Questions were asked for (per_image > 0) but none survived: refuse the empty split."""
    if per_image > 0 and not entries:
        path = Path(config.output_dir) / "questions" / f"CLEVR_{split}_questions.json"
        raise DataError(
            f"{path}: no question survived the selection on any of the {images} {split} images; "
            "nothing was written and the previous dataset is kept"
        )


def _question(
    scene: Scene, position: int, candidate: Candidate, with_answer: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "split": scene.split,
        "image_index": scene.image_index,
        "image_filename": scene.image_filename,
        "question_index": position,
        "question": candidate.text,
    }
    if with_answer:
        entry["answer"] = candidate.answer
        entry["program"] = program_to_json(candidate.program)
        entry["question_family_index"] = candidate.family
    return entry


def _refexp(scene: Scene, position: int, candidate: Candidate) -> dict[str, Any]:
    target = scene.objects[candidate.target]
    return {
        "split": scene.split,
        "image_index": scene.image_index,
        "image_filename": scene.image_filename,
        "question_index": position,
        "question": candidate.text,
        "program": program_to_json(candidate.program),
        "bbox": list(target.bbox),
        "answer": [candidate.target],  # ignored by readers, as CLEVR-Ref's answer field
        "question_family_index": candidate.family,
    }


def _write_json(
    config: GenerateConfig, staging: Path, kind: str, split: str, entries: list[Any]
) -> None:
    """questions/CLEVR_{split}_questions.json or scenes/CLEVR_{split}_scenes.json."""
    info: dict[str, Any] = {"split": split, "version": VERSION, "seed": config.seed}
    if kind == "questions":
        info["families"] = family_table()
    path = staging / kind / f"CLEVR_{split}_{kind}.json"
    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        json.dump({"info": info, kind: entries}, handle, separators=(",", ":"))


def _replace_dir(staging: Path, output: Path) -> None:
    """Swap the finished staging folder in for the output folder."""
    previous = output.parent / f".{output.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if output.exists():
        os.replace(output, previous)
    os.replace(staging, output)
    shutil.rmtree(previous, ignore_errors=True)
