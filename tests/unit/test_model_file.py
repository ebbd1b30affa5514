"""A model.pt that is not what `snmn train` writes: `snmn evaluate`, `snmn visualize` and `snmn
serve` end in one line naming the file and what is wrong, exit code 2, before reading any data or
opening a port."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import DataError
from pipeline.runtime.artifact import load_trained_model
from snmn.config import ModelConfig
from snmn.model import SNMN
from stages.cli import main
from tests.conftest import TINY_MODEL, error_line, run_snmn


@pytest.fixture(scope="module")
def payload() -> dict:
    """What write_training_outputs saves, for a tiny model of 10 words and 5 answers."""
    config = ModelConfig(**{**TINY_MODEL, "vocab_size": 10, "num_answers": 5})
    return {
        "model_config": dataclasses.asdict(config),
        "state_dict": SNMN(config).state_dict(),
        "question_words": ["<pad>", "<unk>", *"abcdefgh"],
        "answer_words": list("vwxyz"),
    }


def save(path: Path, payload: dict) -> Path:
    torch.save(payload, path)
    return path


def spoiled(kind: str, folder: Path, payload: dict) -> tuple[Path, str]:
    """(a broken model.pt, the words its error line must contain)."""
    path = folder / "model.pt"
    if kind == "garbage":
        path.write_bytes(b"GIF89a, not a torch file" * 40)
        return path, "truncated or not a torch file"
    if kind == "truncated":
        whole = save(path, payload).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        return path, "truncated or not a torch file"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty model file (0 bytes)"
    if kind == "wrong keys":
        return save(path, {"weights": payload["state_dict"]}), "missing keys ['model_config'"
    if kind == "wrong shape":
        state = dict(payload["state_dict"], **{"text_encoder.embedding.weight": torch.zeros(3, 3)})
        return (
            save(path, {**payload, "state_dict": state}),
            "text_encoder.embedding.weight: [3, 3] in the file, [10, 32] in the model",
        )
    if kind == "missing tensor":
        state = dict(payload["state_dict"])
        del state["text_encoder.embedding.weight"]
        return save(path, {**payload, "state_dict": state}), "1 missing (text_encoder.embedding"
    if kind == "bad model_config":
        config = {**payload["model_config"], "task": "captioning"}
        return save(path, {**payload, "model_config": config}), "model_config builds no SNMN"
    if kind == "vocabulary size":
        words = payload["question_words"][:4]
        return save(path, {**payload, "question_words": words}), "question_words has 4 words"
    raise AssertionError(kind)


def params_for(folder: Path, model: Path) -> Path:
    params = folder / "params.yaml"
    params.write_text(
        f"evaluate: {{model_path: {model}, device: cpu, tokens_dir: {folder / 'no-tokens'}}}\n"
        f"serve: {{model: {model}, features_dir: {folder / 'no-features'}}}\n"
        f"report: {{model_path: {model}, device: cpu, tokens_dir: {folder / 'no-tokens'}}}\n"
    )
    return params


def run_main(monkeypatch, capsys, *arguments: str) -> tuple[int, str]:
    """(exit code, stderr) of the `snmn` entry point, in this process."""
    monkeypatch.setattr(sys, "argv", ["snmn", *arguments])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


KINDS = [
    "garbage",
    "truncated",
    "empty",
    "wrong keys",
    "wrong shape",
    "missing tensor",
    "bad model_config",
    "vocabulary size",
]


@pytest.mark.parametrize("command", ["evaluate", "serve", "visualize"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_broken_model_file_is_one_error_line(
    tmp_path: Path, payload: dict, monkeypatch, capsys, command: str, kind: str
) -> None:
    model, expected = spoiled(kind, tmp_path, payload)
    code, stderr = run_main(
        monkeypatch, capsys, command, "--params", str(params_for(tmp_path, model))
    )
    assert code == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"error: {model}: ") and expected in stderr, stderr


def test_the_real_command_on_an_empty_file_says_so(tmp_path: Path, payload: dict) -> None:
    """Was: exit 130 and no message (torch's EOFError read by click as Ctrl-C)."""
    model, expected = spoiled("empty", tmp_path, payload)
    result = run_snmn(
        "serve",
        "--params",
        str(params_for(tmp_path, model)),
        timeout=120,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert error_line(result) == f"error: {model}: {expected}; run `snmn train` again"


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    model = save(tmp_path / "model.pt", {"model_config": Payload()})
    with pytest.raises(DataError, match="refused: it holds Python objects"):
        load_trained_model(model)
    assert not (tmp_path / "ran").exists()


def test_a_good_model_file_loads(tmp_path: Path, payload: dict) -> None:
    model, loaded = load_trained_model(save(tmp_path / "model.pt", payload))
    assert not model.training and loaded["answer_words"] == list("vwxyz")
