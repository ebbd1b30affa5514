"""`snmn generate`: write the offline mini-CLEVR dataset (DVC stage).

"How many spheres are left of the large cube?" starts here: a rendered picture, its scene
graph, and the question with its program and answer, all in the CLEVR v1.0 / CLEVR-Ref layout
under `generate.output_dir`.
"""

from __future__ import annotations

import click

from pipeline.config import load_config
from pipeline.minclevr.generate import generate
from stages.options import params_option


@click.command(name="generate")
@params_option
def command(params_path: str) -> None:
    """Render mini-CLEVR scenes and write images, scenes, questions and referring expressions."""
    generate(load_config(params_path).generate)
