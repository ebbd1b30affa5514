"""`snmn generate` replaces only what it wrote, one writer at a time, and never an empty dataset.

The output folder is swapped whole for a fresh one, so pointing `generate.output_dir` at a
folder of one's own files must stop with one line before anything is touched: only a folder
holding the generator's `.snmn-generated` marker (or an empty or missing one) is replaced.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import yaml

from pipeline.locks import writer_lock
from pipeline.minclevr import generate as generate_module
from pipeline.minclevr.generate import MARKER_FILE
from stages import cli

TINY = {
    "num_images": {"train": 2},
    "questions_per_image": 2,
    "refexps_per_image": 0,
    "workers": 1,
    "image_width": 96,
    "image_height": 64,
    "min_visible_pixels": 10,
}


def run_generate(tmp_path: Path, output: Path, monkeypatch, capsys, **settings) -> tuple[int, str]:
    """`snmn generate` in this process: (exit code, stderr)."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"generate": {**TINY, **settings, "output_dir": str(output)}}))
    monkeypatch.setattr(sys, "argv", ["snmn", "generate", "--params", str(params)])
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    return code, capsys.readouterr().err


def contents(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every file under `folder` (hidden ones too)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_a_folder_of_someone_elses_files_is_refused_and_left_untouched(
    tmp_path, monkeypatch, capsys
):
    output = tmp_path / "thesis"
    (output / "chapters").mkdir(parents=True)
    (output / "chapters" / "one.tex").write_text("\\chapter{CLEVR}")
    (output / "notes.txt").write_text("do not lose")
    before = contents(output)

    code, error = run_generate(tmp_path, output, monkeypatch, capsys)

    assert code == 2
    assert error.count("\n") == 1 and error.startswith(f"error: {output}: ")
    assert "not written by `snmn generate`" in error and "nothing was touched" in error
    assert contents(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "thesis"]  # no lock file


def test_a_file_in_place_of_the_folder_is_refused(tmp_path, monkeypatch, capsys):
    output = tmp_path / "mini-clevr"
    output.write_text("a file, not a dataset")
    code, error = run_generate(tmp_path, output, monkeypatch, capsys)
    assert code == 2 and error.count("\n") == 1 and str(output) in error
    assert output.read_text() == "a file, not a dataset"


def test_its_own_output_and_an_empty_folder_are_replaced_with_a_fixed_marker(
    tmp_path, monkeypatch, capsys
):
    output = tmp_path / "mini-clevr"
    output.mkdir()  # empty: fine
    assert run_generate(tmp_path, output, monkeypatch, capsys)[0] == 0
    marker = json.loads((output / MARKER_FILE).read_text())
    assert marker["written_by"] == "snmn generate"
    first = contents(output)

    (output / "images" / "train" / "CLEVR_train_000099.png").write_bytes(b"stale")
    assert run_generate(tmp_path, output, monkeypatch, capsys)[0] == 0  # marked: replaced
    assert contents(output) == first  # same bytes, marker included: DVC's hash is stable


def test_a_second_generate_into_the_same_place_is_refused_while_one_runs(
    tmp_path, monkeypatch, capsys
):
    output = tmp_path / "mini-clevr"
    with writer_lock(tmp_path):  # what a running `snmn generate` into tmp_path/ holds
        code, error = run_generate(tmp_path, output, monkeypatch, capsys)
    assert code == 2 and error.count("\n") == 1
    assert f"{tmp_path}: another process" in error
    assert not output.exists()


def test_a_split_left_without_questions_is_refused_and_the_old_dataset_kept(
    tmp_path, monkeypatch, capsys
):
    output = tmp_path / "mini-clevr"
    assert run_generate(tmp_path, output, monkeypatch, capsys)[0] == 0
    before = contents(output)

    def no_questions(scene, rng, task, *args, **kwargs):
        return []  # as if every candidate question had been rejected

    monkeypatch.setattr(generate_module, "sample_candidates", no_questions)
    code, error = run_generate(tmp_path, output, monkeypatch, capsys, seed=1)

    assert code == 2 and error.count("\n") == 1
    questions = output / "questions" / "CLEVR_train_questions.json"
    assert error.startswith(f"error: {questions}: ") and "no question" in error
    assert contents(output) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".snmn")) == [
        "mini-clevr",
        "params.yaml",
    ]
