"""`snmn serve`: the interactive demo, a web page and a JSON API over a trained model."""

from __future__ import annotations

import dataclasses

import click

from stages.options import params_option


@click.command(name="serve")
@params_option
@click.option(
    "--model",
    default=None,
    help="model.pt path, or an MLflow URI runs:/<run id> or models:/<name>/<version> "
    "[default: serve.model]",
)
@click.option("--split", default=None, help="Image set shown [default: serve.split].")
@click.option("--host", default=None, help="Address to listen on [default: serve.host, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default: serve.port].")
def command(
    params_path: str, model: str | None, split: str | None, host: str | None, port: int | None
) -> None:
    """Ask SNMN about an image and see every reasoning step (http://HOST:PORT/)."""
    from pipeline.config import load_config
    from pipeline.demo.app import serve
    from pipeline.tracking import resolve_tracking_uri

    config = load_config(params_path)
    given = {"model": model, "split": split, "host": host, "port": port}
    settings = dataclasses.replace(
        config.serve, **{key: value for key, value in given.items() if value is not None}
    )
    uri = settings.mlflow_tracking_uri or config.train.mlflow_tracking_uri
    serve(settings, resolve_tracking_uri(uri, "."))
