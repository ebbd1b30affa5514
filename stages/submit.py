"""`snmn submit`: send the training to a Ray cluster as a job (the project is the working dir).

Everything that can be checked from here is checked before anything is sent: the params, the
tokens and features the training will read (as `snmn train` checks them; skip with
--no-check-inputs when this machine does not see the cluster's storage), and whether a job
server answers at --address. Each failure is one `error:` line and exit code 2.
"""

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
@click.option(
    "--check-inputs/--no-check-inputs",
    default=True,
    show_default=True,
    help="Check the tokens and features named in params here before submitting.",
)
def command(params_path: str, address: str, wait: bool, check_inputs: bool) -> None:
    """Submit `snmn train --params PARAMS` to the Ray cluster at ADDRESS."""
    from pipeline.config import load_config
    from pipeline.distributed import job_logs, submit_job
    from pipeline.training import launch

    config = load_config(params_path)  # fail here, not on the cluster, when params are wrong
    if check_inputs:
        launch.check_inputs(launch.with_absolute_paths(config, "."))
    job_id, status = submit_job(address, params_path, ".", wait=wait)
    click.echo(f"submit: job {job_id} {status}")
    if wait:
        click.echo(job_logs(address, job_id))
        if status != "SUCCEEDED":
            sys.exit(1)
