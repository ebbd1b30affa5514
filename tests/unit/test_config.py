"""The typed Config: params.yaml builds it strictly; typos and wrong types name the key."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, flatten, from_dict, load_config, to_dict
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_yaml_builds_a_config():
    config = load_config(REPO / "params.yaml")
    assert isinstance(config, Config)
    assert config.model.num_steps > 0


def test_params_yaml_lists_every_key_of_the_config():
    """params.yaml is where values live: every Config field appears there (so DVC sees it)."""
    written = flatten(yaml.safe_load((REPO / "params.yaml").read_text()))
    expected = flatten(to_dict(Config()))
    missing = sorted(k for k in expected if k not in written and not _under_dict(k, written))
    assert missing == []


def _under_dict(key, written):
    return any(key.startswith(prefix + ".") for prefix in written)


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("generate:\n  sead: 3\n")
    with pytest.raises(ConfigError, match=r"generate\.sead: unknown key"):
        load_config(path)


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.num_steps: expected an integer, got 'nine'"):
        from_dict(Config, {"model": {"num_steps": "nine"}})
    with pytest.raises(ConfigError, match=r"model\.validity_mask: expected true/false"):
        from_dict(Config, {"model": {"validity_mask": 1}})


def test_nested_values_convert_and_ints_widen_to_float():
    config = from_dict(Config, {"model": {"dropout_keep": 1}, "tokenize": {"vqa_splits": ["val"]}})
    assert config.model.dropout_keep == 1.0 and isinstance(config.model.dropout_keep, float)
    assert config.tokenize.vqa_splits == ("val",)


def test_round_trip_through_plain_dict_keeps_fingerprint():
    config = load_config(REPO / "params.yaml")
    again = from_dict(Config, to_dict(config))
    assert again == config
    assert again.fingerprint() == config.fingerprint()
    assert from_dict(Config, {"model": {"num_steps": 3}}).fingerprint() != Config().fingerprint()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_a_sections_own_check_becomes_a_config_error():
    with pytest.raises(ConfigError, match="pointer_sharpen"):
        from_dict(Config, {"model": {"pointer_sharpen": "blunt"}})


def test_every_recipe_loads_and_names_every_key():
    expected = flatten(to_dict(Config()))
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        load_config(recipe)
        written = flatten(yaml.safe_load(recipe.read_text()))
        assert [k for k in expected if k not in written and not _under_dict(k, written)] == []


def test_the_run_and_its_checkpoints_depend_only_on_what_shapes_training(tmp_path):
    from pipeline.training.launch import run_name

    base = from_dict(
        Config, {"train": {"tokens_dir": str(tmp_path), "features_dir": str(tmp_path)}}
    )
    elsewhere = {"report": {"num_examples": 3}, "evaluate": {"batch_size": 7}, "serve": {"port": 1}}
    edited = from_dict(Config, {**to_dict(base), **elsewhere})
    assert edited.report.num_examples == 3
    assert (edited.fingerprint(), run_name(edited)) == (base.fingerprint(), run_name(base))
    for section, key, value in [("train", "learning_rate", 5e-4), ("model", "num_steps", 3)]:
        changed = from_dict(
            Config, {**to_dict(base), section: {**to_dict(base)[section], key: value}}
        )
        assert changed.fingerprint() != base.fingerprint()
        assert run_name(changed) != run_name(base)
