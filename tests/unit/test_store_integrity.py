"""A damaged feature shard stops training and evaluation with one line naming it.

`snmn extract` records each shard's size and sha256 in the manifest; FeatureStore checks both
the first time it opens a shard (once per shard and process: copies of the store pickled or
forked into DataLoader workers do not hash again), and a shard that still cannot be read as
HDF5 is named too. Before, a shard changed at the same size was read silently, and a
truncated one ended `snmn evaluate` in an h5py traceback that never named it.
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import shutil

import numpy as np
import pytest
import yaml

import pipeline.data.shards
from pipeline.data.shards import FeatureStore, file_sha256, manifest_path, write_manifest
from pipeline.errors import DataError
from tests.conftest import error_line, run_snmn, tiny_config
from tests.unit.test_shards import features_of, write_split

REPAIR = "; run `snmn extract --verify` to list every damaged shard, then `snmn extract` to rewrite"


def flip_a_byte(path, offset_from_end=4096):
    """Change one byte of the file in place: same size, other bytes (feature data at the end)."""
    with open(path, "r+b") as handle:
        handle.seek(-offset_from_end, 2)
        byte = handle.read(1)
        handle.seek(-offset_from_end, 2)
        handle.write(bytes([byte[0] ^ 0x55]))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def zero_the_header(path):
    with open(path, "r+b") as handle:
        handle.write(bytes(512))


DAMAGE = {
    "changed at the same size": flip_a_byte,
    "truncated": truncate,
    "zeroed header": zero_the_header,
}


def test_a_shard_changed_at_the_same_size_is_refused_when_first_opened(tmp_path):
    _, manifest = write_split(tmp_path, 5, 2)
    shard = tmp_path / "val_00001.h5"
    flip_a_byte(shard, offset_from_end=1)  # a feature value of image 3: h5py reads it fine
    store = FeatureStore(tmp_path / "manifest.json")
    np.testing.assert_array_equal(store[0], features_of(0))  # other shards stay readable
    with pytest.raises(DataError) as refused:
        store[3]
    expected = manifest["shards"][1]["sha256"][:12]
    assert str(refused.value) == (
        f"{shard}: sha256 {file_sha256(shard)[:12]}… differs from the manifest's {expected}…"
        f"{REPAIR} them"
    )
    with pytest.raises(DataError, match="val_00001.h5: sha256"):
        FeatureStore(tmp_path / "manifest.json").load_all()


@pytest.mark.parametrize("damage", ["truncated", "zeroed header"])
def test_a_truncated_or_zeroed_shard_is_one_line_naming_it(tmp_path, damage):
    write_split(tmp_path, 5, 2)
    shard = tmp_path / "val_00002.h5"
    DAMAGE[damage](shard)
    with pytest.raises(DataError) as refused:
        FeatureStore(tmp_path / "manifest.json").load_all()
    message = str(refused.value)
    assert message.startswith(f"{shard}: ") and message.endswith(f"{REPAIR} them")
    assert "\n" not in message


def test_an_unreadable_shard_that_matches_its_manifest_is_named(tmp_path):
    """A manifest rewritten by hand after the damage: the HDF5 error still names the shard."""
    _, manifest = write_split(tmp_path, 4, 2)
    shard = tmp_path / "val_00000.h5"
    zero_the_header(shard)
    manifest["shards"][0] |= {"bytes": shard.stat().st_size, "sha256": file_sha256(shard)}
    write_manifest(tmp_path / "manifest.json", manifest)
    with pytest.raises(DataError) as refused:
        FeatureStore(tmp_path / "manifest.json")[1]
    message = str(refused.value)
    assert message.startswith(f"{shard}: not a readable HDF5 file (") and "\n" not in message


def _read_in_child(store, hashed, queue):
    queue.put((store[3].tolist(), len(hashed)))


def test_each_shard_is_hashed_once_per_process_and_copies_do_not_hash_again(tmp_path, monkeypatch):
    write_split(tmp_path, 5, 2)  # 3 shards
    hashed = []
    real_sha256 = file_sha256
    monkeypatch.setattr(
        pipeline.data.shards, "file_sha256", lambda path: hashed.append(path) or real_sha256(path)
    )
    store = FeatureStore(tmp_path / "manifest.json")
    assert hashed == []  # nothing hashed before a shard is opened
    for _ in range(3):
        for index in range(5):
            store[index]
    store.load_all()
    assert sorted(path.name for path in hashed) == ["val_00000.h5", "val_00001.h5", "val_00002.h5"]
    FeatureStore(tmp_path / "manifest.json").check_shards()  # a new store checks them again
    assert len(hashed) == 6
    clone = pickle.loads(pickle.dumps(store))  # as sent to a spawned DataLoader worker
    np.testing.assert_array_equal(clone[4], features_of(4))
    assert len(hashed) == 6
    context = multiprocessing.get_context("fork")  # as a forked DataLoader worker
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, hashed, queue))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (features_of(3).tolist(), 6)


# ---------------------------------------------------------------------------------------------
# End to end: `snmn evaluate` and training on damaged features
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """model.pt of one training iteration on the tiny set (the features are all that matters)."""
    from pipeline.training.loop import LocalReporter, WorkerContext, train_loop

    work = tmp_path_factory.mktemp("integrity")
    config = tiny_config(tiny_data, work, iterations=1, eval_every=1, checkpoint_every=1)
    train_loop(config, WorkerContext(), LocalReporter(work / "checkpoints"), {})
    return work / "models" / "model.pt"


def damaged_copy(tiny_data, folder, damage, split):
    """The tiny set's features copied to folder/features, the split's first shard damaged."""
    features = folder / "features"
    shutil.copytree(tiny_data / "features", features)
    manifest = json.loads(manifest_path(features, split).read_text())
    shard = manifest_path(features, split).parent / manifest["shards"][0]["file"]
    DAMAGE[damage](shard)
    return features, shard


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_evaluate_on_a_damaged_shard_exits_2_with_one_line(tiny_data, trained, tmp_path, damage):
    features, shard = damaged_copy(tiny_data, tmp_path, damage, "val")
    settings = {
        "model_path": str(trained),
        "tokens_dir": str(tiny_data / "tokens"),
        "features_dir": str(features),
        "questions_dir": str(tiny_data / "mini-clevr" / "questions"),
        "scenes_dir": str(tiny_data / "mini-clevr" / "scenes"),
        "metrics_path": str(tmp_path / "evaluate.json"),
        "headline_path": str(tmp_path / "evaluate_headline.json"),
        "comparison_path": str(tmp_path / "comparison.json"),
        "comparison_markdown": str(tmp_path / "comparison.md"),
        "ref_split": "",
        "device": "cpu",
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"evaluate": settings}))
    line = error_line(run_snmn("evaluate", "--params", str(params)))
    assert line.startswith(f"error: {shard}: ") and line.endswith(f"{REPAIR} them")
    assert not (tmp_path / "evaluate.json").exists()


def test_training_on_a_changed_shard_stops_with_one_line(tiny_data, tmp_path):
    from pipeline.training.loop import LocalReporter, WorkerContext, train_loop

    features, shard = damaged_copy(tiny_data, tmp_path, "changed at the same size", "train")
    config = tiny_config(tiny_data, tmp_path, features_dir=str(features), iterations=1)
    with pytest.raises(DataError) as refused:
        train_loop(config, WorkerContext(), LocalReporter(tmp_path / "checkpoints"), {})
    message = str(refused.value)
    assert message.startswith(f"{shard}: sha256 ") and message.endswith(f"{REPAIR} them")
    assert not (tmp_path / "models" / "model.pt").exists()


def test_a_dataset_read_from_disk_checks_every_shard_before_loader_workers_start(
    tiny_data, tmp_path
):
    from pipeline.data.datasets import QuestionDataset, read_question_table

    features, shard = damaged_copy(tiny_data, tmp_path, "changed at the same size", "train")
    table = read_question_table(tiny_data / "tokens", "train", num_steps=9)
    with pytest.raises(DataError, match=rf"^{shard}: sha256 "):
        QuestionDataset(table, features)
