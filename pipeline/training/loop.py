"""The training loop of SNMN, the same on one CPU process and on every Ray Train worker.

One iteration on "Are there more cubes than spheres?" and 63 other questions: forward through the
controller and T steps of soft module execution, answer CE + layout CE (with expert layouts) or the
ramped entropy term (without), L2 on conv/linear weights, backward (DDP averages gradients over
ranks), global-norm clip 8, Adam, EMA update. Joint training makes two updates per iteration, one on
a VQA batch and one on a CLEVR-Ref batch (the paper's joint training).

The loop sees a small WorkerContext (rank, world size, device), a Reporter (checkpoints: Ray Train
in production, a local folder in tests) and the MLflow run to log into; it never imports Ray.
Metrics are accumulated on the device and reduced over ranks as integer counts at log time.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline.config import Config, to_dict
from pipeline.data.datasets import (
    CurriculumBatchSampler,
    EpochBatchSampler,
    QuestionDataset,
    evaluation_rows,
    identity_collate,
    layout_sizes,
    read_question_table,
)
from pipeline.data.text import Vocabulary, load_question_vocabulary
from pipeline.errors import ConfigError
from pipeline.runtime.inference import (
    accuracy_counts,
    all_reduce_sum,
    answer_hits,
    box_hits,
    to_device,
)
from pipeline.tracking import MlflowTracker, NullTracker, Tracker
from pipeline.training import checkpoint as ckpt
from snmn.boxes import BoxGrid
from snmn.config import ModelConfig
from snmn.ema import ModelEMA
from snmn.losses import decayed_parameters, entropy_ramp, l2_penalty, training_loss
from snmn.model import SNMN, SNMNOutput

EVAL_BATCH_SIZE = 128


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    node: str = "local"  # the machine (Ray node id) this worker runs on


class Reporter(Protocol):
    """Where checkpoints go and come from."""

    def load_latest(self) -> ckpt.TrainingState | None: ...
    def report(self, metrics: dict[str, float], state: ckpt.TrainingState | None) -> None: ...


class LocalReporter:
    """Checkpoints in a local folder (single-process runs and tests): step_<n>/ directories."""

    def __init__(self, folder: str | Path, keep: int = 2) -> None:
        self.folder, self.keep = Path(folder), keep

    def load_latest(self) -> ckpt.TrainingState | None:
        found = sorted(self.folder.glob("step_*/" + ckpt.STATE_FILE))
        return ckpt.load(found[-1].parent) if found else None

    def report(self, metrics: dict[str, float], state: ckpt.TrainingState | None) -> None:
        if state is None:
            return
        ckpt.save(state, self.folder / f"step_{state.step:09d}")
        for old in sorted(self.folder.glob("step_*"))[: -self.keep]:
            for file in old.iterdir():
                file.unlink()
            old.rmdir()


@dataclass
class TaskData:
    """One task's training and validation questions (task: "vqa" or "ref")."""

    task: str
    train: QuestionDataset
    val: QuestionDataset | None


# ---------------------------------------------------------------------------------------------
# Setting up
# ---------------------------------------------------------------------------------------------


def load_data(config: Config) -> list[TaskData]:
    """The datasets of the task(s) that model.task asks for."""
    train = config.train
    steps = config.model.num_steps
    splits = []
    if config.model.builds_vqa:
        splits.append(("vqa", train.vqa_train_split, train.vqa_val_split))
    if config.model.builds_ref:
        splits.append(("ref", train.ref_train_split, train.ref_val_split))
    tasks = []
    for task, train_split, val_split in splits:
        datasets = []
        for split in (train_split, val_split):
            if not split:
                datasets.append(None)
                continue
            questions = read_question_table(train.tokens_dir, split, steps)
            datasets.append(
                QuestionDataset(questions, train.features_dir, train.features_in_memory)
            )
        tasks.append(TaskData(task, datasets[0], datasets[1]))
    return tasks


def resolve_model_config(config: Config, tasks: list[TaskData]) -> ModelConfig:
    """ModelConfig with the vocabulary sizes filled in and the feature grid checked."""
    model = config.model
    words = len(load_question_vocabulary(Path(config.train.tokens_dir) / "vocab_question.json"))
    answers = len(_answer_words(config))
    for name, found in (("vocab_size", words), ("num_answers", answers)):
        given = getattr(model, name)
        if given and given != found:
            raise ConfigError(f"model.{name}: {given} in params, but the tokeniser found {found}")
    height, width, channels = tasks[0].train.feature_shape
    expected = (model.feature_height, model.feature_width, model.feature_dim)
    if (height, width, channels) != expected:
        raise ConfigError(
            f"model.feature_height/feature_width/feature_dim are {expected} but the features in "
            f"{config.train.features_dir} are {(height, width, channels)}: make them agree"
        )
    return dataclasses.replace(model, vocab_size=words, num_answers=answers)


def _answer_words(config: Config) -> Vocabulary:
    return Vocabulary.load(Path(config.train.tokens_dir) / "vocab_answer.json")


def box_grid(config: Config) -> BoxGrid:
    return BoxGrid(
        grid_height=config.model.feature_height,
        grid_width=config.model.feature_width,
        image_height=config.tokenize.image_height,
        image_width=config.tokenize.image_width,
    )


def check_layouts(config: Config, tasks: list[TaskData]) -> None:
    if not config.train.use_layouts:
        return
    for data in tasks:
        missing = int((data.train.questions.layouts[:, 0] < 0).sum())
        if missing:
            raise ConfigError(
                f"train.use_layouts is true but {missing} questions of split "
                f"{data.train.questions.split!r} have no expert layout (no program)"
            )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_loop(
    config: Config, worker: WorkerContext, reporter: Reporter, tracking: dict[str, str]
) -> dict[str, float]:
    """Train until `train.iterations`, resuming from the reporter's latest checkpoint."""
    train = config.train
    device = torch.device(worker.device)
    threads = train.torch_threads or max(1, (os.cpu_count() or 1) // worker.world_size)
    torch.set_num_threads(threads)
    is_chief = worker.rank == 0
    tracker: Tracker = NullTracker()
    if is_chief and tracking.get("run_id"):
        tracker = MlflowTracker(tracking["tracking_uri"], tracking["run_id"])

    nodes = len(set(_gather(worker.node, worker)))
    if is_chief:
        _say(f"{worker.world_size} worker(s) on {nodes} node(s), device {device}")
        tracker.log_metrics({"num_workers": worker.world_size, "num_nodes": nodes}, step=0)
    tasks = load_data(config)
    check_layouts(config, tasks)
    model_config = resolve_model_config(config, tasks)
    grid = box_grid(config)
    torch.manual_seed(train.seed)  # identical initial weights on every rank
    model = SNMN(model_config).to(device)
    ema = ModelEMA(model, decay=train.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    decayed, _ = decayed_parameters(model)

    state = reporter.load_latest()
    history: list[dict[str, float]] = []
    if state is None:
        start = 0
        torch.manual_seed(train.seed + 1 + worker.rank)  # dropout differs between ranks
    else:
        _check_fingerprint(state, config)
        model.load_state_dict(state.model)
        ema.load_state_dict(state.ema)
        optimizer.load_state_dict(state.optimizer)
        start, history = state.step, list(state.history)
        if is_chief:
            _say(f"resuming from the checkpoint at iteration {start}")

    network = model
    if worker.world_size > 1:
        network = DistributedDataParallel(model, find_unused_parameters=len(tasks) > 1)
    per_rank = train.batch_size // worker.world_size
    batches = {
        data.task: iter(
            DataLoader(
                data.train,
                batch_sampler=batch_sampler(data, train, per_rank, worker, index, start),
                collate_fn=identity_collate,
                num_workers=train.loader_workers,
                persistent_workers=train.loader_workers > 0,
            )
        )
        for index, data in enumerate(tasks)
    }
    if state is not None:  # after the loaders: creating their iterators draws a random seed
        ckpt.set_rng_state(state.rng_per_rank[worker.rank])
    meter = Meter(device)
    clock = time.perf_counter()
    last_logged = start
    metrics: dict[str, float] = {}
    for step in range(start, train.iterations):
        rate = learning_rate(train, step)
        for group in optimizer.param_groups:
            group["lr"] = rate
        for data in tasks:
            batch = to_device(next(batches[data.task]), device)
            optimizer.zero_grad(set_to_none=True)
            output, losses = backward(network, config, data.task, batch, step, decayed)
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            ema.update(model)
            meter.add(data.task, losses, output, batch, grid, data.train)
        done = step + 1
        last = done == train.iterations
        if done % train.log_every == 0 or last:
            seconds = time.perf_counter() - clock
            metrics = meter.reduce()
            metrics["questions_per_s"] = (
                (done - last_logged) * train.batch_size * len(tasks) / max(seconds, 1e-9)
            )
            metrics["learning_rate"] = rate
            if done % train.eval_every == 0 or last:
                metrics.update(validate(ema.average, tasks, train, grid, device, worker))
            if is_chief:
                history.append({"step": done, **metrics})
                tracker.log_metrics(metrics, step=done)
                _progress(done, train.iterations, metrics, seconds, done - last_logged)
            clock, last_logged = time.perf_counter(), done
        if done % train.checkpoint_every == 0 or last:
            rngs = _gather(ckpt.rng_state(), worker)
            state = None
            if is_chief:
                state = ckpt.TrainingState(
                    step=done,
                    model=model.state_dict(),
                    ema=ema.state_dict(),
                    optimizer=optimizer.state_dict(),
                    rng_per_rank=rngs,
                    config=to_dict(config),
                    fingerprint=config.fingerprint(),
                    history=history,
                )
            reporter.report({"step": done, **metrics}, state)
    if is_chief:
        from pipeline.runtime.artifact import write_training_outputs

        write_training_outputs(config, model_config, ema.average, history, tracker, tracking)
    return metrics


def batch_sampler(
    data: TaskData, train, per_rank: int, worker: WorkerContext, index: int, start: int
) -> EpochBatchSampler | CurriculumBatchSampler:
    """This rank's batches of one task from iteration `start`: shuffled, or a curriculum."""
    shared = dict(
        batch_size=per_rank,
        rank=worker.rank,
        world_size=worker.world_size,
        seed=train.seed + index,
        start_step=start,
    )
    if not train.curriculum_iterations:
        return EpochBatchSampler(len(data.train), **shared)
    sizes = layout_sizes(data.train.questions.layouts)
    stage_rows = []
    for most in train.curriculum_max_modules:
        rows = np.flatnonzero((sizes >= 1) & (sizes <= most))
        if len(rows) < train.batch_size:
            raise ConfigError(
                f"train.curriculum_max_modules: only {len(rows)} questions of split "
                f"{data.train.questions.split!r} have an expert layout of at most {most} "
                f"modules, fewer than one batch of {train.batch_size}: allow more modules or "
                "drop the stage"
            )
        stage_rows.append(rows)
    return CurriculumBatchSampler(
        len(data.train), stage_rows, list(train.curriculum_iterations), **shared
    )


def learning_rate(train, step: int) -> float:
    """Adam's rate at iteration `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < train.warmup_iterations:
        return train.learning_rate * (step + 1) / train.warmup_iterations
    if train.lr_schedule == "constant":
        return train.learning_rate
    decaying = max(1, train.iterations - train.warmup_iterations)
    progress = min(1.0, (step - train.warmup_iterations) / decaying)
    return train.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def backward(
    network: torch.nn.Module,
    config: Config,
    task: str,
    batch: dict[str, torch.Tensor],
    step: int,
    decayed: list[torch.nn.Parameter],
) -> tuple[SNMNOutput, dict[str, torch.Tensor]]:
    """Forward one batch of `task` ("vqa" | "ref"), add L2, backward; (output, loss terms).

    The L2 term is part of the loss, as in the official release (tf.nn.l2_loss), so gradient
    clipping sees it too. With DDP the gradients are averaged over ranks here.
    """
    output = network(batch["tokens"], batch["lengths"], batch["features"])
    losses = _losses(config, task, output, batch, step)
    total = losses["total"] + config.train.weight_decay * l2_penalty(decayed)
    total.backward()
    return output, losses


def _losses(
    config: Config, task: str, output: SNMNOutput, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
    train = config.train
    entropy = 0.0
    if not train.use_layouts:
        ramp = entropy_ramp(step, train.entropy_ramp_start, train.entropy_ramp_end)
        entropy = train.entropy_weight * ramp
    if task == "vqa":
        return training_loss(
            output,
            answers=batch["answers"],
            layouts=batch["layouts"] if train.use_layouts else None,
            layout_weight=train.layout_loss_weight,
            entropy_weight=entropy,
        )
    return training_loss(
        output,
        target_cells=batch["target_cells"],
        target_offsets=batch["offsets"],
        layouts=batch["layouts"] if train.use_layouts else None,
        layout_weight=train.layout_loss_weight,
        cell_weight=train.ref_cell_weight,
        offset_weight=train.ref_offset_weight,
        entropy_weight=entropy,
    )


def validate(
    model: SNMN,
    tasks: list[TaskData],
    train,
    grid: BoxGrid,
    device: torch.device,
    worker: WorkerContext,
) -> dict[str, float]:
    """Validation metrics of the EMA weights, prefixed val_{task}_."""
    metrics = {}
    for data in tasks:
        if data.val is None:
            continue
        rows = evaluation_rows(
            len(data.val), worker.rank, worker.world_size, train.eval_max_questions
        )
        found = accuracy_counts(model, data.val, rows, EVAL_BATCH_SIZE, device, grid)
        metrics.update({f"val_{data.task}_{key}": value for key, value in found.items()})
    return metrics


class Meter:
    """Sums of loss terms and hit counts on the device; reduced over ranks at log time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().to(torch.float64)
        self.sums[name] = self.sums.get(name, 0) + value

    def add(self, task, losses, output, batch, grid: BoxGrid, dataset: QuestionDataset) -> None:
        for name, value in losses.items():
            self._add(f"{task}_loss_{name}", value)
        self._add(f"{task}_updates", torch.ones((), device=self.device))
        size = torch.tensor(float(batch["lengths"].numel()), device=self.device)
        if task == "vqa":
            self._add("vqa_correct", answer_hits(output, batch).sum())
            self._add("vqa_seen", size)
        else:
            boxes = torch.from_numpy(dataset.questions.boxes)[batch["rows"].cpu()]
            self._add("ref_correct", box_hits(output, batch, grid, boxes).sum())
            self._add("ref_seen", size)

    def reduce(self) -> dict[str, float]:
        names = sorted(self.sums)
        if not names:
            return {}
        totals = all_reduce_sum(torch.stack([self.sums[n] for n in names])).tolist()
        summed = dict(zip(names, totals, strict=True))
        metrics = {}
        for task in ("vqa", "ref"):
            updates = summed.get(f"{task}_updates")
            if not updates:
                continue
            for name, value in summed.items():
                if name.startswith(f"{task}_loss_"):
                    metrics[name] = value / updates  # mean over updates and ranks
            metrics[f"{task}_train_accuracy"] = summed[f"{task}_correct"] / summed[f"{task}_seen"]
        self.sums = {}
        return metrics


def _gather(value: Any, worker: WorkerContext) -> list[Any]:
    if worker.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * worker.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _check_fingerprint(state: ckpt.TrainingState, config: Config) -> None:
    if state.fingerprint != config.fingerprint():
        raise ConfigError(
            "the checkpoint to resume was written with other params "
            f"(fingerprint {state.fingerprint}, now {config.fingerprint()}): "
            "use another train.runs_dir or remove the old run"
        )


def _progress(done: int, total: int, metrics: dict[str, float], seconds: float, steps: int) -> None:
    rate = steps / max(seconds, 1e-9)
    eta = (total - done) / max(rate, 1e-9)
    parts = [f"iter {done}/{total}"]
    for task in ("vqa", "ref"):
        if f"{task}_loss_total" in metrics:
            parts.append(f"{task} loss {metrics[f'{task}_loss_total']:.3f}")
            parts.append(f"acc {metrics[f'{task}_train_accuracy']:.3f}")
    for key in ("val_vqa_accuracy", "val_ref_p_at_1"):
        if key in metrics:
            parts.append(f"{key} {metrics[key]:.3f}")
    parts.append(f"{metrics['questions_per_s']:.0f} q/s")
    parts.append(f"ETA {_clock(eta)}")
    _say(" | ".join(parts))


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _say(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)
