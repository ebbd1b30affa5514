"""The one atomic writer: a complete file or the previous one, never half of one."""

import hashlib
import os

import pytest
import torch

from pipeline.tables import atomic_path, write_atomic, write_json_atomic


def test_a_complete_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics" / "pretrain.json"
    write_json_atomic({"holdout_accuracy": 0.5}, path)
    write_json_atomic({"holdout_accuracy": 0.9}, path)
    assert path.read_text() == '{\n  "holdout_accuracy": 0.9\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["pretrain.json"]


@pytest.mark.parametrize("interruption", [OSError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_write_keeps_the_previous_file_and_removes_the_temporary(
    tmp_path, interruption
):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"previous weights")

    def half_written(temporary):
        temporary.write_bytes(b"half")
        raise interruption

    with pytest.raises(type(interruption)):
        write_atomic(path, half_written)
    with pytest.raises(type(interruption)):
        with atomic_path(path) as temporary:  # the form for writers that take many calls
            half_written(temporary)
    assert path.read_bytes() == b"previous weights"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pt"]


def test_torch_files_have_the_same_bytes_whatever_process_writes_them(tmp_path, monkeypatch):
    """torch.save names its zip records after the file's stem: a process id in the temporary
    name made every training write a model.pt with other bytes (and another sha256)."""
    digests = set()
    for pid in (1234, 56789):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        path = tmp_path / "model.pt"
        write_atomic(path, lambda temporary: torch.save({"w": torch.arange(4.0)}, temporary))
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
