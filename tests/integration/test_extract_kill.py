"""SIGKILL an extraction mid-shard, rerun it: complete, verified, finished shards untouched.

The extraction runs as `snmn extract` in a subprocess through a small driver that only slows
each batch down (so the kill lands while the second shard is being written).
"""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from pipeline.clevr import DataError
from pipeline.config import to_dict
from pipeline.features import extract_features, verify_features
from pipeline.shards import FeatureStore, read_manifest
from tests.conftest import tiny_extract_config, write_pngs

REPO = Path(__file__).resolve().parents[2]
DRIVER = """
    import sys, time
    import pipeline.features as features
    from stages import cli

    real_call = features.Extractor.__call__

    def slow_call(self, images, where):
        time.sleep(0.4)
        return real_call(self, images, where)

    features.Extractor.__call__ = slow_call
    sys.argv = ["snmn", "extract", "--params", sys.argv[1]]
    cli.main()
"""


def test_a_killed_extraction_resumes_without_redoing_finished_shards(tmp_path):
    write_pngs(tmp_path, "train", 9, size=(72, 48))
    config = tiny_extract_config(
        tmp_path, shard_size=3, batch_size=1, decode_workers=2, calibration_images=3
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"extract": to_dict(config)}))
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    output = tmp_path / "features" / "train"
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "params.yaml")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        start_new_session=True,  # its decoding workers die with it
    )
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and process.poll() is None:
            manifest = read_manifest(output / "manifest.json") if output.is_dir() else None
            if manifest and manifest["shards"] and (output / ".train_00001.h5.partial").exists():
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    assert (output / "train_00000.h5").is_file() and not (output / "train_00001.h5").exists()
    with pytest.raises(DataError, match="incomplete"):
        verify_features(config)
    finished = (output / "train_00000.h5").stat()

    summary = extract_features(config)

    assert (summary.images, summary.reused) == (6, 3)
    again = (output / "train_00000.h5").stat()
    assert (again.st_ino, again.st_mtime_ns) == (finished.st_ino, finished.st_mtime_ns)
    assert verify_features(config) == 3
    assert sorted(p.name for p in output.iterdir()) == [
        "manifest.json",
        "train_00000.h5",
        "train_00001.h5",
        "train_00002.h5",
    ]
    for shard in sorted(output.glob("*.h5")):
        with h5py.File(shard) as handle:
            assert handle["features"].shape == (3, 4, 4, 256)
            assert np.isfinite(handle["features"][:]).all()
    clean = dataclasses.replace(config, output_dir=str(tmp_path / "clean"), decode_workers=0)
    extract_features(clean)
    resumed = FeatureStore(output / "manifest.json").load_all()
    expected = FeatureStore(tmp_path / "clean" / "train" / "manifest.json").load_all()
    np.testing.assert_array_equal(resumed, expected)
