"""`snmn visualize`: the step-by-step HTML report, the example PNGs and the plots."""

from __future__ import annotations

import click

from stages.options import params_option


@click.command(name="visualize")
@params_option
def command(params_path: str) -> None:
    """Write the self-contained HTML report of a few right and wrong answers, and the plots."""
    from pipeline.config import load_config
    from pipeline.report.page import visualize

    written = visualize(load_config(params_path).report)
    click.echo(f"visualize: wrote {written['html']} and {len(written['plots'])} plots")
