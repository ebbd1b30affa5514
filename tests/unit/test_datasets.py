"""Batches: their features from either storage, and the samplers (disjoint rank shares, a fresh
order every epoch, a curriculum, exact resume)."""

import itertools

import h5py
import numpy as np
import pytest
import torch

import pipeline.data.datasets
from pipeline.config import TrainConfig
from pipeline.data.datasets import (
    CurriculumBatchSampler,
    EpochBatchSampler,
    QuestionDataset,
    evaluation_rows,
    layout_sizes,
    read_question_table,
)
from pipeline.data.shards import manifest_path
from pipeline.errors import ConfigError, DataError
from pipeline.runtime.inference import to_device


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_ranks_get_disjoint_shares_that_cover_a_global_batch():
    ranks = [EpochBatchSampler(20, 4, rank, 2, seed=1, start_step=0) for rank in range(2)]
    first = [take(sampler, 1)[0] for sampler in ranks]
    assert len(first[0]) == len(first[1]) == 4
    assert not set(first[0]) & set(first[1])


def test_every_epoch_is_a_new_permutation_without_repeats():
    sampler = EpochBatchSampler(12, 4, 0, 1, seed=0, start_step=0)
    assert len(sampler) == 3
    epochs = take(sampler, 6)
    first, second = sum(epochs[:3], []), sum(epochs[3:], [])
    assert sorted(first) == sorted(second) == list(range(12))
    assert first != second


def test_resuming_at_a_step_yields_the_same_batches():
    full = take(EpochBatchSampler(30, 4, 1, 2, seed=5, start_step=0), 10)
    resumed = take(EpochBatchSampler(30, 4, 1, 2, seed=5, start_step=4), 6)
    assert resumed == full[4:]


def test_too_few_questions_for_a_batch_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one global batch"):
        EpochBatchSampler(5, 4, 0, 2, seed=0, start_step=0)


def test_evaluation_rows_split_without_padding_or_overlap():
    shares = [evaluation_rows(np.arange(7), rank, 3) for rank in range(3)]
    assert sorted(sum(shares, [])) == list(range(7))
    assert evaluation_rows(np.arange(7), 0, 1, limit=3) == [0, 1, 2]
    assert evaluation_rows(np.array([1, 4, 5, 9]), 1, 2) == [4, 9]  # rows with features only


def test_layout_sizes_count_modules_other_than_noop():
    layouts = np.array([[1, 7, 0, 0], [1, 1, 8, 0], [-1, -1, -1, -1]])  # NoOp is 0
    assert layout_sizes(layouts).tolist() == [2, 3, -1]


def test_curriculum_goes_stage_by_stage_then_all_and_resumes_exactly():
    shortest = np.array([3, 5, 8, 13, 21, 34])
    short = np.concatenate([shortest, np.arange(20, 30)])
    sampler = CurriculumBatchSampler(40, [shortest, short], [4, 3], 2, 0, 1, 3, start_step=0)
    batches = take(sampler, 30)
    assert all(set(batch) <= set(shortest.tolist()) for batch in batches[:4])
    assert all(set(batch) <= set(short.tolist()) for batch in batches[4:7])
    assert set(sum(batches[4:7], [])) - set(shortest.tolist())  # the second stage adds rows
    assert set(sum(batches[7:], [])) == set(range(40))  # then every question
    for start in (2, 4, 6, 7, 9):
        resumed = CurriculumBatchSampler(40, [shortest, short], [4, 3], 2, 0, 1, 3, start)
        assert take(resumed, 30 - start) == batches[start:]


def test_tokens_of_an_older_tokenize_are_refused_not_misread(tiny_data, tmp_path):
    """The box geometry (grid, image (height, width)) is read from the tokens' metadata; tokens
    written before image_size became (height, width) would put every box in the wrong cell."""
    import json

    import pyarrow.parquet as pq

    from pipeline.data.datasets import read_question_table

    table = pq.read_table(tiny_data / "tokens" / "loc_val.parquet")
    written = json.loads(table.schema.metadata[b"snmn"])
    grid = read_question_table(tiny_data / "tokens", "loc_val", written["num_steps"]).box_grid
    assert (grid.image_height, grid.image_width) == tuple(written["image_size"])
    old = {key: value for key, value in written.items() if key != "format"}
    old["image_size"] = old["image_size"][::-1]  # (width, height), as it used to be
    metadata = {**table.schema.metadata, b"snmn": json.dumps(old).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), tmp_path / "loc_val.parquet")
    with pytest.raises(DataError, match=r"loc_val.parquet: written by another `snmn tokenize`"):
        read_question_table(tmp_path, "loc_val", written["num_steps"])


def features_by_h5py(features_dir, split):
    """[N, H, W, C] of a split, read with h5py from its shards (not through FeatureStore)."""
    manifest = manifest_path(features_dir, split)
    parts = []
    for shard in sorted(manifest.parent.glob(f"{split}_*.h5")):
        with h5py.File(shard, "r") as handle:
            parts.append(handle["features"][:])
    return np.concatenate(parts)


@pytest.mark.parametrize("storage", ["page_cache", "device"])
def test_a_batch_holds_its_images_features_from_either_storage(tiny_data, storage):
    table = read_question_table(tiny_data / "tokens", "train", num_steps=9)
    dataset = QuestionDataset(table, tiny_data / "features", storage)
    rows = [5, 0, 77, 5, 31, 150]  # unsorted, one question twice
    batch = dataset.__getitems__(rows)
    expected = features_by_h5py(tiny_data / "features", "train")[table.image_index[rows]]
    assert batch["features"].dtype == torch.float16  # the store's dtype until to_device
    np.testing.assert_array_equal(batch["features"].numpy(), expected)
    assert batch["rows"].tolist() == rows
    on_device = to_device(batch, torch.device("cpu"))
    assert on_device["features"].dtype == torch.float32
    np.testing.assert_array_equal(on_device["features"].numpy(), expected.astype(np.float32))


def test_a_split_that_does_not_fit_on_the_device_is_refused_in_one_line(tiny_data, monkeypatch):
    table = read_question_table(tiny_data / "tokens", "train", num_steps=9)
    monkeypatch.setattr(pipeline.data.datasets, "free_memory_bytes", lambda device: 100_000)
    with pytest.raises(ConfigError) as refused:
        QuestionDataset(table, tiny_data / "features", "device")
    message = str(refused.value)
    assert message.startswith("features_storage device: the 40 images of ")
    assert "GB but cpu has 0.0 GB free; use features_storage page_cache" in message
    QuestionDataset(table, tiny_data / "features", "page_cache")  # reads from the page cache


def test_device_storage_with_loader_processes_is_refused():
    with pytest.raises(ConfigError, match="set train.loader_workers 0"):
        TrainConfig(features_storage="device", loader_workers=2)
