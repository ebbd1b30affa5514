"""The `snmn` command: every stage is listed, importable, and bad params end in one clear line."""

import importlib

from click.testing import CliRunner

from stages.cli import STAGES, cli
from tests.conftest import error_line, run_snmn


def test_help_lists_every_stage():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in STAGES:
        assert f"  {name}" in result.output


def test_each_stage_module_defines_the_command_it_is_listed_as():
    for name, (module, _) in STAGES.items():
        command = importlib.import_module(module).command
        assert command.name == name


def test_a_typo_in_params_is_one_line_and_exit_code_2(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  seeed: 1\n")
    line = error_line(run_snmn("generate", "--params", str(params), timeout=120))
    assert line.startswith(f"error: {params}: generate.seeed: unknown key (known: ")
