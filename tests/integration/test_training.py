"""The training loop in one process: it learns, writes its outputs, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.runtime.artifact import load_trained_model
from pipeline.training.checkpoint import load as load_checkpoint
from pipeline.training.loop import LocalReporter, WorkerContext, train_loop
from tests.conftest import tiny_config


class Interrupted(Exception):
    pass


class DyingReporter(LocalReporter):
    """Saves like LocalReporter, then 'dies' right after the checkpoint of `die_at`."""

    def __init__(self, folder, die_at: int) -> None:
        super().__init__(folder)
        self.die_at = die_at

    def report(self, metrics, state):
        super().report(metrics, state)
        if state is not None and state.step == self.die_at:
            raise Interrupted


class RecordingReporter(LocalReporter):
    """Saves like LocalReporter and remembers the iteration of every report."""

    def __init__(self, folder) -> None:
        super().__init__(folder, keep=10)
        self.reported: list[int] = []

    def report(self, metrics, state):
        super().report(metrics, state)
        self.reported.append(state.step)


def losses_by_step(history):
    return {row["step"]: row["vqa_loss_total"] for row in history}


def test_resume_after_an_interruption_gives_the_same_losses(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, iterations=6, checkpoint_every=3, eval_every=6)
    straight = tmp_path / "straight"
    train_loop(config, WorkerContext(), LocalReporter(straight), {})
    reference = load_checkpoint(sorted(straight.glob("step_*"))[-1]).history

    broken = tmp_path / "broken"
    with pytest.raises(Interrupted):
        train_loop(config, WorkerContext(), DyingReporter(broken, die_at=3), {})
    train_loop(config, WorkerContext(), LocalReporter(broken), {})
    resumed = load_checkpoint(sorted(broken.glob("step_*"))[-1]).history

    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5, 6]
    assert losses_by_step(resumed) == losses_by_step(reference)  # bit-for-bit on CPU


def test_features_on_the_device_train_exactly_as_from_the_page_cache(tiny_data, tmp_path):
    histories = {}
    for storage in ("page_cache", "device"):
        work = tmp_path / storage
        config = tiny_config(tiny_data, work, iterations=4, eval_every=4, features_storage=storage)
        train_loop(config, WorkerContext(), LocalReporter(work / "ck"), {})
        histories[storage] = json.loads((work / "models" / "train_metrics.json").read_text())
    same = ("vqa_loss_total", "val_vqa_accuracy")
    assert {key: histories["device"][key] for key in same} == {
        key: histories["page_cache"][key] for key in same
    }


def test_outputs_are_written_and_the_model_loads_safely(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, iterations=4, eval_every=4)
    metrics = train_loop(config, WorkerContext(), LocalReporter(tmp_path / "ck"), {})
    assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0
    models = tmp_path / "models"
    written = json.loads((models / "train_metrics.json").read_text())
    assert written["step"] == 4 and written["val_vqa_accuracy"] == metrics["val_vqa_accuracy"]
    curve = (models / "train_curve.csv").read_text().splitlines()
    assert curve[0].startswith("step,") and len(curve) == 1 + 4
    model, payload = load_trained_model(models / "model.pt")
    assert payload["model_config"]["vocab_size"] == len(payload["question_words"])
    assert payload["model_config"]["num_answers"] == len(payload["answer_words"]) == 28  # CLEVR's
    tokens = torch.tensor([[2, 3, 4]])
    features = torch.zeros(1, 4, 4, 256)
    output = model(tokens, torch.tensor([3]), features)
    assert output.answer_logits.shape == (1, len(payload["answer_words"]))


def test_learning_happens_on_a_fixed_batch(tiny_data, tmp_path):
    """40 steps on the tiny train split at a high learning rate: the loss must fall."""
    config = tiny_config(
        tiny_data,
        tmp_path,
        iterations=40,
        log_every=10,
        eval_every=40,
        checkpoint_every=40,
        learning_rate=3e-3,
    )
    train_loop(config, WorkerContext(), LocalReporter(tmp_path / "ck"), {})
    history = load_checkpoint(sorted((tmp_path / "ck").glob("step_*"))[-1]).history
    assert history[-1]["vqa_loss_total"] < 0.7 * history[0]["vqa_loss_total"]


def test_joint_training_makes_two_updates_per_iteration(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data,
        tmp_path,
        model={"task": "joint"},
        iterations=2,
        eval_every=2,
        ref_cell_weight=0.5,
        ref_offset_weight=0.5,
    )
    metrics = train_loop(config, WorkerContext(), LocalReporter(tmp_path / "ck"), {})
    assert "vqa_loss_answer" in metrics and "ref_loss_cell" in metrics
    assert 0.0 <= metrics["val_ref_p_at_1"] <= 1.0


def test_scratch_training_uses_no_layouts(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data,
        tmp_path,
        iterations=2,
        eval_every=2,
        use_layouts=False,
        entropy_ramp_start=0,
        entropy_ramp_end=1,
    )
    metrics = train_loop(config, WorkerContext(), LocalReporter(tmp_path / "ck"), {})
    assert "vqa_loss_layout" not in metrics and "vqa_loss_entropy" in metrics


def test_logs_validations_and_checkpoints_come_at_the_configured_iterations(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data, tmp_path, iterations=5, log_every=2, eval_every=4, checkpoint_every=3
    )
    reporter = RecordingReporter(tmp_path / "ck")
    train_loop(config, WorkerContext(), reporter, {})
    assert reporter.reported == [3, 5]  # every 3 and after the last
    history = load_checkpoint(tmp_path / "ck" / "step_000000005").history
    assert [row["step"] for row in history] == [2, 4, 5]  # every 2 and the last
    validated = [row["step"] for row in history if "val_vqa_accuracy" in row]
    assert validated == [4, 5]  # every 4 and the last
    assert load_checkpoint(tmp_path / "ck" / "step_000000003").history == history[:1]
