"""`snmn train`: train SNMN with Ray Train DDP (local Ray, or a cluster with train.ray_address).

Bad params and missing or mismatched inputs stop it with one `error:` line before Ray starts: the
Config checks its values when built, then `pipeline.training.launch.check_inputs` looks at the
tokens and feature manifests. An error a worker still raises (ConfigError, DataError) is not
retried.
"""

from __future__ import annotations

import click

from stages.options import params_option


@click.command(name="train")
@params_option
def command(params_path: str) -> None:
    """Train SNMN on the tokenised questions and features (resumes an interrupted run)."""
    from pipeline.config import load_config

    config = load_config(params_path)  # before torch and Ray load: a bad value fails in a second
    from pipeline.training.launch import train

    metrics = train(config)
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"train: done {shown}")
