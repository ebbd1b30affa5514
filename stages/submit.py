"""`snmn submit`: send the training to a Ray cluster as a job (the project is the working dir)."""

from __future__ import annotations

import sys

import click

from stages.options import params_option


@click.command(name="submit")
@params_option
@click.option(
    "--address",
    required=True,
    help="The cluster's dashboard/job address, e.g. http://head-node:8265.",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the job.")
def command(params_path: str, address: str, wait: bool) -> None:
    """Submit `snmn train --params PARAMS` to the Ray cluster at ADDRESS."""
    from pipeline.config import load_config
    from pipeline.distributed import job_logs, submit_job

    load_config(params_path)  # fail here, not on the cluster, when params are wrong
    job_id, status = submit_job(address, params_path, ".", wait=wait)
    click.echo(f"submit: job {job_id} {status}")
    if wait:
        click.echo(job_logs(address, job_id))
        if status != "SUCCEEDED":
            sys.exit(1)
