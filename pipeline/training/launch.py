"""Starting a training: name the run, open its MLflow run, hand it to Ray Train, close it.

`snmn train` on "What color is the large cube?"-style data names the run after the params and the
exact inputs (tokens and feature manifests): rerunning after a kill finds the same name and resumes
from the latest checkpoint (Ray Train does that for a known name), and it logs into the same MLflow
run; other params or other data start a fresh run.

The MLflow run shows what it trained on: one dataset input per split the task reads ("mini-CLEVR
train", context "training"; "mini-CLEVR val", context "validation"), each with a digest of the
vocabularies, its tokens and its feature manifest. Those are the bytes the run name hashes, read
once for both (`hash_inputs`).

Before any of that, `check_inputs` looks at what the workers will read, in the driver and within
a second: the tokens folder and its files, the feature manifest of every split, and whether the
manifest's feature grid (say 10×15×256 from ResNet-18) is the one model.feature_* describes
(say 1024 channels, ResNet-101's). A mismatch is one line naming the key or the file, before
Ray starts, instead of a worker's traceback minutes later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import distributed
from pipeline.config import Config, flatten, from_dict, to_dict
from pipeline.data.schema import tokens_metadata
from pipeline.data.shards import manifest_path, read_manifest
from pipeline.errors import ConfigError, DataError
from pipeline.tracking import (
    DatasetRecord,
    MlflowTracker,
    git_commit,
    resolve_tracking_uri,
    runs_page,
    source_tags,
    start_run,
)
from pipeline.training import checkpoint as ckpt
from pipeline.training.loop import WorkerContext, train_loop

RUN_ID_FILE = "mlflow_run_id.txt"


def training_splits(config: Config) -> list[tuple[str, str]]:
    """(params key, split) of every split the training reads, for the task model.task asks for;
    a validation split may be empty (no validation)."""
    train = config.train
    keys = []
    if config.model.builds_vqa:
        keys += ["vqa_train_split", "vqa_val_split"]
    if config.model.builds_ref:
        keys += ["ref_train_split", "ref_val_split"]
    for key in keys:
        if key.endswith("_train_split") and not getattr(train, key):
            task = config.model.task
            raise ConfigError(f"train.{key}: empty, but model.task {task} trains on it")
    return [(f"train.{key}", getattr(train, key)) for key in keys if getattr(train, key)]


def check_inputs(config: Config) -> None:
    """DataError / ConfigError unless the tokens and features the training reads are there,
    complete, and of the shape model.feature_height/feature_width/feature_dim say."""
    train, model = config.train, config.model
    tokens = Path(train.tokens_dir)
    if not tokens.is_dir():
        raise DataError(f"{tokens}: no such folder (train.tokens_dir); run `snmn tokenize` first")
    splits = training_splits(config)
    needed = ["vocab_question.json", "vocab_answer.json"] + [f"{s}.parquet" for _, s in splits]
    for name in needed:
        if not (tokens / name).is_file():
            raise DataError(
                f"{tokens / name}: not found (train.tokens_dir); run `snmn tokenize` with "
                "tokenize.output_dir pointing there, and the split in tokenize.*_splits"
            )
    expected = [model.feature_height, model.feature_width, model.feature_dim]
    for key, split in splits:
        path = manifest_path(train.features_dir, split)
        manifest = read_manifest(path)
        if manifest is None:
            raise DataError(
                f"{path}: features of split {split!r} ({key}) not found; run `snmn extract` "
                "with the split in extract.splits and extract.output_dir = train.features_dir"
            )
        if not manifest.get("complete"):
            raise DataError(f"{path}: features incomplete; rerun `snmn extract`")
        found = list(manifest.get("feature_shape") or [])
        if found != expected:
            raise ConfigError(
                f"model.feature_height/feature_width/feature_dim are {expected} but the features "
                f"in {path} are {found} (height, width, channels): make them agree"
            )


@dataclasses.dataclass(frozen=True)
class InputDigests:
    """The training's input files, hashed in one read: `run` (the run name's hash) covers the
    params fingerprint and every file; `splits` maps each split, say "train", to the hash of the
    vocabularies, train.parquet and features/train/manifest.json."""

    run: str
    splits: dict[str, str]


def hash_inputs(config: Config) -> InputDigests:
    """Hash the vocabularies, tokens and feature manifests of the four train.*_split once."""
    train = config.train
    tokens = Path(train.tokens_dir)
    run = hashlib.sha256(config.fingerprint().encode())
    vocabularies = hashlib.sha256()
    for path in (tokens / "vocab_question.json", tokens / "vocab_answer.json"):
        if path.is_file():
            chunk = path.name.encode() + path.read_bytes()
            run.update(chunk)
            vocabularies.update(chunk)
    splits = {}
    for split in (
        train.vqa_train_split,
        train.vqa_val_split,
        train.ref_train_split,
        train.ref_val_split,
    ):
        digest = vocabularies.copy()
        for path in (tokens / f"{split}.parquet", manifest_path(train.features_dir, split)):
            if path.is_file():
                chunk = path.name.encode() + path.read_bytes()
                run.update(chunk)
                digest.update(chunk)
        splits[split] = digest.hexdigest()
    return InputDigests(run.hexdigest(), splits)


def run_name(config: Config, digests: InputDigests | None = None) -> str:
    """snmn-<task>-<hash of the training params (Config.fingerprint) and the input files>."""
    digests = digests or hash_inputs(config)
    return f"snmn-{config.model.task}-{digests.run[:10]}"


def dataset_name(config: Config, project_dir: str | Path) -> str:
    """The data's name, "mini-CLEVR" or "CLEVR", from the questions' info.version that
    `snmn tokenize` wrote into the training tokens; "unknown" for tokens without it."""
    split = training_splits(config)[0][1]
    path = Path(project_dir) / config.train.tokens_dir / f"{split}.parquet"
    version = tokens_metadata(path).get("dataset_version")
    if version is None:
        return "unknown"
    return "mini-CLEVR" if version.lower().startswith("mini-clevr") else "CLEVR"


def training_datasets(
    config: Config, digests: InputDigests, project_dir: str | Path
) -> list[DatasetRecord]:
    """One MLflow dataset input per split the task reads, "mini-CLEVR train" (context training)
    and "mini-CLEVR val" (validation), profiled by their questions and images."""
    name = dataset_name(config, project_dir)
    tokens = Path(project_dir, config.train.tokens_dir).resolve()
    records = []
    for key, split in training_splits(config):
        manifest = read_manifest(manifest_path(Path(project_dir, config.train.features_dir), split))
        profile = {"images": (manifest or {}).get("num_images")}
        try:
            profile["questions"] = pq.read_metadata(tokens / f"{split}.parquet").num_rows
        except (pa.ArrowException, OSError):  # the workers report it, as a DataError
            pass
        records.append(
            DatasetRecord(
                name=f"{name} {split}",
                digest=digests.splits[split][:10],
                context="training" if key.endswith("_train_split") else "validation",
                source=str(tokens),
                profile=profile,
            )
        )
    return records


def with_absolute_paths(config: Config, project_dir: str | Path) -> Config:
    """Ray workers run in another working directory: give them absolute data and output paths."""
    train = config.train
    absolute = {
        name: str((Path(project_dir) / getattr(train, name)).resolve())
        for name in ("tokens_dir", "features_dir", "output_dir", "runs_dir")
    }
    return dataclasses.replace(config, train=dataclasses.replace(train, **absolute))


def train(config: Config, project_dir: str | Path = ".") -> dict[str, Any]:
    """Train through Ray Train (local Ray or the cluster at train.ray_address); last metrics."""
    digests = hash_inputs(config)
    name = run_name(config, digests)
    config = with_absolute_paths(config, project_dir)
    check_inputs(config)
    run_folder = Path(config.train.runs_dir).resolve() / name
    tracking_uri = resolve_tracking_uri(config.train.mlflow_tracking_uri, project_dir)
    run_id_file = run_folder / RUN_ID_FILE
    if run_id_file.is_file():
        run_id = run_id_file.read_text().strip()
        print(f"[train] continuing run {name} (MLflow run {run_id})", file=sys.stderr)
    else:
        run_id = start_run(
            tracking_uri,
            config.train.mlflow_experiment,
            run_name=name,
            params=flatten(to_dict(config)),
            tags={
                **source_tags(project_dir, "snmn train"),
                "git_commit": git_commit(project_dir),
                "params_fingerprint": config.fingerprint(),
                "task": config.model.task,
                "use_layouts": str(config.train.use_layouts),
                "seed": str(config.train.seed),
            },
            datasets=training_datasets(config, digests, project_dir),
        )
        run_folder.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run_id + "\n")
        print(f"[train] run {name}, MLflow run {run_id} at {tracking_uri}", file=sys.stderr)
        page = runs_page(tracking_uri, run_id)
        if not tracking_uri.startswith(("http://", "https://")):  # a store, not a server
            page += f" once `mlflow ui --backend-store-uri {tracking_uri}` runs"
        print(f"[train] runs table: {page}", file=sys.stderr)
    tracking = {"tracking_uri": tracking_uri, "run_id": run_id}
    tracker = MlflowTracker(tracking_uri, run_id)
    try:
        metrics = distributed.fit(config, name, tracking, ray_worker_main)
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return metrics


def ray_worker_main(
    loop_config: dict[str, Any], worker: dict[str, Any], checkpoints: distributed.RayCheckpoints
) -> None:
    """What every Ray Train worker runs (distributed.fit): rebuild the Config, then train_loop."""
    config = from_dict(Config, loop_config["config"], where="ray train_loop_config")
    run_folder = Path(config.train.runs_dir).resolve() / loop_config["run_name"]
    reporter = RayReporter(checkpoints, run_folder)
    train_loop(config, WorkerContext(**worker), reporter, loop_config["tracking"])


class RayReporter:
    """The loop's Reporter on Ray Train: checkpoints go through Ray's checkpoint channel.

    Ray Train registers a reported checkpoint when its controller next polls (every ~2 s); a
    worker killed in between leaves a complete checkpoint on storage that Ray does not offer
    back. `load_latest` therefore reads the newest complete checkpoint in the run's folder
    (names are timestamps) and asks Ray only when the folder holds none (remote storage).
    """

    def __init__(self, checkpoints: distributed.RayCheckpoints, run_folder: Path) -> None:
        self.checkpoints, self.run_folder = checkpoints, run_folder

    def load_latest(self) -> ckpt.TrainingState | None:
        for directory in sorted(self.run_folder.glob("checkpoint_*"), reverse=True):
            try:
                return ckpt.load(directory)
            except (OSError, RuntimeError, EOFError, KeyError):  # absent or half-copied
                continue
        with self.checkpoints.latest() as directory:
            return None if directory is None else ckpt.load(directory)

    def report(self, metrics: dict[str, float], state: ckpt.TrainingState | None) -> None:
        """Every rank calls this at the same steps (a barrier); rank 0 passes the state."""
        if state is None:
            self.checkpoints.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="snmn-checkpoint-") as directory:
            ckpt.save(state, directory)
            self.checkpoints.report(metrics, directory)
