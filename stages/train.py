"""`snmn train`: train SNMN with Ray Train DDP (local Ray, or a cluster with train.ray_address)."""

from __future__ import annotations

import click

from stages.options import params_option


@click.command(name="train")
@params_option
def command(params_path: str) -> None:
    """Train SNMN on the tokenised questions and features (resumes an interrupted run)."""
    from pipeline.config import load_config
    from pipeline.launch import train

    metrics = train(load_config(params_path))
    shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    click.echo(f"train: done {shown}")
