"""Options shared by every stage command."""

from __future__ import annotations

import click

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The params.yaml to build the Config from.",
)
