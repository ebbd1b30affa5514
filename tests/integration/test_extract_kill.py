"""SIGKILL an extraction mid-shard, rerun it: complete, verified, finished shards untouched.
Start a second extraction into the same folder while one runs: refused in one line, and the
first one finishes undisturbed.

The extraction runs as `snmn extract` in a subprocess through a small driver that only slows
each batch down (so the kill, or the second run, lands while the second shard is being written).
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

from pipeline.config import to_dict
from pipeline.data.shards import FeatureStore, read_manifest
from pipeline.errors import DataError
from pipeline.locks import writer_lock
from pipeline.vision.features import extract_features, verify_features
from tests.conftest import tiny_extract_config, write_pngs

REPO = Path(__file__).resolve().parents[2]
DRIVER = """
    import sys, time
    import pipeline.vision.features as features
    from stages import cli

    real_call = features.Extractor.__call__

    def slow_call(self, images, where):
        time.sleep(0.4)
        return real_call(self, images, where)

    features.Extractor.__call__ = slow_call
    sys.argv = ["snmn", "extract", "--params", sys.argv[1]]
    cli.main()
"""


def start_slow_extraction(tmp_path):
    """(config, `snmn extract` running in a subprocess), once it is writing the second shard."""
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
    while time.monotonic() < deadline and process.poll() is None:
        manifest = read_manifest(output / "manifest.json") if output.is_dir() else None
        if manifest and manifest["shards"] and (output / ".train_00001.h5.partial").exists():
            return config, process
        time.sleep(0.05)
    stop(process)
    raise AssertionError(process.stderr.read().decode()[-2000:])


def stop(process):
    """SIGKILL the extraction and its decoding workers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_writer_lock(folder, seconds=30):
    """The killed run's decoding workers share its lock (forked with it) until they are gone."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with writer_lock(folder):
                return
        except DataError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_killed_extraction_resumes_without_redoing_finished_shards(tmp_path):
    config, process = start_slow_extraction(tmp_path)
    stop(process)
    assert process.returncode == -signal.SIGKILL
    output = tmp_path / "features" / "train"
    wait_for_writer_lock(tmp_path / "features")

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


def test_a_second_extraction_into_the_same_folder_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys
):
    from stages import cli

    config, process = start_slow_extraction(tmp_path)
    try:
        before = read_manifest(tmp_path / "features" / "train" / "manifest.json")
        monkeypatch.setattr(
            sys, "argv", ["snmn", "extract", "--params", str(tmp_path / "params.yaml")]
        )
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {tmp_path / 'features'}: another process (pid {process.pid}) is writing "
            "this folder; wait for it to finish, or stop it, and run again"
        ]
        after = read_manifest(tmp_path / "features" / "train" / "manifest.json")
        assert after["shards"][: len(before["shards"])] == before["shards"]
        assert process.wait(timeout=90) == 0, process.stderr.read().decode()[-2000:]
    finally:
        stop(process)
    assert verify_features(config) == 3
