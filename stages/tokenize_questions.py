"""`snmn tokenize`: questions files → {split}.parquet, vocabularies and a summary (DVC stage).

"What color is the large cube?" leaves this stage as token ids, the answer id of its answer and
the expert layout Find, DescribeOne, NoOp, ... padded to the model's T steps.
"""

from __future__ import annotations

import click

from pipeline.config import load_config
from pipeline.data.tokenization import tokenize
from stages.options import params_option


@click.command(name="tokenize")
@params_option
def command(params_path: str) -> None:
    """Tokenise questions, build vocabularies, expert layouts and CLEVR-Ref box targets."""
    config = load_config(params_path)
    model = config.model
    tokenize(
        config.tokenize,
        num_steps=model.num_steps,
        grid=(model.feature_height, model.feature_width),
    )
