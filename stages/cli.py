"""The `snmn` command: one sub-command per pipeline stage.

`snmn generate` writes mini-CLEVR, `snmn tokenize` turns "What color is the large cube?" into
token ids and the expert layout Find → DescribeOne, and so on. Each sub-command lives in its own
module under stages/ and is imported only when it runs, so `snmn --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from pipeline.errors import ConfigError, DataError

# sub-command name → (module under stages/ that defines `command`, one-line help for `snmn --help`)
STAGES: dict[str, tuple[str, str]] = {
    "generate": ("stages.generate", "Render mini-CLEVR: images, scenes, questions, CLEVR-Ref."),
    "tokenize": ("stages.tokenize_questions", "Questions → token ids, answers, expert layouts."),
    "pretrain-backbone": (
        "stages.pretrain_backbone",
        "Train the conv4 backbone on the train scenes.",
    ),
    "extract": ("stages.extract_features", "ResNet conv4 features into sharded HDF5."),
    "probe-features": (
        "stages.probe_features",
        "Linear probe: do the features see each attribute?",
    ),
    "train": ("stages.train", "Train SNMN with Ray Train DDP (resumes a killed run)."),
    "submit": ("stages.submit", "Send the training to a Ray cluster as a job."),
    "evaluate": ("stages.evaluate", "Accuracy per type, layouts, faithfulness, vs the paper."),
    "paper-table": (
        "stages.paper_table",
        "Train and evaluate the paper's six settings; the paper's table.",
    ),
    "visualize": ("stages.report", "Step-by-step HTML report of the reasoning, and plots."),
    "serve": ("stages.serve", "Web demo: ask SNMN about an image, watch each step."),
}


class StageGroup(click.Group):
    """A click group whose sub-commands are imported on first use (torch loads only then)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(STAGES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in STAGES:
            return None
        return importlib.import_module(STAGES[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """`snmn --help` lists the stages from STAGES, without importing them."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help) for name, (_, short_help) in STAGES.items()])


@click.group(cls=StageGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Stack Neural Module Networks on CLEVR: the stages that `dvc repro` runs."""


def main() -> None:
    """Entry point: bad params or bad data end in one clear line and exit code 2."""
    # Before torch loads: OpenMP threads that busy-wait make torch several times slower
    # whenever another process shares the cores (measured 400 ms vs 13 s per training step).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        cli(standalone_mode=False)
    except (ConfigError, DataError) as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
