"""`snmn extract`: CLEVR images → ResNet C4 features in sharded HDF5 (pipeline/vision/features.py).

Before training can answer "What size is the metal sphere?", every image of every split in
extract.splits is encoded once. A rerun resumes: shards listed in the manifest with a matching
checksum, whose images still have the bytes they were extracted from, are kept. A second
`snmn extract` into the same output_dir while one runs exits 2 at once (writer lock).
`snmn extract --verify` extracts nothing and checks every shard against its manifest and its
images (exit 2 with the first mismatch).
"""

from __future__ import annotations

import logging
import sys

import click

from pipeline.config import load_config
from pipeline.vision.features import extract_features, verify_features
from stages.options import params_option


@click.command(name="extract")
@params_option
@click.option("--verify", is_flag=True, help="Only check shards against manifests and images.")
def command(params_path: str, verify: bool) -> None:
    """Extract image features (or verify them with --verify)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = load_config(params_path).extract
    if verify:
        verify_features(config)
    else:
        extract_features(config)
