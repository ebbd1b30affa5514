"""HDF5 shards: atomic writes, manifests, resume decisions, verification and the lazy reader."""

import multiprocessing
import pickle

import h5py
import numpy as np
import pytest

from pipeline.data.shards import (
    FORMAT,
    FeatureStore,
    ShardSpec,
    ShardWriter,
    file_sha256,
    plan_shards,
    reusable_entries,
    verify_manifest,
    write_manifest,
)
from pipeline.errors import DataError
from pipeline.tables import atomic_path

SHAPE = (2, 3, 4)  # tiny [H, W, C]


def features_of(index):
    return np.full(SHAPE, index, dtype=np.float16) + np.arange(4, dtype=np.float16)


def write_split(folder, count, shard_size, indices=None):
    """Write a complete split of `count` images (features_of(i)), image indices 0..count-1 or
    `indices`, and its manifest."""
    images = {}
    for index in range(count) if indices is None else indices:
        path = folder / "images" / f"CLEVR_val_{index:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (index + 1))
        images[index] = path
    shards = plan_shards("val", images, shard_size)
    entries = []
    for shard in shards:
        with (
            atomic_path(folder / shard.file_name) as temporary,
            ShardWriter(temporary, shard, SHAPE, "float16", {"split": "val"}) as writer,
        ):
            writer.write(np.stack([features_of(i) for i in shard.image_indices]))
            entries.append(writer.finish(shard.inputs_sha256))
    manifest = {"format": FORMAT, "num_images": len(images), "complete": True}
    manifest |= {"feature_shape": list(SHAPE)}
    manifest |= {"dtype": "float16", "pretrained": False, "backbone": "b", "shards": entries}
    write_manifest(folder / "manifest.json", manifest)
    return shards, manifest


def image_folder(folder):
    """image index → path of the PNGs write_split wrote, as list_split_images gives them."""
    return {int(path.stem[-6:]): path for path in sorted((folder / "images").iterdir())}


def test_plan_cuts_consecutive_shards(tmp_path):
    images = {}
    for index in range(10):
        images[index] = tmp_path / f"CLEVR_val_{index:06d}.png"
        images[index].write_bytes(b"png %d" % index)
    shards = plan_shards("val", images, 4)
    assert [(s.number, s.first_index, s.count) for s in shards] == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert shards[2].file_name == "val_00002.h5"
    assert len({s.inputs_sha256 for s in shards}) == 3


def test_a_shard_is_chunked_per_image_and_renamed_when_complete(tmp_path):
    shards, manifest = write_split(tmp_path, 5, 3)
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["val_00000.h5", "val_00001.h5"]
    assert not list(tmp_path.glob(".*partial"))
    with h5py.File(tmp_path / "val_00001.h5") as handle:
        assert handle["features"].shape == (2, *SHAPE)
        assert handle["features"].chunks == (1, *SHAPE)
        assert handle["features"].compression is None
        assert list(handle["image_index"][:]) == [3, 4]
    assert manifest["shards"][1]["sha256"] == file_sha256(tmp_path / "val_00001.h5")


def test_an_interrupted_shard_leaves_nothing(tmp_path):
    shard = ShardSpec("val", 0, (0, 1), ("/x/a.png", "/x/b.png"), "digest")
    with pytest.raises(KeyboardInterrupt):
        with (
            atomic_path(tmp_path / shard.file_name) as temporary,
            ShardWriter(temporary, shard, SHAPE, "float16", {}) as writer,
        ):
            writer.write(features_of(0)[None])
            assert temporary.is_file() and not (tmp_path / shard.file_name).exists()
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=r"val_00000\.h5: wrote 1 of 2 images"):
        with (
            atomic_path(tmp_path / shard.file_name) as temporary,
            ShardWriter(temporary, shard, SHAPE, "float16", {}) as writer,
        ):
            writer.write(features_of(0)[None])
            writer.finish("digest")
    assert list(tmp_path.iterdir()) == []


def test_reuse_needs_same_settings_inputs_and_checksum(tmp_path):
    shards, manifest = write_split(tmp_path, 5, 2)
    settings = {"backbone": "b", "dtype": "float16"}
    assert set(reusable_entries(manifest, tmp_path, settings, shards)) == {0, 1, 2}
    assert reusable_entries(manifest, tmp_path, {"backbone": "other"}, shards) == {}
    assert reusable_entries(None, tmp_path, settings, shards) == {}
    with open(tmp_path / "val_00001.h5", "r+b") as handle:  # same size, one byte flipped
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    (tmp_path / "val_00002.h5").unlink()
    (tmp_path / "images" / "CLEVR_val_000000.png").write_bytes(b"changed input")
    shards = plan_shards("val", image_folder(tmp_path), 2)
    assert set(reusable_entries(manifest, tmp_path, settings, shards)) == set()
    assert set(reusable_entries(manifest, tmp_path, settings, shards[1:])) == set()
    assert len(verify_manifest(tmp_path / "manifest.json")) == 2


def test_an_image_edited_at_the_same_size_redoes_its_shard_and_fails_verify(tmp_path):
    _, manifest = write_split(tmp_path, 5, 2)
    image = tmp_path / "images" / "CLEVR_val_000002.png"
    image.write_bytes(image.read_bytes().replace(b"x", b"y"))  # edited in place, same size
    shards = plan_shards("val", image_folder(tmp_path), 2)
    settings = {"backbone": "b"}
    assert set(reusable_entries(manifest, tmp_path, settings, shards)) == {0, 2}
    assert verify_manifest(tmp_path / "manifest.json") == []  # shard files alone are intact
    assert verify_manifest(tmp_path / "manifest.json", shards) == [
        f"{tmp_path / 'val_00001.h5'}: images 2..3 changed since it was extracted "
        "(inputs sha256 differs); rerun `snmn extract`"
    ]
    write_manifest(tmp_path / "manifest.json", manifest | {"format": "snmn-features/1"})
    assert verify_manifest(tmp_path / "manifest.json", shards) == [
        f"{tmp_path / 'manifest.json'}: format 'snmn-features/1', not 'snmn-features/3': its "
        "inputs digests do not cover the images' bytes; rerun `snmn extract`"
    ]


def test_verify_names_every_problem(tmp_path):
    write_split(tmp_path, 5, 2)
    assert verify_manifest(tmp_path / "manifest.json") == []
    with open(tmp_path / "val_00000.h5", "ab") as handle:
        handle.write(b"junk")
    (tmp_path / "val_00002.h5").unlink()
    problems = verify_manifest(tmp_path / "manifest.json")
    assert any("val_00000.h5" in p and "bytes" in p for p in problems)
    assert any("val_00002.h5: missing" in p for p in problems)
    assert verify_manifest(tmp_path / "nowhere.json")[0].endswith(
        "manifest not found (run `snmn extract` first)"
    )


def test_verify_reports_an_incomplete_manifest(tmp_path):
    _, manifest = write_split(tmp_path, 5, 2)
    manifest["shards"].pop()
    manifest["complete"] = False
    write_manifest(tmp_path / "manifest.json", manifest)
    assert verify_manifest(tmp_path / "manifest.json") == [
        f"{tmp_path / 'manifest.json'}: incomplete: shards cover 4 of 5 images"
    ]


def test_store_reads_each_image_and_the_whole_split(tmp_path):
    write_split(tmp_path, 7, 3)
    store = FeatureStore(tmp_path / "manifest.json")
    assert store._readers == {}  # nothing opened until the first read
    assert len(store) == 7 and store.shape == SHAPE and store.dtype == np.float16
    for index in range(7):
        np.testing.assert_array_equal(store[index], features_of(index))
    everything = store.load_all()
    assert everything.shape == (7, *SHAPE)
    np.testing.assert_array_equal(everything, np.stack([features_of(i) for i in range(7)]))
    with pytest.raises(DataError, match="no features for image index 7"):
        store[7]
    store.close()


@pytest.mark.parametrize("threads", [1, 3, 20])
def test_a_batch_is_read_in_its_own_order_across_shards_with_repeats(tmp_path, threads):
    write_split(tmp_path, 7, 3)
    store = FeatureStore(tmp_path / "manifest.json")
    images = np.array([6, 0, 4, 3, 0, 5, 6, 1])  # three shards, unsorted, 0 and 6 twice
    batch = np.full((len(images), *SHAPE), np.nan, dtype=np.float16)
    store.read_batch(images, batch, threads)
    np.testing.assert_array_equal(batch, np.stack([features_of(i) for i in images]))
    with pytest.raises(ValueError, match="out must be"):
        store.read_batch(images, np.empty((len(images), *SHAPE), dtype=np.float32))
    with pytest.raises(DataError, match="no features for image index 7"):
        store.read_batch(np.array([1, 7]), np.empty((2, *SHAPE), dtype=np.float16))


@pytest.mark.parametrize("layout", [{"compression": "gzip"}, {"chunks": None}])
def test_a_shard_not_laid_out_one_image_per_chunk_is_refused_in_one_line(tmp_path, layout):
    _, manifest = write_split(tmp_path, 2, 2)
    shard = tmp_path / manifest["shards"][0]["file"]
    features = np.stack([features_of(0), features_of(1)])
    with h5py.File(shard, "w") as handle:
        chunks = layout.get("chunks", (1, *SHAPE))
        handle.create_dataset(
            "features", data=features, chunks=chunks, compression=layout.get("compression")
        )
    manifest["shards"][0] |= {"bytes": shard.stat().st_size, "sha256": file_sha256(shard)}
    write_manifest(tmp_path / "manifest.json", manifest)
    with pytest.raises(DataError, match="one uncompressed image per chunk") as error:
        FeatureStore(tmp_path / "manifest.json")[0]
    assert str(shard) in str(error.value) and "\n" not in str(error.value)


def _read_in_child(store, index, queue):
    batch = np.empty((2, *SHAPE), dtype=np.float16)
    store.read_batch(np.array([index, 0]), batch, threads=2)  # its own threads, not the parent's
    queue.put(batch[0].tolist())


def test_store_opens_its_own_handles_after_fork_and_pickles_without_them(tmp_path):
    write_split(tmp_path, 4, 2)
    store = FeatureStore(tmp_path / "manifest.json")
    store.read_batch(np.array([0, 1]), np.empty((2, *SHAPE), dtype=np.float16), threads=2)
    assert len(store._readers) == 1 and len(store._pools) == 1  # a file and a thread pool
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(store, 3, queue))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == features_of(3).tolist()
    clone = pickle.loads(pickle.dumps(store))
    assert clone._readers == {}
    np.testing.assert_array_equal(clone[2], features_of(2))


def test_store_refuses_an_incomplete_split(tmp_path):
    _, manifest = write_split(tmp_path, 3, 2)
    manifest["complete"] = False
    write_manifest(tmp_path / "manifest.json", manifest)
    with pytest.raises(DataError, match="features incomplete"):
        FeatureStore(tmp_path / "manifest.json")


def test_a_subset_with_gaps_maps_image_indices_to_rows(tmp_path):
    indices = [2, 5, 6, 11, 40]  # a subset of the split: gaps before, between and after
    shards, manifest = write_split(tmp_path, 0, 2, indices)
    assert [shard.image_indices for shard in shards] == [(2, 5), (6, 11), (40,)]
    assert [entry["image_indices"] for entry in manifest["shards"]] == [[2, 5], [6, 11], [40]]
    with h5py.File(tmp_path / "val_00001.h5") as handle:
        assert list(handle["image_index"][:]) == [6, 11]
    assert verify_manifest(tmp_path / "manifest.json", shards) == []
    store = FeatureStore(tmp_path / "manifest.json")
    assert len(store) == 5 and store.image_indices.tolist() == indices
    batch = np.empty((4, *SHAPE), dtype=np.float16)
    store.read_batch(np.array([40, 2, 11, 2]), batch, threads=2)
    np.testing.assert_array_equal(batch, np.stack([features_of(i) for i in (40, 2, 11, 2)]))
    np.testing.assert_array_equal(store.load_all()[3], features_of(11))  # by row
    assert store.rows_of(np.array([11, 2])).tolist() == [3, 0]
    for absent in (0, 3, 41):
        with pytest.raises(DataError) as error:
            store[absent]
        assert str(error.value) == (
            f"{tmp_path / 'manifest.json'}: no features for image index {absent} (the store "
            "holds 5 images; `image_indices` lists them)"
        )


def test_a_format_2_manifest_is_refused_in_one_line(tmp_path):
    _, manifest = write_split(tmp_path, 3, 2)
    write_manifest(tmp_path / "manifest.json", manifest | {"format": "snmn-features/2"})
    with pytest.raises(DataError) as error:
        FeatureStore(tmp_path / "manifest.json")
    assert str(error.value) == (
        f"{tmp_path / 'manifest.json'}: format 'snmn-features/2', this version reads "
        "'snmn-features/3' (shards list their image indices); rerun `snmn extract`"
    )
