"""`snmn pretrain-backbone`: a ResNet conv4 backbone trained on the train scenes (DVC stage).

So that the features behind "What shape is the small green object?" see colours and shapes without
downloading ImageNet weights, the truncated ResNet that `snmn extract` runs is first trained to
name, cell by cell, the attributes of the objects in the TRAIN split's scenes (see
pipeline/vision/pretrain.py). Point extract.weights at pretrain.output_path, with the same backbone
and input size. A killed run resumes after its last finished epoch.
"""

from __future__ import annotations

import logging
import sys

import click

from stages.options import params_option


@click.command(name="pretrain-backbone")
@params_option
def command(params_path: str) -> None:
    """Train the conv4 backbone on the train scenes' objects; write its weights and metrics."""
    from pipeline.config import load_config
    from pipeline.vision.pretrain import check_extract_settings, pretrain_backbone

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_config(params_path)
    check_extract_settings(config.pretrain, config.extract)
    summary = pretrain_backbone(config.pretrain)
    shown = {name: round(value, 3) for name, value in summary.holdout_accuracy.items()}
    click.echo(f"pretrain-backbone: {summary.output_path} (held-out cell accuracy {shown})")
