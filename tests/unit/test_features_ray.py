"""Shards fanned out over two Ray actors give the same features as one process (real Ray)."""

import dataclasses

import numpy as np
import pytest

from pipeline.data.shards import FeatureStore, read_manifest
from pipeline.vision.features import extract_features, verify_features
from tests.conftest import tiny_extract_config, write_pngs

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_ray_workers_write_the_same_shards_as_one_process(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    write_pngs(tmp_path, "val", 5, size=(40, 40), seed=1)
    config = tiny_extract_config(
        tmp_path,
        output_dir=str(tmp_path / "ray"),
        splits=("val",),
        num_workers=2,
        device="cpu",
        calibration_images=2,
    )

    summary = extract_features(config)

    assert (summary.images, summary.reused) == (5, 0)
    assert verify_features(config) == 3
    manifest = read_manifest(tmp_path / "ray" / "val" / "manifest.json")
    assert [shard["number"] for shard in manifest["shards"]] == [0, 1, 2]
    local = dataclasses.replace(config, output_dir=str(tmp_path / "local"), num_workers=1)
    extract_features(local)
    spread = FeatureStore(tmp_path / "ray" / "val" / "manifest.json").load_all()
    single = FeatureStore(tmp_path / "local" / "val" / "manifest.json").load_all()
    scale = np.abs(single).max()  # thread counts differ between the actors and this process
    np.testing.assert_allclose(spread, single, rtol=1e-2, atol=1e-2 * scale)
