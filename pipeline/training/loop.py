"""The training loop of SNMN, the same on one CPU process and on every Ray Train worker.

One iteration on "Are there more cubes than spheres?" and 63 other questions: forward through the
controller and T steps of soft module execution, answer CE + layout CE (with expert layouts) or the
ramped entropy term (without), L2 on conv/linear weights, backward (DDP averages gradients over
ranks), global-norm clip 8, Adam, EMA update. Joint training makes two updates per iteration, one on
a VQA batch and one on a CLEVR-Ref batch (the paper's joint training).

The loop sees a small WorkerContext (rank, world size, device), a Reporter (checkpoints: Ray Train
in production, a local folder in tests) and the MLflow run to log into; it never imports Ray.
Metrics are accumulated on the device and reduced over ranks as integer counts at log time.
Questions whose image has no features (a subset of CLEVR was extracted) are skipped, never drawn
nor validated: rank 0 says how many and logs them as `{task}_{train|val}_questions_skipped` at
step 0; a split left with none refuses to train in one line.

`train_loop` reads as the recipe, and the file follows it: set up (tracker, data, build or resume
the Run, loaders), one iteration (rate, update per task), then at the iterations the params ask
for a log line (with validation) and a checkpoint. Shapes: B questions per rank and batch, S
question tokens, T steps, H×W grid, C feature channels; "iterations" count global batches
(every rank takes train.batch_size / world_size questions of each).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from pipeline.config import Config, TrainConfig, to_dict
from pipeline.data.datasets import (
    CPU,
    CurriculumBatchSampler,
    EpochBatchSampler,
    QuestionDataset,
    evaluation_rows,
    identity_collate,
    layout_sizes,
    model_box_grid,
    read_question_table,
)
from pipeline.data.text import Vocabulary, load_question_vocabulary
from pipeline.errors import ConfigError
from pipeline.progress import Progress
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
from snmn.losses import add_l2_gradient, decayed_parameters, entropy_ramp, training_loss
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
# The loop
# ---------------------------------------------------------------------------------------------


def train_loop(
    config: Config, worker: WorkerContext, reporter: Reporter, tracking: dict[str, str]
) -> dict[str, float]:
    """Train until `train.iterations`, resuming from the reporter's latest checkpoint.

    Returns the metrics of the last log line (every rank; only rank 0 writes the outputs).
    """
    train, device = config.train, torch.device(worker.device)
    torch.set_num_threads(train.torch_threads or max(1, (os.cpu_count() or 1) // worker.world_size))
    tracker = open_tracker(worker, tracking)
    announce_workers(worker, tracker)

    tasks = load_data(config, device)
    announce_skipped(tasks, worker, tracker)
    check_layouts(train, tasks)
    model_config = resolve_model_config(config, tasks)
    grid = model_box_grid(
        tasks[0].train.questions, model_config.feature_height, model_config.feature_width
    )
    saved = reporter.load_latest()
    run = build_or_resume(model_config, train, worker, saved, config.fingerprint())
    network = run.model if worker.world_size == 1 else wrap_ddp(run.model, len(tasks))
    batches = training_batches(tasks, train, worker, run.start)
    if saved is not None:  # after the loaders: creating their iterators draws a random seed
        ckpt.set_rng_state(saved.rng_per_rank[worker.rank])

    meter = Meter(device)
    log = TrainingLog(train, len(tasks), worker, tracker, run)
    metrics: dict[str, float] = {}
    for step in range(run.start, train.iterations):
        rate = set_learning_rate(run.optimizer, train, step)
        for data in tasks:  # joint training: one update on VQA, then one on CLEVR-Ref
            batch = to_device(next(batches[data.task]), device)
            output, losses = update(run, network, config, data.task, batch, step)
            meter.add(data.task, losses, output, batch, grid, data.train)
        done = step + 1
        if logs_at(train, done):
            metrics = log.window_metrics(done, meter, rate)
            if validates_at(train, done):
                metrics.update(validate(run.ema.average, tasks, train, grid, device, worker))
            log.write(done, metrics)
        if checkpoints_at(train, done):
            reporter.report({"step": done, **metrics}, checkpoint_state(run, done, config, worker))
    if worker.rank == 0:
        from pipeline.runtime.artifact import write_training_outputs

        write_training_outputs(
            config, model_config, run.ema.average, run.history, tracker, tracking
        )
    return metrics


# ---------------------------------------------------------------------------------------------
# Setting up: data, model, loaders
# ---------------------------------------------------------------------------------------------


def open_tracker(worker: WorkerContext, tracking: dict[str, str]) -> Tracker:
    """Rank 0 logs into the driver's MLflow run (when there is one); other ranks log nothing."""
    if worker.rank == 0 and tracking.get("run_id"):
        return MlflowTracker(tracking["tracking_uri"], tracking["run_id"])
    return NullTracker()


def announce_workers(worker: WorkerContext, tracker: Tracker) -> None:
    """Rank 0 says how many workers on how many machines; every rank must call it (a gather)."""
    nodes = len(set(_gather(worker.node, worker)))
    if worker.rank == 0:
        _say(f"{worker.world_size} worker(s) on {nodes} node(s), device {worker.device}")
        tracker.log_metrics({"num_workers": worker.world_size, "num_nodes": nodes}, step=0)


def announce_skipped(tasks: list[TaskData], worker: WorkerContext, tracker: Tracker) -> None:
    """Rank 0 says which questions are skipped (their images have no features) and logs the
    counts, zeros included, as `{task}_{train|val}_questions_skipped` at step 0."""
    if worker.rank != 0:
        return
    counts = {}
    for data in tasks:
        for role, dataset in (("train", data.train), ("val", data.val)):
            if dataset is not None:
                counts[f"{data.task}_{role}_questions_skipped"] = dataset.questions_skipped
                if dataset.questions_skipped:
                    _say(dataset.skipped_line())
    tracker.log_metrics(counts, step=0)


def load_data(config: Config, device: torch.device = CPU) -> list[TaskData]:
    """The datasets of the task(s) that model.task asks for, their features where
    train.features_storage says (on `device` for `device`)."""
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
            dataset = QuestionDataset(
                questions,
                train.features_dir,
                train.features_storage,
                device,
                train.features_read_threads,
            )
            dataset.require_questions()
            datasets.append(dataset)
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


def check_layouts(train: TrainConfig, tasks: list[TaskData]) -> None:
    """With train.use_layouts every training question needs its expert layout."""
    if not train.use_layouts:
        return
    for data in tasks:
        layouts = data.train.questions.layouts[data.train.rows_with_features]  # [M, T]
        missing = int((layouts[:, 0] < 0).sum())
        if missing:
            raise ConfigError(
                f"train.use_layouts is true but {missing} questions of split "
                f"{data.train.questions.split!r} have no expert layout (no program)"
            )


@dataclass
class Run:
    """What a worker trains and what changes as it trains; a checkpoint saves all of it."""

    model: SNMN  # the weights Adam updates
    ema: ModelEMA  # ema.average: the weights that are validated and written to model.pt
    optimizer: torch.optim.Adam
    decayed: list[torch.nn.Parameter]  # conv/linear weights under L2 (snmn.losses)
    start: int = 0  # iterations completed before this process started (> 0 when resumed)
    history: list[dict[str, float]] = field(default_factory=list)  # one row per log line


def build_or_resume(
    model_config: ModelConfig,
    train: TrainConfig,
    worker: WorkerContext,
    saved: ckpt.TrainingState | None,
    fingerprint: str,
) -> Run:
    """The model, its EMA copy and Adam on worker.device: fresh, or as `saved` left them.

    Fresh: the same initial weights on every rank (seeded with train.seed), then a seed per rank
    so that dropout differs between ranks. Resumed: the checkpoint's weights, EMA, Adam moments,
    iteration and history, if it was written under the same params (`fingerprint`); its random
    states are restored by the caller after the loaders exist.
    """
    torch.manual_seed(train.seed)  # identical initial weights on every rank
    model = SNMN(model_config).to(torch.device(worker.device))
    ema = ModelEMA(model, decay=train.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.learning_rate)
    run = Run(model, ema, optimizer, decayed=decayed_parameters(model)[0])
    if saved is None:
        torch.manual_seed(train.seed + 1 + worker.rank)  # dropout differs between ranks
        return run
    if saved.fingerprint != fingerprint:
        raise ConfigError(
            "the checkpoint to resume was written with other params "
            f"(fingerprint {saved.fingerprint}, now {fingerprint}): "
            "use another train.runs_dir or remove the old run"
        )
    model.load_state_dict(saved.model)
    ema.load_state_dict(saved.ema)
    optimizer.load_state_dict(saved.optimizer)
    run.start, run.history = saved.step, list(saved.history)
    if worker.rank == 0:
        _say(f"resuming from the checkpoint at iteration {run.start}")
    return run


def wrap_ddp(model: SNMN, num_tasks: int) -> DistributedDataParallel:
    """The model whose backward averages gradients over ranks.

    DDP must be told when a backward leaves parameters without a gradient: each update of joint
    training (2 tasks) runs one task's head only (backward passes `head=task`), and CLEVR-Ref
    training ("the large cube left of the red sphere") never reads the memory that DescribeOne /
    DescribeTwo write, so their parameters get no task gradient (the L2 gradient is added after
    the backward, snmn.losses.add_l2_gradient).
    """
    unused = num_tasks > 1 or model.config.task == "ref"
    return DistributedDataParallel(model, find_unused_parameters=unused)


def training_batches(
    tasks: list[TaskData], train: TrainConfig, worker: WorkerContext, start: int
) -> dict[str, Iterator[dict[str, torch.Tensor]]]:
    """Per task, this rank's share of each global batch from iteration `start` on.

    A batch holds train.batch_size / world_size questions (tokens [B, S], features
    [B, H, W, C], ...; see QuestionDataset); task i is shuffled with seed train.seed + i.
    """
    per_rank = train.batch_size // worker.world_size
    return {
        data.task: iter(
            DataLoader(
                data.train,
                batch_sampler=batch_sampler(data, train, per_rank, worker, index, start),
                collate_fn=identity_collate,
                num_workers=train.loader_workers,
                persistent_workers=train.loader_workers > 0,
                # loader processes cannot pin; the dataset pins its own batches otherwise
                pin_memory=train.loader_workers > 0 and worker.device.startswith("cuda"),
            )
        )
        for index, data in enumerate(tasks)
    }


def batch_sampler(
    data: TaskData,
    train: TrainConfig,
    per_rank: int,
    worker: WorkerContext,
    index: int,
    start: int,
) -> EpochBatchSampler | CurriculumBatchSampler:
    """This rank's batches of one task from iteration `start`: shuffled, or a curriculum."""
    shared = dict(
        batch_size=per_rank,
        rank=worker.rank,
        world_size=worker.world_size,
        seed=train.seed + index,
        start_step=start,
    )
    drawn = data.train.rows_with_features  # [M] the questions whose image has features
    if not train.curriculum_iterations:
        return EpochBatchSampler(len(data.train), **shared, rows=drawn)
    sizes = layout_sizes(data.train.questions.layouts[drawn])  # [M]
    stage_rows = []
    for most in train.curriculum_max_modules:
        rows = drawn[(sizes >= 1) & (sizes <= most)]
        if len(rows) < train.batch_size:
            raise ConfigError(
                f"train.curriculum_max_modules: only {len(rows)} questions of split "
                f"{data.train.questions.split!r} have an expert layout of at most {most} "
                f"modules, fewer than one batch of {train.batch_size}: allow more modules or "
                "drop the stage"
            )
        stage_rows.append(rows)
    return CurriculumBatchSampler(
        len(data.train), stage_rows, list(train.curriculum_iterations), **shared, drawn=drawn
    )


# ---------------------------------------------------------------------------------------------
# One iteration
# ---------------------------------------------------------------------------------------------


def learning_rate(train: TrainConfig, step: int) -> float:
    """Adam's rate at iteration `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < train.warmup_iterations:
        return train.learning_rate * (step + 1) / train.warmup_iterations
    if train.lr_schedule == "constant":
        return train.learning_rate
    decaying = max(1, train.iterations - train.warmup_iterations)
    progress = min(1.0, (step - train.warmup_iterations) / decaying)
    return train.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, train: TrainConfig, step: int) -> float:
    """Give every parameter group the rate of iteration `step` (learning_rate); returns it."""
    rate = learning_rate(train, step)
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate


def update(
    run: Run,
    network: torch.nn.Module,
    config: Config,
    task: str,
    batch: dict[str, torch.Tensor],
    step: int,
) -> tuple[SNMNOutput, dict[str, torch.Tensor]]:
    """One update on one batch of `task`: backward, clip the global norm, Adam, EMA.

    `network` is run.model, or its DDP wrapper (wrap_ddp) that averages gradients over ranks.
    """
    run.optimizer.zero_grad(set_to_none=True)
    output, losses = backward(network, config, task, batch, step, run.decayed)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.train.grad_clip)
    run.optimizer.step()
    run.ema.update(run.model)
    return output, losses


def backward(
    network: torch.nn.Module,
    config: Config,
    task: str,
    batch: dict[str, torch.Tensor],
    step: int,
    decayed: list[torch.nn.Parameter],
) -> tuple[SNMNOutput, dict[str, torch.Tensor]]:
    """Forward one batch of `task` ("vqa" | "ref"), backward, add L2; (output, loss terms).

    With DDP the task gradients are averaged over ranks in the backward. The L2 term's gradient
    is then added as if the term were in the loss, as in the official release (tf.nn.l2_loss), so
    gradient clipping sees it too (snmn.losses.add_l2_gradient).
    """
    output = network(batch["tokens"], batch["lengths"], batch["features"], head=task)
    losses = _losses(config.train, task, output, batch, step)
    losses["total"].backward()
    add_l2_gradient(decayed, config.train.weight_decay)
    return output, losses


def _losses(
    train: TrainConfig, task: str, output: SNMNOutput, batch: dict[str, torch.Tensor], step: int
) -> dict[str, torch.Tensor]:
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


# ---------------------------------------------------------------------------------------------
# Logging, validation, checkpoints
# ---------------------------------------------------------------------------------------------


def logs_at(train: TrainConfig, done: int) -> bool:
    """Whether a log line follows `done` iterations: every train.log_every, and the last one."""
    return done % train.log_every == 0 or done == train.iterations


def validates_at(train: TrainConfig, done: int) -> bool:
    """Whether the log line after `done` iterations validates the EMA weights.

    Only log lines validate: every train.eval_every iterations that is also a log step, and the
    last iteration (log_every 100, eval_every 5000: at 5000, 10000, ...; log_every 3,
    eval_every 5, iterations 12: only at 12).
    """
    return logs_at(train, done) and (done % train.eval_every == 0 or done == train.iterations)


def checkpoints_at(train: TrainConfig, done: int) -> bool:
    """Whether a checkpoint follows `done` iterations: every train.checkpoint_every, the last."""
    return done % train.checkpoint_every == 0 or done == train.iterations


class TrainingLog:
    """The log lines of one worker; each covers the iterations since the previous line.

    Every rank computes a line's metrics (Meter.reduce sums over ranks); rank 0 appends them to
    the run's history, logs them to MLflow and prints the progress line (pipeline/progress.py)
    "[train] 300/1,500 iterations | 2.6 iterations/s | ETA 0:07:41 | vqa loss 1.234 | acc 0.456
    | 166 q/s", its speed that of the window (training time only, all ranks).
    """

    def __init__(
        self, train: TrainConfig, num_tasks: int, worker: WorkerContext, tracker: Tracker, run: Run
    ) -> None:
        self.iterations = train.iterations
        self.questions_per_iteration = train.batch_size * num_tasks  # all ranks, all tasks
        self.is_chief = worker.rank == 0
        self.tracker, self.history = tracker, run.history
        self.window_start = run.start  # iterations done when the current window opened
        self.window_opened = time.perf_counter()  # seconds (perf_counter)
        # prints only when told (every log line), never on a timer
        self.progress = Progress(
            train.iterations, "iterations", "train", done=run.start, every_s=math.inf
        )

    def window_metrics(self, done: int, meter: Meter, rate: float) -> dict[str, float]:
        """Close the window at `done`: loss means and train accuracies over it, questions/s
        (all ranks, training time only: the previous line's validation is not in the window)
        and Adam's rate."""
        seconds = time.perf_counter() - self.window_opened
        metrics = meter.reduce()
        questions = (done - self.window_start) * self.questions_per_iteration
        metrics["questions_per_s"] = questions / max(seconds, 1e-9)
        metrics["learning_rate"] = rate
        return metrics

    def write(self, done: int, metrics: dict[str, float]) -> None:
        """Rank 0 records the line after `done` iterations; every rank opens the next window."""
        if self.is_chief:
            self.history.append({"step": done, **metrics})
            self.tracker.log_metrics(metrics, step=done)
            iterations_per_s = metrics["questions_per_s"] / self.questions_per_iteration
            self.progress.advance(
                done - self.progress.done, self.details(metrics), now=True, rate=iterations_per_s
            )
        self.window_start, self.window_opened = done, time.perf_counter()

    def details(self, metrics: dict[str, float]) -> str:
        """What follows the ETA: "vqa loss 1.234 | acc 0.456 | val_vqa_accuracy 0.7 | 166 q/s"."""
        parts = []
        for task in ("vqa", "ref"):
            if f"{task}_loss_total" in metrics:
                parts.append(f"{task} loss {metrics[f'{task}_loss_total']:.3f}")
                parts.append(f"acc {metrics[f'{task}_train_accuracy']:.3f}")
        for key in ("val_vqa_accuracy", "val_ref_p_at_1"):
            if key in metrics:
                parts.append(f"{key} {metrics[key]:.3f}")
        parts.append(f"{metrics['questions_per_s']:.0f} q/s")
        return " | ".join(parts)


def validate(
    model: SNMN,
    tasks: list[TaskData],
    train: TrainConfig,
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
            data.val.rows_with_features, worker.rank, worker.world_size, train.eval_max_questions
        )
        found = accuracy_counts(model, data.val, rows, EVAL_BATCH_SIZE, device, grid)
        metrics.update({f"val_{data.task}_{key}": value for key, value in found.items()})
    return metrics


def checkpoint_state(
    run: Run, done: int, config: Config, worker: WorkerContext
) -> ckpt.TrainingState | None:
    """On rank 0, everything a resume needs after `done` iterations; None on the other ranks.

    Every rank must call it: the random states of all ranks are gathered to rank 0.
    """
    rngs = _gather(ckpt.rng_state(), worker)
    if worker.rank != 0:
        return None
    return ckpt.TrainingState(
        step=done,
        model=run.model.state_dict(),
        ema=run.ema.state_dict(),
        optimizer=run.optimizer.state_dict(),
        rng_per_rank=rngs,
        config=to_dict(config),
        fingerprint=config.fingerprint(),
        history=run.history,
    )


def _gather(value: Any, worker: WorkerContext) -> list[Any]:
    if worker.world_size == 1:
        return [value]
    gathered: list[Any] = [None] * worker.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def _say(message: str) -> None:
    print(f"[train] {message}", file=sys.stderr, flush=True)
