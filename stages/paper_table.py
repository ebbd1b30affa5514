"""`snmn paper-table`: the paper's six settings trained and evaluated, and the table beside it.

VQA ("How many cubes are there?"), CLEVR-Ref and joint models, each with expert layouts (one run)
and from scratch (paper_table.seeds runs), on the tokens and features the params file's data
stages wrote; a rerun after a kill skips what is finished (pipeline/evaluation/paper_table.py).
"""

from __future__ import annotations

import click

from stages.options import params_option


@click.command(name="paper-table")
@params_option
def command(params_path: str) -> None:
    """Train and evaluate the six settings (resumable); write the paper's table."""
    from pipeline.config import load_config

    recipe = load_config(params_path)  # before torch and Ray load: a bad value fails in a second
    from pipeline.evaluation.paper_table import run_paper_table

    outcome = run_paper_table(recipe)
    done = outcome["configurations"]
    trained = sum(state == "trained" for state in done.values())
    click.echo(
        f"paper-table: {trained} configurations trained, {len(done) - trained} skipped; "
        f"wrote {recipe.paper_table.table_path}"
    )
