"""Values are checked when the Config is built, and params.yaml itself is read strictly.

Before, `model.embed_dim: 0` or `train.keep_checkpoints: 0` passed load_config and failed minutes
later inside a Ray worker; an empty params file meant the code defaults (200,000 iterations), a
second `train:` section silently replaced the first, and a binary file was a UnicodeDecodeError.
"""

import time

import pytest
import yaml

from pipeline.config import Config, StrictLoader, from_dict, load_config
from pipeline.errors import ConfigError
from tests.conftest import REPO, error_line, run_snmn

BAD_VALUES = [
    ("model", "embed_dim", 0),
    ("model", "lstm_dim", 0),
    ("model", "feature_dim", -1),
    ("model", "pos_enc_dim", 0),
    ("model", "num_steps", 0),
    ("model", "kb_dim", 0),
    ("model", "soft_pointer_temperature", 0.0),
    ("train", "keep_checkpoints", 0),
    ("train", "learning_rate", -1.0),
    ("train", "grad_clip", 0.0),
    ("train", "ema_decay", 1.0),
    ("train", "cpus_per_worker", 0.0),
    ("train", "weight_decay", -0.1),
    ("train", "eval_max_questions", -1),
    ("train", "max_failures", -2),
    ("train", "entropy_ramp_end", -1),
    ("generate", "questions_per_image", 0),
    ("tokenize", "max_question_tokens", 0),
    ("pretrain", "weight_decay", -1.0),
    ("evaluate", "baseline_learning_rate", 0.0),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD_VALUES)
def test_a_value_out_of_range_is_refused_naming_the_key(section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}\b"):
        from_dict(Config, {section: {key: value}})


def test_generate_refuses_a_split_of_zero_images_but_not_an_all_zero_real_clevr_run():
    with pytest.raises(ConfigError, match=r"generate\.num_images\.val: must be >= 1, got 0"):
        from_dict(Config, {"generate": {"num_images": {"train": 5, "val": 0}}})
    with pytest.raises(ConfigError, match=r"generate\.num_images: must give at least one split"):
        from_dict(Config, {"generate": {"num_images": {}}})
    # recipes/clevr-vqa.yaml reads real CLEVR and generates nothing
    config = from_dict(Config, {"generate": {"num_images": {"train": 0, "val": 0, "test": 0}}})
    assert sum(config.generate.num_images.values()) == 0


def test_the_defaults_and_the_boundaries_are_accepted():
    Config()
    from_dict(
        Config,
        {
            "model": {"vocab_size": 0, "num_answers": 0, "pos_enc_dim": 4},
            "train": {"keep_checkpoints": 1, "max_failures": -1, "ema_decay": 0.0},
        },
    )


def write(tmp_path, content: bytes | str):
    path = tmp_path / "params.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("content", ["", "\n\n", "# every value commented out\n"])
def test_an_empty_params_file_is_refused(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(ConfigError, match=rf"^{path}: empty \(no sections\)"):
        load_config(path)


def test_a_section_written_twice_is_refused_naming_both_lines(tmp_path):
    path = write(tmp_path, "train:\n  iterations: 10\nmodel:\n  num_steps: 3\ntrain:\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"key 'train' given twice \(lines 1 and 5\)"):
        load_config(path)


def test_a_nested_key_written_twice_is_refused(tmp_path):
    path = write(tmp_path, "train:\n  iterations: 10\n  batch_size: 8\n  iterations: 20\n")
    with pytest.raises(ConfigError, match=r"key 'iterations' given twice \(lines 2 and 4\)"):
        load_config(path)


def test_yaml_merge_keys_may_still_be_overridden():
    text = "base: &base {seed: 1, iterations: 5}\ntrain:\n  <<: *base\n  seed: 2\n"
    assert yaml.load(text, Loader=StrictLoader)["train"] == {"seed": 2, "iterations": 5}


def test_a_binary_params_file_is_a_config_error_naming_the_file(tmp_path):
    path = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 text \(byte 0 is 0x89\)"):
        load_config(path)


def test_malformed_yaml_is_one_line_with_the_position(tmp_path):
    path = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{path}: not valid YAML: line 2, column 1:")


@pytest.mark.parametrize(
    ("stage", "params", "message"),
    [
        ("train", "model:\n  embed_dim: 0\n", "model.embed_dim: must be >= 1, got 0"),
        ("train", "train:\n  keep_checkpoints: 0\n", "train.keep_checkpoints: must be >= 1, got 0"),
        ("generate", "generate:\n  questions_per_image: 0\n", "generate.questions_per_image"),
        ("train", "", "params.yaml: empty (no sections)"),
        ("train", "train:\n  seed: 1\ntrain:\n  seed: 2\n", "key 'train' given twice"),
    ],
)
def test_snmn_stops_on_a_bad_value_in_seconds_with_one_line(tmp_path, stage, params, message):
    path = write(tmp_path, params)
    start = time.monotonic()
    result = run_snmn(
        stage,
        "--params",
        str(path),
        cwd=tmp_path,  # nothing to find here: the check must come before any data is read
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"},
        timeout=120,
    )
    line = error_line(result)
    assert line.startswith("error: ") and message in line, line
    assert time.monotonic() - start < 30  # no torch, no Ray: the params fail in the CLI
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written
