"""Every stage on a subset of real CLEVR: 100 train images with indices 0..383 and gaps.

A user who downloaded part of CLEVR asks "How many cubes are there?" about CLEVR_train_000005.png
while CLEVR_train_000001.png was never downloaded: extract keeps the images present, and the
stages that read features skip (and count) the scenes and questions whose image has none. The
files are read as they were released, through the readers `snmn` runs; sizes are tiny (ResNet-18
at 64×64, a few steps) so each test takes seconds.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.clevr.readers import read_scenes
from pipeline.config import EvaluateConfig, PretrainConfig, TokenizeConfig
from pipeline.data.shards import FeatureStore, manifest_path
from pipeline.data.tokenization import tokenize
from pipeline.errors import DataError
from pipeline.evaluation.evaluate import evaluate
from pipeline.tracking import NullTracker
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from pipeline.vision.backbone import build_backbone
from pipeline.vision.features import (
    CALIBRATION_FILE,
    Extractor,
    extract_features,
    verify_features,
)
from pipeline.vision.images import image_name, load_image
from pipeline.vision.pretrain import pretrain_backbone
from stages.probe_features import command as probe_command
from tests.conftest import (
    REAL_CLEVR_TRAIN_SAMPLE,
    TINY_GRID,
    tiny_config,
    tiny_extract_config,
)

pytestmark = pytest.mark.skipif(
    not REAL_CLEVR_TRAIN_SAMPLE.is_dir(), reason="the real CLEVR train sample is not at hand"
)
SCENES = REAL_CLEVR_TRAIN_SAMPLE / "scenes" / "CLEVR_train_scenes.json"
ABSENT = 384  # after the sample's last index: no image, no features
SHAPES = ("cube", "sphere", "cylinder")


def extract_settings(root: Path):
    """ResNet-18 at 64×64 over the sample's images, shards of 32 images."""
    images = str(REAL_CLEVR_TRAIN_SAMPLE / "images")
    return tiny_extract_config(root, images_dir=images, shard_size=32, batch_size=16)


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """features/train of the 100 images, extracted as `snmn extract` does."""
    root = tmp_path_factory.mktemp("subset")
    extract_features(extract_settings(root))
    return root


def test_extract_keeps_exactly_the_images_present(subset):
    indices = [scene.image_index for scene in read_scenes(SCENES)]
    assert len(indices) == 100 and max(indices) <= 383 and indices != list(range(100))
    store = FeatureStore(manifest_path(subset / "features", "train"))
    assert store.image_indices.tolist() == indices
    assert len(store.manifest["shards"]) == 4 and store.manifest["num_images"] == 100
    assert verify_features(extract_settings(subset)) == 4  # --verify on a subset

    backbone, _ = build_backbone("resnet18", "random", extract_settings(subset).seed)
    calibration = torch.load(subset / "features" / CALIBRATION_FILE, weights_only=True)
    backbone.trunk.load_state_dict(calibration["state"], strict=False)
    extractor = Extractor(backbone, torch.device("cpu"), "float16", 1)
    for index in (indices[1], indices[50], indices[-1]):  # read back by image index
        path = REAL_CLEVR_TRAIN_SAMPLE / "images" / "train" / image_name("train", index)
        image = torch.from_numpy(load_image(path, 64, 64, index))[None]  # [1, 64, 64, 3]
        expected = extractor(image, str(path))[0].astype(np.float32)  # [4, 4, 256]
        np.testing.assert_allclose(store[index].astype(np.float32), expected, atol=0.02, rtol=0.02)
    gap = next(index for index in range(400) if index not in indices)
    with pytest.raises(DataError, match=f"no features for image index {gap} "):
        store[gap]


def test_pretrain_skips_a_scene_whose_image_is_absent(tmp_path, caplog):
    shutil.copytree(REAL_CLEVR_TRAIN_SAMPLE / "images" / "train", tmp_path / "images" / "train")
    shutil.copytree(REAL_CLEVR_TRAIN_SAMPLE / "scenes", tmp_path / "scenes")
    deleted = read_scenes(SCENES)[2].image_filename
    (tmp_path / "images" / "train" / deleted).unlink()
    config = PretrainConfig(
        images_dir=str(tmp_path / "images"),
        scenes_dir=str(tmp_path / "scenes"),
        output_path=str(tmp_path / "backbone.pt"),
        metrics_path=str(tmp_path / "pretrain.json"),
        curve_path=str(tmp_path / "curve.csv"),
        input_height=64,
        input_width=64,
        epochs=1,
        batch_size=4,
        max_images=8,
        holdout_images=2,
        log_every=1,
        torch_threads=1,
    )
    with caplog.at_level(logging.INFO, logger="snmn.pretrain"):
        summary = pretrain_backbone(config)
    metrics = json.loads((tmp_path / "pretrain.json").read_text())
    assert metrics["skipped_scenes"] == 1
    assert (summary.train_images, summary.holdout_images) == (6, 2)  # 8 scenes with images
    assert f"skipped 1 of 100 scenes: their images are absent from {tmp_path}" in caplog.text
    assert f"(the first: {deleted})" in caplog.text


def test_probe_skips_a_scene_without_features(subset, tmp_path):
    released = json.loads(SCENES.read_text())
    scenes = dict(released)
    absent = dict(
        released["scenes"][0], image_index=ABSENT, image_filename=image_name("train", ABSENT)
    )
    scenes["scenes"] = [*released["scenes"], absent]
    scenes_path = tmp_path / "CLEVR_train_scenes.json"
    scenes_path.write_text(json.dumps(scenes))
    output = tmp_path / "probe.json"
    manifest = manifest_path(subset / "features", "train")
    arguments = ["--manifest", str(manifest), "--scenes", str(scenes_path), "--folds", "2"]
    result = CliRunner().invoke(probe_command, [*arguments, "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 scenes: their images have no features" in result.output
    found = json.loads(output.read_text())
    objects = sum(len(scene["objects"]) for scene in released["scenes"])
    assert found["skipped_scenes"] == 1
    assert (found["probe"]["color"]["objects"], found["probe"]["color"]["images"]) == (objects, 100)


def count_question(scene: dict, shape: str, number: int) -> dict:
    """'How many {shape}s are there?' about a scene, in the official CLEVR format."""
    program = [
        {"function": "scene", "inputs": [], "value_inputs": []},
        {"function": "filter_shape", "inputs": [0], "value_inputs": [shape]},
        {"function": "count", "inputs": [1], "value_inputs": []},
    ]
    answer = sum(obj["shape"] == shape for obj in scene["objects"])
    return {
        "question_index": number,
        "image_index": scene["image_index"],
        "image_filename": scene["image_filename"],
        "split": "train",
        "question": f"How many {shape}s are there?",
        "answer": str(answer),
        "program": program,
        "question_family_index": 0,
        "question_family": "count",
    }


def tokenized_beside_subset(questions: list[dict], subset: Path, work: Path) -> None:
    """`questions` written as an official train questions file and tokenised into work/tokens,
    with work/features the subset's features."""
    folder = work / "questions"
    folder.mkdir()
    text = json.dumps({"info": {"split": "train", "version": "1.0"}, "questions": questions})
    (folder / "CLEVR_train_questions.json").write_text(text)
    tokenize(
        TokenizeConfig(
            questions_dir=str(folder),
            output_dir=str(work / "tokens"),
            summary_path=str(work / "tokenize.json"),
            vqa_splits=("train",),
            ref_splits=(),
        ),
        num_steps=9,
        grid=(TINY_GRID, TINY_GRID),
    )
    (work / "features").symlink_to(subset / "features")


class RecordingTracker(NullTracker):
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((dict(metrics), step))


def test_train_and_evaluate_skip_questions_without_features(subset, tmp_path, capfd, monkeypatch):
    released = json.loads(SCENES.read_text())["scenes"]
    questions = [
        count_question(scene, shape, 0) for scene in released[:6] for shape in SHAPES
    ]  # 18 questions about 6 images present
    questions.append(count_question(dict(released[0], image_index=ABSENT), "cube", 0))
    questions[-1]["image_filename"] = image_name("train", ABSENT)
    for number, question in enumerate(questions):
        question["question_index"] = number
    tokenized_beside_subset(questions, subset, tmp_path)
    config = tiny_config(
        tmp_path,
        tmp_path,
        vqa_train_split="train",
        vqa_val_split="train",
        iterations=2,
        eval_every=2,
        checkpoint_every=2,
    )
    tracker = RecordingTracker()
    monkeypatch.setattr("pipeline.training.loop.open_tracker", lambda worker, tracking: tracker)
    train_loop(config, WorkerContext(), LocalReporter(tmp_path / "checkpoints"), {})
    skipped = {"vqa_train_questions_skipped": 1, "vqa_val_questions_skipped": 1}
    assert (skipped, 0) in tracker.logged
    line = (
        f"skipped 1 of 19 train questions: their images have no features in "
        f"{manifest_path(tmp_path / 'features', 'train')} (the first: image {ABSENT})"
    )
    assert line in capfd.readouterr().err

    results = evaluate(
        EvaluateConfig(
            model_path=str(tmp_path / "models" / "model.pt"),
            tokens_dir=str(tmp_path / "tokens"),
            features_dir=str(tmp_path / "features"),
            questions_dir=str(tmp_path / "questions"),
            scenes_dir=str(REAL_CLEVR_TRAIN_SAMPLE / "scenes"),
            vqa_split="train",
            ref_split="",
            metrics_path=str(tmp_path / "evaluate.json"),
            headline_path=str(tmp_path / "evaluate_headline.json"),
            comparison_path=str(tmp_path / "comparison.json"),
            comparison_markdown=str(tmp_path / "comparison.md"),
            batch_size=4,
            device="cpu",
        ),
        tmp_path,
    )
    vqa = results["vqa"]
    assert vqa["questions"] == {"total": 19, "scored": 18, "skipped_without_features": 1}
    assert vqa["answers"]["total"] == 18
    assert vqa["faithfulness"]["questions"] == 18
    note = "18 of 19 train questions scored (1 have no image features)"
    assert note in vqa["dataset"]["reasons"]
    assert note in (tmp_path / "comparison.md").read_text()
    trained = [reason for reason in vqa["dataset"]["reasons"] if "iterations" in reason]
    assert trained == ["the model was trained for 2 iterations; the paper's for 200,000"]
    assert results["dataset"]["name"] == "CLEVR v1.0" and not results["dataset"]["comparable"]


def test_training_with_no_question_left_is_refused_in_one_line(subset, tmp_path):
    scene = json.loads(SCENES.read_text())["scenes"][0]
    questions = [count_question(dict(scene, image_index=ABSENT), shape, 0) for shape in SHAPES]
    for number, question in enumerate(questions):
        question |= {"question_index": number, "image_filename": image_name("train", ABSENT)}
    tokenized_beside_subset(questions, subset, tmp_path)
    config = tiny_config(tmp_path, tmp_path, vqa_train_split="train", vqa_val_split="")
    with pytest.raises(DataError) as error:
        train_loop(config, WorkerContext(), LocalReporter(tmp_path / "checkpoints"), {})
    assert str(error.value) == (
        f"{manifest_path(tmp_path / 'features', 'train')}: none of the 3 train questions has its "
        f"image's features (the first asks about image {ABSENT}); extract the images they ask about"
    )
