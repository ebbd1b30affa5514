"""`snmn probe-features`: do these features see colour, shape, material and size?

Before training SNMN for hours on "Is the metal cylinder the same size as the red cube?", fit a
linear probe per attribute on the feature cell under each object's centre (pipeline/vision/probe.py,
cross-validated over folds of images) and compare it with the majority class. Works for any
features manifest plus the scenes of the same split, e.g. `snmn probe-features --manifest
data/features/val/manifest.json --scenes data/mini-clevr/scenes/CLEVR_val_scenes.json`. Scenes
whose image has no features (a subset of the split was extracted) are skipped; the count is
printed and written to the JSON as `skipped_scenes`.
"""

from __future__ import annotations

from dataclasses import asdict

import click


@click.command(name="probe-features")
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="A split's features manifest.json (written by `snmn extract`).",
)
@click.option(
    "--scenes",
    "scenes_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The scenes JSON of the same split.",
)
@click.option("--image-height", default=320, show_default=True, help="Original image height.")
@click.option("--image-width", default=480, show_default=True, help="Original image width.")
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds of images.")
@click.option("--seed", default=0, show_default=True, help="Seed of the folds.")
@click.option(
    "--output",
    "output_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the table as JSON.",
)
@click.option(
    "--headline",
    "headline_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write each attribute's accuracy as probe_<attribute> (the DVC metrics).",
)
def command(
    manifest_path: str,
    scenes_path: str,
    image_height: int,
    image_width: int,
    folds: int,
    seed: int,
    output_path: str | None,
    headline_path: str | None,
) -> None:
    """Linear probe per attribute on the cell under each object's centre."""
    from pipeline.errors import ConfigError
    from pipeline.tables import write_json_atomic
    from pipeline.vision.probe import format_table, object_cells, probe

    if folds < 2:
        raise ConfigError(f"--folds: must be >= 2, got {folds}")
    cells = object_cells(manifest_path, scenes_path, (image_height, image_width))
    rows = probe(cells, folds, seed)
    click.echo(format_table(rows, title=f"linear probe: {manifest_path}"))
    if cells.skipped_scenes:
        click.echo(f"skipped {cells.skipped_scenes} scenes: their images have no features")
    if output_path:
        table = {row.attribute: asdict(row) for row in rows}
        found = {"manifest": manifest_path, "skipped_scenes": cells.skipped_scenes, "probe": table}
        write_json_atomic(found, output_path)
    if headline_path:
        write_json_atomic({f"probe_{row.attribute}": row.accuracy for row in rows}, headline_path)
