"""`snmn extract`: CLEVR images → ResNet C4 features in sharded HDF5 (see pipeline/features.py).

Before training can answer "What size is the metal sphere?", every image of every split in
extract.splits is encoded once. A rerun resumes: shards listed in the manifest with a matching
checksum are kept. `snmn extract --verify` extracts nothing and checks every shard against its
manifest (exit 2 with the first mismatch).
"""

from __future__ import annotations

import logging
import sys

import click

from pipeline.config import load_config
from pipeline.features import extract_features, verify_features
from stages.options import params_option


@click.command(name="extract")
@params_option
@click.option("--verify", is_flag=True, help="Only check every shard against its manifest.")
def command(params_path: str, verify: bool) -> None:
    """Extract image features (or verify them with --verify)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_config(params_path).extract
    if verify:
        verify_features(config)
    else:
        extract_features(config)
